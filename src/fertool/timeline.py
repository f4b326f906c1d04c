"""Read back the rows `fertool predict VIDEO --csv` or `--json` wrote, per video and track, for
the timeline figure.

    panels, classes, smoothed = read_tracks(Path("rows.csv"))
    for (video, track), (times, probs) in panels.items(): ...

Both formats are read by their shape: JSON Lines records of type "face" (no_face and summary
records are skipped), or CSV with the columns `video.csv_header` names. Smoothed probabilities
are used when the rows have them (`--smooth`), unless `raw` is asked for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fertool.errors import BadInputError

Panels = dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]


def read_tracks(path: Path, raw: bool = False) -> tuple[Panels, list[str], bool]:
    """(times and probabilities per (video, track) in time order, the classes, whether the
    probabilities are the smoothed ones)."""
    records = list(_face_records(path))
    if not records:
        raise BadInputError(
            f"{path}: no face rows (a video without faces, or not the output of "
            "`fertool predict VIDEO --csv` or `--json`)"
        )
    classes = list(records[0]["probabilities"])
    smoothed = not raw and all("smoothed" in r for r in records)
    series: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
    for record in records:
        probs = record["smoothed" if smoothed else "probabilities"]
        if not isinstance(probs, dict) or set(probs) != set(classes):
            raise BadInputError(
                f"{path}: rows of other classes than the first row's ({', '.join(classes)}), "
                "or without probabilities; draw one model's rows per file"
            )
        key = (str(record["video"]), int(record["track"]))
        series.setdefault(key, []).append((float(record["time"]), [probs[c] for c in classes]))
    panels = {}
    for key, points in series.items():
        points.sort(key=lambda p: p[0])
        panels[key] = (np.array([t for t, _ in points]), np.array([p for _, p in points]))
    return panels, classes, smoothed


def _face_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as file:
            first = file.readline()
            file.seek(0)
            if first.lstrip().startswith("{"):
                yield from _json_lines(path, file)
            else:
                yield from _csv_rows(path, file)
    except (OSError, UnicodeDecodeError) as error:
        raise BadInputError(f"{path}: cannot read ({error})") from error


def _json_lines(path: Path, file: Any) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInputError(f"{path}:{number}: not a JSON line ({error.msg})") from error
        if isinstance(record, dict) and record.get("type") == "face":
            if not {"video", "track", "time", "probabilities"} <= set(record):
                raise BadInputError(f"{path}:{number}: a face record without video, track, time")
            yield record


def _csv_rows(path: Path, file: Any) -> Iterator[dict[str, Any]]:
    from fertool.video import csv_header

    reader = csv.reader(file)
    header = next(reader, [])
    fixed = csv_header([], smooth=False)
    if header[: len(fixed)] != fixed:
        raise BadInputError(
            f"{path}: not rows of `fertool predict VIDEO --csv` (its header starts "
            f"{','.join(fixed[:4])},...)"
        )
    names = header[len(fixed) :]
    smoothed = [n for n in names if n.startswith("smoothed_")]
    classes = [n for n in names if not n.startswith("smoothed_")]
    for number, row in enumerate(reader, 2):
        if len(row) != len(header):
            raise BadInputError(f"{path}:{number}: {len(row)} fields, the header has {len(header)}")
        if not row[3]:
            continue  # a frame without a face
        try:
            values = [float(v) for v in row[len(fixed) :]]
            record: dict[str, Any] = {
                "video": row[0],
                "track": int(row[3]),
                "time": float(row[2]),
                "probabilities": dict(zip(classes, values)),
            }
        except ValueError as error:
            raise BadInputError(f"{path}:{number}: not a number ({error})") from error
        if smoothed:
            record["smoothed"] = dict(zip(classes, values[len(classes) :]))
        yield record
