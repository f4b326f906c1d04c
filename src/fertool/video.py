"""Expressions in a video: decode frames one at a time, find and track the faces, classify them
in batches, and yield one row per face per sampled frame as the video plays.

    from fertool.bundled import resolve_model
    model, meta, _ = resolve_model(None)
    for row in predict_video("clip.mp4", model, meta["classes"], VideoConfig(fps=5)):
        print(row.frame, row.time, row.track, row.label)       # row.to_dict() for JSON

Frames are streamed, never all decoded at once: memory is the same for a minute or an hour. The
faces of up to `buffer_frames` sampled frames go through the model in one forward pass, then
their rows come out in order, so a consumer sees rows a fraction of a second behind the video.
A sampled frame without a face gives one row with no track, so "nobody on screen" is visible.
Decoding is video_decode.py's (PyAV; it says why).
"""

from __future__ import annotations

import time as clock
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fertool.detect import DetectConfig
from fertool.errors import BadInputError
from fertool.video_decode import (  # noqa: F401  (re-exported: the video API in one place)
    VIDEO_EXTENSIONS,
    VideoStats,
    camera_index,
    decoded_frames,
    is_video,
    open_container,
    source_name,
)


@dataclass
class VideoConfig:
    """How `predict` reads a video; the command's options map onto these fields."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    every: int = 1  # classify every Nth frame of the range
    fps: float | None = None  # or sample this many frames per second of video time (not both)
    start: float = 0.0  # seconds of the video's own clock
    end: float | None = None
    # Faces are searched on frames reduced to this longer side (YuNet finds faces from ~10 px
    # there: ~16 px in a 640 px frame). On the demo clip's 640x480 frames Haar took 48 ms of CPU
    # a frame on the whole frame, 25 at 400 px with the same faces found, 17 at 320 px but
    # missing 33 of 80; YuNet takes ~10 ms at 400 px (docs/experiments/2026-12-07-video.md).
    # Crops are cut from the reduced frame too.
    detect_side: int = 400
    whole_frames: bool = False  # classify each frame's centred square instead of finding faces
    smooth: bool = False  # add each track's exponential moving average of its probabilities
    smooth_seconds: float = 0.5  # the average's time constant
    max_missed: int = 10  # sampled frames a track survives without its face
    min_iou: float = 0.3  # overlap a face needs with a track's last box to continue it
    buffer_frames: int = 16  # sampled frames whose faces share one forward pass
    batch_size: int = 256
    # One view, not the bundled model's six: a video already shows the model the same face many
    # times, and the smoothing averages them; each view costs a forward pass.
    tta: str = "none"

    def __post_init__(self) -> None:
        """Python callers pass plain values: refuse the ones the command line would refuse."""
        if self.every < 1:
            raise BadInputError(f"every {self.every}: give 1 or more (every Nth frame)")
        if self.fps is not None and self.fps <= 0:
            raise BadInputError(f"fps {self.fps}: give a positive number of frames a second")
        if self.fps is not None and self.every > 1:
            raise BadInputError("every and fps: give one of them")
        if self.start < 0 or self.end is not None and self.end < 0:
            raise BadInputError("start and end: give seconds, 0 or more")


@dataclass
class VideoRow:
    """A face in a sampled frame, or (track None) a sampled frame without a face."""

    video: str
    frame: int  # index among the video's decoded frames, from 0
    time: float  # seconds, from the stream's timestamps (its first frame at 0)
    track: int | None = None
    box: list[int] | None = None  # x, y, w, h in the frame's own pixels
    score: float | None = None  # the detector's confidence
    label: str | None = None  # argmax of `smoothed` when smoothing, else of `probabilities`
    probabilities: dict[str, float] | None = None  # the model's own, unsmoothed
    smoothed: dict[str, float] | None = None
    # The finder's five points in the frame's own pixels (photos.LANDMARKS names them); None
    # for haar and --no-detect.
    landmarks: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines record: `type` is "face" or "no_face" (summaries are "summary")."""
        row: dict[str, Any] = {"type": "face" if self.track is not None else "no_face"}
        row.update(video=self.video, frame=self.frame, time=round(self.time, 6))
        if self.track is not None:
            row.update(track=self.track, box=self.box, score=self.score, label=self.label)
            row["landmarks"] = self.landmarks
            row["probabilities"] = self.probabilities
            if self.smoothed is not None:
                row["smoothed"] = self.smoothed
        return row


@dataclass
class FrameResult:
    """One decoded frame of the range: its rows when sampled, its pixels when asked for."""

    index: int
    time: float
    sampled: bool
    rows: list[VideoRow] = field(default_factory=list)
    pixels: np.ndarray | None = None  # uint8 H x W x 3 RGB, with `keep_pixels`


def frame_results(
    source: str | Path | int,
    model: Any,
    classes: list[str],
    config: VideoConfig = VideoConfig(),
    keep_pixels: bool = False,
    stats: VideoStats | None = None,
) -> Iterator[FrameResult]:
    """Every decoded frame of [start, end), in order, its rows filled in when sampled.

    Frames are detected as they are decoded; their faces are classified a buffer at a time.
    Where the video breaks half way, the frames before are yielded, then BadInputError raised.
    `keep_pixels` keeps each frame's RGB pixels on its result (for drawing an annotated copy);
    frames are then buffered too, `buffer_frames` of them at most.
    """
    from fertool.tracks import ExpressionSmoother, IouTracker

    stats = VideoStats() if stats is None else stats
    name = source_name(source)
    container = open_container(source)
    tracker = IouTracker(config.max_missed, config.min_iou)
    smoother = ExpressionSmoother(config.smooth_seconds) if config.smooth else None
    pending: list[
        tuple[FrameResult, list[tuple[int, list[int], dict[str, Any]]], np.ndarray | None]
    ] = []
    in_range, next_due = 0, config.start
    try:
        try:
            for index, seconds, frame in decoded_frames(container, name, stats):
                if seconds < config.start - 1e-6:
                    continue
                if config.end is not None and seconds >= config.end - 1e-6:
                    break
                if config.fps is not None:
                    sampled = seconds >= next_due - 1e-6
                    while next_due <= seconds + 1e-6:
                        next_due += 1 / config.fps
                else:
                    sampled = in_range % config.every == 0
                in_range += 1
                if not (sampled or keep_pixels):
                    skipped = FrameResult(index, seconds, False)
                    if pending:  # behind sampled frames still waiting for the model: in order
                        pending.append((skipped, [], None))
                    else:
                        yield skipped
                    continue
                started = clock.perf_counter()
                pixels = frame.to_ndarray(format="rgb24")
                stats.seconds["decode"] += clock.perf_counter() - started
                result = FrameResult(
                    index, seconds, sampled, pixels=pixels if keep_pixels else None
                )
                faces, crops = (
                    _detect(pixels, name, config, tracker, stats) if sampled else ([], None)
                )
                pending.append((result, faces, crops))
                if len(pending) >= config.buffer_frames:
                    yield from _classified(pending, model, classes, config, smoother, name, stats)
                    pending = []
        except BadInputError:
            yield from _classified(pending, model, classes, config, smoother, name, stats)
            pending = []
            raise
        yield from _classified(pending, model, classes, config, smoother, name, stats)
    finally:
        container.close()


def _detect(
    pixels: np.ndarray, name: str, config: VideoConfig, tracker: Any, stats: VideoStats
) -> tuple[list[tuple[int, list[int], dict[str, Any]]], np.ndarray]:
    """(track, box in frame pixels, score and landmarks) of each face, and their 48x48 crops."""
    from fertool.detect import photo_faces, photo_from_pixels
    from fertool.photos import detector_fields

    started = clock.perf_counter()
    photo = photo_from_pixels(pixels, name, min(config.detect_side, config.detect.max_side))
    found, crops = photo_faces(photo, config.detect, detect=not config.whole_frames)
    boxes = [photo.to_original(face.box) for face in found]
    tracks = tracker.update(boxes)
    stats.seconds["detect"] += clock.perf_counter() - started
    stats.sampled += 1
    fields = [detector_fields(photo, face) for face in found]
    return list(zip(tracks, boxes, fields)), crops


def _classified(
    pending: list[Any],
    model: Any,
    classes: list[str],
    config: VideoConfig,
    smoother: Any,
    name: str,
    stats: VideoStats,
) -> Iterator[FrameResult]:
    """The buffered frames with their rows, after one forward pass over all their faces."""
    from fertool.detect import classify_faces

    crops = [c for _, _, c in pending if c is not None and len(c)]
    started = clock.perf_counter()
    probs = (
        classify_faces(model, np.concatenate(crops), config.batch_size, tta=config.tta)
        if crops
        else np.zeros((0, len(classes)))
    )
    stats.seconds["classify"] += clock.perf_counter() - started
    at = 0
    for result, faces, _ in pending:
        if result.sampled and not faces:
            result.rows.append(VideoRow(name, result.index, result.time))
        for track, box, fields in faces:
            p = probs[at]
            at += 1
            smooth = smoother.update(track, result.time, p) if smoother is not None else None
            shown = smooth if smooth is not None else p
            result.rows.append(
                VideoRow(
                    name,
                    result.index,
                    result.time,
                    track,
                    box,
                    fields["score"],
                    classes[int(np.argmax(shown))],
                    _named(classes, p),
                    _named(classes, smooth) if smooth is not None else None,
                    fields["landmarks"],
                )
            )
        yield result


def csv_header(classes: list[str], smooth: bool) -> list[str]:
    """The CSV columns of video rows: the smoothed probabilities follow the raw ones."""
    smoothed = [f"smoothed_{name}" for name in classes] if smooth else []
    return ["path", "frame", "time", "track", "x", "y", "w", "h", "score", "label"] + [
        *classes,
        *smoothed,
    ]


def csv_fields(row: VideoRow, classes: list[str], smooth: bool) -> list[Any]:
    """A row as CSV fields; a frame without a face leaves all but path, frame and time empty."""
    head: list[Any] = [row.video, row.frame, f"{row.time:.6f}"]
    width = 7 + len(classes) * (2 if smooth else 1)
    if row.track is None or row.box is None or row.probabilities is None:
        return head + [""] * width
    probs = [f"{row.probabilities[c]:.6f}" for c in classes]
    smoothed = [f"{row.smoothed[c]:.6f}" for c in classes] if smooth and row.smoothed else []
    score = "" if row.score is None else f"{row.score:.4f}"
    return head + [row.track, *row.box, score, row.label, *probs, *smoothed]


def _named(classes: list[str], values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(classes, values)}


def predict_video(
    source: str | Path | int,
    model: Any,
    classes: list[str],
    config: VideoConfig = VideoConfig(),
    stats: VideoStats | None = None,
) -> Iterator[VideoRow]:
    """The rows of every sampled frame, in order, as the video is decoded (see `frame_results`)."""
    for result in frame_results(source, model, classes, config, stats=stats):
        yield from result.rows


class VideoSummary:
    """Per track: when it was on screen, for how long, and the share of each expression."""

    def __init__(self, video: str, classes: list[str]):
        self.video, self.classes = video, classes
        self.times: list[float] = []
        self.empty = 0
        self.tracks: dict[int, dict[str, Any]] = {}

    def add(self, rows: list[VideoRow]) -> None:
        """The rows of one sampled frame."""
        if not rows:
            return
        self.times.append(rows[0].time)
        for row in rows:
            if row.track is None:
                self.empty += 1
                continue
            track = self.tracks.setdefault(
                row.track, {"first": row.time, "frames": 0, "labels": Counter()}
            )
            track["last"], track["frames"] = row.time, track["frames"] + 1
            track["labels"][row.label] += 1

    def to_dict(self, stats: VideoStats | None = None) -> dict[str, Any]:
        """The JSON Lines summary record (`type` "summary")."""
        # the mean step between sampled frames (--fps 10 of a 25 fps video: 0.12, 0.08, ...)
        steps = len(self.times) - 1
        gap = (self.times[-1] - self.times[0]) / steps if steps > 0 else 0.0
        tracks = []
        for track, seen in sorted(self.tracks.items()):
            shares = {c: seen["labels"][c] / seen["frames"] for c in self.classes}
            tracks.append(
                {
                    "track": track,
                    "first": round(seen["first"], 3),
                    "last": round(seen["last"], 3),
                    "frames": seen["frames"],
                    # sampled frames with the face, each lasting the mean step between samples
                    "seconds": round(seen["frames"] * gap, 3),
                    "label": max(shares, key=lambda c: shares[c]),
                    "shares": {c: round(v, 4) for c, v in shares.items()},
                }
            )
        record: dict[str, Any] = {
            "type": "summary",
            "video": self.video,
            "frames_sampled": len(self.times),
            "frames_without_face": self.empty,
            "faces": sum(t["frames"] for t in tracks),
            "tracks": tracks,
        }
        if stats is not None:
            record["frames_decoded"] = stats.decoded
            record["seconds"] = {k: round(v, 3) for k, v in stats.seconds.items()}
        return record
