"""Faces that keep an identity across video frames, and probabilities that do not flicker.

    tracker = IouTracker(max_missed=10)
    ids = tracker.update([(10, 10, 50, 50), (200, 20, 48, 48)])   # [1, 2]
    ids = tracker.update([(204, 22, 48, 48), (12, 11, 50, 50)])   # [2, 1]: each face keeps its id
    smoother = ExpressionSmoother(seconds=0.5)
    smoother.update(track=1, time=0.04, probabilities=p)           # the track's running average

Matching is an optimal assignment on 1 - IoU between the boxes of a frame and the last box of
every live track (scipy's `linear_sum_assignment`, the Hungarian method), keeping pairs that
overlap by at least `min_iou`. Sparse sampling (`--fps 1`) lets a face move past its old box, so
a pair that does not overlap enough may still match when the centres are less than one face
width apart, at a cost above any overlapping pair; a face left over starts a new track. A track
survives `max_missed` sampled frames without a face (a blink of the detector, a hand across the
face) before its id is retired; ids are never reused, so a row's track names one person for the
whole video as long as the detector keeps finding them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Box = Sequence[float]  # x, y, w, h


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """Intersection over union of every box of `a` with every box of `b` (len(a) x len(b))."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    first, second = np.asarray(a, float)[:, None, :], np.asarray(b, float)[None, :, :]
    left = np.maximum(first[..., 0], second[..., 0])
    top = np.maximum(first[..., 1], second[..., 1])
    right = np.minimum(first[..., 0] + first[..., 2], second[..., 0] + second[..., 2])
    bottom = np.minimum(first[..., 1] + first[..., 3], second[..., 1] + second[..., 3])
    overlap = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = first[..., 2] * first[..., 3] + second[..., 2] * second[..., 3] - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-9), 0.0)


_NO_MATCH = 1e6


def match_cost(tracks: Sequence[Box], boxes: Sequence[Box], min_iou: float) -> np.ndarray:
    """1 - IoU where boxes overlap by `min_iou`; else 1 + the centres' distance in face widths
    where under one width; else `_NO_MATCH`."""
    overlap = iou_matrix(tracks, boxes)
    if not overlap.size:
        return overlap
    first, second = np.asarray(tracks, float)[:, None, :], np.asarray(boxes, float)[None, :, :]
    centre = (first[..., :2] + first[..., 2:] / 2) - (second[..., :2] + second[..., 2:] / 2)
    width = np.maximum((first[..., 2] + second[..., 2]) / 2, 1.0)
    shift = np.hypot(centre[..., 0], centre[..., 1]) / width
    near = np.where(shift < 1.0, 1.0 + shift, _NO_MATCH)
    return np.where(overlap >= min_iou, 1.0 - overlap, near)


@dataclass
class _Track:
    box: Box
    missed: int = 0


class IouTracker:
    """Gives each face box of a frame a track id, stable while the face moves less than its size
    between sampled frames."""

    def __init__(self, max_missed: int = 10, min_iou: float = 0.3):
        self.max_missed, self.min_iou = max_missed, min_iou
        self.live: dict[int, _Track] = {}
        self.next_id = 1

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The track id of each box, in the order given; ids of tracks not seen age by a frame."""
        from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

        ids = list(self.live)
        cost = match_cost([self.live[i].box for i in ids], boxes, self.min_iou)
        assigned: list[int | None] = [None] * len(boxes)
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            for row, col in zip(rows, cols):
                if cost[row, col] < _NO_MATCH:
                    assigned[col] = ids[row]
        for gone in set(ids) - set(assigned):
            self.live[gone].missed += 1
            if self.live[gone].missed > self.max_missed:
                del self.live[gone]
        result = []
        for box, match in zip(boxes, assigned):
            track = match if match is not None else self.next_id
            self.next_id += match is None
            self.live[track] = _Track(box)
            result.append(track)
        return result


class ExpressionSmoother:
    """An exponential moving average of each track's probabilities over time.

    The weight of a frame decays with its age in seconds, not in frames, so the smoothing is the
    same at 25 or 5 sampled frames per second and across a variable frame rate: after `seconds`,
    a frame weighs e^-1 of a new one. A track that reappears after a gap longer than three time
    constants starts afresh.
    """

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds
        self.state: dict[int, tuple[float, np.ndarray]] = {}

    def update(self, track: int, time: float, probabilities: np.ndarray) -> np.ndarray:
        previous = self.state.get(track)
        if previous is None or self.seconds <= 0 or time - previous[0] > 3 * self.seconds:
            mean = np.asarray(probabilities, float)
        else:
            keep = math.exp(-max(time - previous[0], 0.0) / self.seconds)
            mean = keep * previous[1] + (1 - keep) * probabilities
        self.state[track] = (time, mean)
        return mean
