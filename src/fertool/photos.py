"""The expression of every face in photos: find, crop, classify in batches, one row per photo.

    from fertool.bundled import resolve_model
    model, meta, _ = resolve_model(None)
    config = PredictConfig(tta="crops")
    rows, problems = predict_photos([Path("party.jpg")], model, meta["classes"], config)
    rows[0]["faces"][0]    # {"box": [x, y, w, h], "label": "happy", "probabilities": {...}}

Every photo is read and searched for faces first; then all face crops go through the model
together, in batches, so a folder of photos costs one model pass, not one per photo.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fertool.constants import IMAGE_SIZE
from fertool.detect import DetectConfig, Face, Photo
from fertool.errors import BadInputError

_GLOB_CHARS = re.compile(r"[*?[]")


@dataclass
class PredictConfig:
    """How `predict` finds and classifies faces; the command's options map onto these fields."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    whole_images: bool = (
        False  # classify each whole image (its centred square) instead of finding faces
    )
    batch_size: int = 256  # faces per forward pass
    tta: str = (
        "none"  # the views averaged per face (evaluate.TTA_MODES; resolve `auto` with model_tta)
    )


@dataclass
class PhotoResult:
    """One photo read: its size, its face boxes in its own pixels, and where their crops went."""

    path: Path
    size: tuple[int, int]
    boxes: list[list[int]]
    rows: slice  # this photo's faces' rows in the batch of all faces
    faces: list[dict[str, Any]] = field(default_factory=list)  # each face's score and landmarks
    small: int = 0  # faces found but narrower than --min-face, skipped


def expand_inputs(
    paths: list[Path], extensions: frozenset[str] | None = None
) -> tuple[list[Path], list[str]]:
    """Files to read: folders searched recursively for images (or files ending in one of
    `extensions`: images and videos for predict), globs expanded; and the problems.

    A name that is neither a file, a folder nor a glob that matches is a problem ("PATH: reason"),
    reported like an unreadable file. A file reached twice is read once.
    """
    from fertool.data import IMAGE_EXTENSIONS

    extensions = IMAGE_EXTENSIONS if extensions is None else extensions
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = images_under(path, extensions)
            if not found:
                problems.append(
                    f"{path}: no images in this folder (looked for {', '.join(sorted(extensions))})"
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS.search(str(path)):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            if not matches:
                problems.append(f"{path}: no file matches this pattern")
            for match in matches:
                files.extend(images_under(match, extensions) if match.is_dir() else [match])
        else:
            problems.append(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique, problems


def images_under(root: Path, extensions: frozenset[str]) -> list[Path]:
    """Image files below `root`, sorted, skipping hidden files and folders;
    symlinked folders are not followed."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(
            Path(folder) / n
            for n in sorted(names)
            if not n.startswith(".") and Path(n).suffix.lower() in extensions
        )
    return found


class Progress(Protocol):
    """What `predict_photos` tells its caller as it goes (the CLI draws progress bars)."""

    def stage(self, name: str, total: int) -> None: ...  # a new stage of `total` steps
    def advance(self, steps: int, problem: str | None = None) -> None: ...  # a file with a problem


class NoProgress:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, steps: int, problem: str | None = None) -> None:
        pass


def scan_photos(
    files: list[Path],
    config: DetectConfig,
    whole_images: bool,
    problems: list[str],
    progress: Progress = NoProgress(),
) -> tuple[list[PhotoResult], np.ndarray]:
    """Read every file and crop its faces (or the whole image); unreadable ones go to `problems`."""
    from fertool.detect import photo_faces, read_photo

    progress.stage("finding faces", len(files))
    results: list[PhotoResult] = []
    crops: list[np.ndarray] = []
    count = 0
    for path in files:
        try:
            photo = read_photo(path, config.max_side)
        except BadInputError as error:
            problems.append(str(error))
            progress.advance(1, str(error))
            continue
        small: list[Face] = []
        faces, found = photo_faces(photo, config, detect=not whole_images, skipped=small)
        crops.append(found)
        rows = slice(count, count + len(faces))
        boxes = [photo.to_original(face.box) for face in faces]
        found_by = [detector_fields(photo, face) for face in faces]
        results.append(PhotoResult(path, photo.size, boxes, rows, found_by, len(small)))
        count += len(faces)
        progress.advance(1)
    return results, (
        np.concatenate(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    )


LANDMARKS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")  # YuNet's five, in order


def detector_fields(photo: Photo, face: Face) -> dict[str, Any]:
    """A face's `score` and `landmarks` for the JSON rows, the points in the photo's own pixels
    (landmarks None where the finder gives none: haar, --no-detect)."""
    points = None
    if face.landmarks is not None:
        (sx, sy) = photo.scale
        points = {
            name: [round(x * sx, 1), round(y * sy, 1)]
            for name, (x, y) in zip(LANDMARKS, face.landmarks)
        }
    return {"score": round(face.score, 4), "landmarks": points}


def face_rows(
    results: list[PhotoResult], probs: np.ndarray, classes: list[str]
) -> list[dict[str, Any]]:
    """The JSON shape: one entry per photo, each with its faces."""
    rows = []
    for result in results:
        faces = []
        found_by = result.faces or [{}] * len(result.boxes)
        for box, p, detector in zip(result.boxes, probs[result.rows], found_by):
            faces.append(
                {
                    "box": box,
                    "label": classes[int(p.argmax())],
                    "probabilities": {name: float(v) for name, v in zip(classes, p)},
                    **detector,
                }
            )
        rows.append(
            {
                "path": str(result.path),
                "size": list(result.size),
                "faces": faces,
                "small_faces_skipped": result.small,
            }
        )
    return rows


def predict_photos(
    files: list[Path],
    model: Any,
    classes: list[str],
    config: PredictConfig,
    problems: list[str] | None = None,
    progress: Progress = NoProgress(),
) -> list[dict[str, Any]]:
    """One row per readable photo (see `face_rows`); unreadable files are appended to `problems`."""
    from fertool.detect import classify_faces

    problems = [] if problems is None else problems
    results, crops = scan_photos(files, config.detect, config.whole_images, problems, progress)
    progress.stage("classifying", len(crops))
    probs = classify_faces(
        model, crops, config.batch_size, on_batch=progress.advance, tta=config.tta
    )
    return face_rows(results, probs, classes)


def annotation_names(paths: list[Path], inputs: list[Path], suffix: str = ".png") -> list[str]:
    """A distinct name per photo (or video, `suffix` ".mp4"), from its own name (a.jpg -> a.png,
    then a-2.png, ...).

    Names already used by an input in the folder are avoided too, so an input is never overwritten.
    """
    taken = {p.name.lower() for p in inputs}
    names = []
    for path in paths:
        stem, n = path.stem or "image", 1
        name = f"{stem}{suffix}"
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def write_annotations(folder: Path, rows: list[dict[str, Any]], inputs: list[Path]) -> list[str]:
    """Write each photo with its boxes and labels drawn to FOLDER/<name>.png, atomically."""
    from fertool.artifacts import atomic_path
    from fertool.detect import annotate, open_for_drawing

    folder.mkdir(exist_ok=True)  # its parent was checked before any work
    paths = [Path(row["path"]) for row in rows]
    written = []
    inside = [p for p in inputs if p.parent.resolve() == folder.resolve()]
    for row, name in zip(rows, annotation_names(paths, inside)):
        captions = [f"{f['label']} {f['probabilities'][f['label']]:.0%}" for f in row["faces"]]
        image = annotate(
            open_for_drawing(Path(row["path"])), [f["box"] for f in row["faces"]], captions
        )
        target = folder / name
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        written.append(str(target))
    return written
