"""fertool predict: the expression of every face in photos (registered on cli.app).

    fertool predict photo.jpg                                   # the bundled model, a table
    fertool predict branch1.safetensors photos/ 'more/*.png' --json
    fertool predict party.jpg --csv > faces.csv
    fertool predict party.jpg --annotate annotated/             # copies with boxes and labels

Every photo is read and searched for faces first; then all face crops go through the model
together, in batches, so a folder of photos costs one model pass, not one per photo.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fertool.cli import DeviceOpt, JsonOpt, app, err, out, print_json, user_errors
from fertool.cli_analysis import resolve_model, split_model_and_images
from fertool.errors import BadInputError, ExitCode, WrongKindError

if TYPE_CHECKING:
    from fertool.detect import DetectConfig

_GLOB_CHARS = re.compile(r"[*?[]")


@dataclass
class PhotoResult:
    """One photo read: its size, its face boxes in its own pixels, and where their crops went."""

    path: Path
    size: tuple[int, int]
    boxes: list[list[int]]
    rows: slice  # this photo's faces' rows in the batch of all faces


# ---------------------------------------------------------------- inputs


def expand_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Files to read: folders searched recursively for images, globs expanded; and the problems.

    A name that is neither a file, a folder nor a glob that matches is a problem ("PATH: reason"),
    reported like an unreadable file. A file reached twice is read once.
    """
    from fertool.data import IMAGE_EXTENSIONS

    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = images_under(path, IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"{path}: no images in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS.search(str(path)):
            import glob

            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            if not matches:
                problems.append(f"{path}: no file matches this pattern")
            for match in matches:
                files.extend(images_under(match, IMAGE_EXTENSIONS) if match.is_dir() else [match])
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
    """Image files below `root`, sorted, skipping hidden files and folders; symlinked folders are not followed."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(Path(folder) / n for n in sorted(names)
                     if not n.startswith(".") and Path(n).suffix.lower() in extensions)
    return found


def annotation_names(paths: list[Path], inputs: list[Path]) -> list[str]:
    """A distinct PNG name per photo, from its own name (a.jpg -> a.png, then a-2.png, ...).

    Names already used by an input in the folder are avoided too, so an input is never overwritten.
    """
    taken = {p.name.lower() for p in inputs}
    names = []
    for path in paths:
        stem, n = path.stem or "image", 1
        name = f"{stem}.png"
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name.lower())
        names.append(name)
    return names


# ---------------------------------------------------------------- outputs


def face_rows(results: list[PhotoResult], probs: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """The JSON shape: one entry per photo, each with its faces."""
    rows = []
    for result in results:
        faces = []
        for box, p in zip(result.boxes, probs[result.rows]):
            faces.append({"box": box, "label": classes[int(p.argmax())],
                          "probabilities": {name: float(v) for name, v in zip(classes, p)}})
        rows.append({"path": str(result.path), "size": list(result.size), "faces": faces})
    return rows


def write_csv(rows: list[dict[str, Any]], classes: list[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "x", "y", "w", "h", "label", *classes])
    for row in rows:
        for face in row["faces"]:
            writer.writerow([row["path"], *face["box"], face["label"],
                             *(f"{face['probabilities'][name]:.6f}" for name in classes)])
    sys.stdout.flush()


def results_table(rows: list[dict[str, Any]], classes: list[str], title: str) -> Table:
    """One line per face (and per photo without one); classes abbreviated so it fits 80 columns."""
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("photo", overflow="fold")
    table.add_column("x,y,w,h", no_wrap=True)
    table.add_column("label", style="bold", no_wrap=True)
    for name in classes:
        table.add_column(name[:3], justify="right", no_wrap=True)
    for row in rows:
        if not row["faces"]:
            table.add_row(row["path"], Text("no face", style="dim"), "", *[""] * len(classes))
        for face in row["faces"]:
            probs = face["probabilities"]
            table.add_row(row["path"], ",".join(map(str, face["box"])), face["label"],
                          *(f"{probs[name]:.0%}" for name in classes))
    return table


def check_annotate_dir(folder: Path) -> None:
    """Fail before any work when --annotate's folder cannot be made or written, as outputs do."""
    import os

    from fertool.artifacts import check_output_path

    if folder.exists():
        if not folder.is_dir():
            raise BadInputError(f"--annotate {folder}: is a file; give a folder for the annotated copies")
        if not os.access(folder, os.W_OK):
            raise BadInputError(f"--annotate {folder}: folder is not writable; choose another one")
        return
    check_output_path(folder)  # its parent must exist and be writable; the folder is made when written


def write_annotations(folder: Path, rows: list[dict[str, Any]], inputs: list[Path]) -> list[str]:
    """Write each photo with its boxes and labels drawn to FOLDER/<name>.png, atomically."""
    from fertool.artifacts import atomic_path
    from fertool.detect import annotate, open_for_drawing

    folder.mkdir(exist_ok=True)  # its parent was checked before any work (check_annotate_dir)
    paths = [Path(row["path"]) for row in rows]
    written = []
    for row, name in zip(rows, annotation_names(paths, [p for p in inputs if p.parent.resolve() == folder.resolve()])):
        captions = [f"{f['label']} {f['probabilities'][f['label']]:.0%}" for f in row["faces"]]
        image = annotate(open_for_drawing(Path(row["path"])), [f["box"] for f in row["faces"]], captions)
        target = folder / name
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        written.append(str(target))
    return written


# ---------------------------------------------------------------- predict


@app.command()
@user_errors
def predict(
    paths: Annotated[Optional[list[Path]], typer.Argument(metavar="[MODEL] PATH...", help="A model file (default: the bundled model), then photos, folders (searched recursively) or globs.", show_default=False)] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout: path,x,y,w,h,label and one probability per class, a row per face.")] = False,
    annotate_dir: Annotated[Optional[Path], typer.Option("--annotate", metavar="DIR", help="Also write each photo, with boxes and labels drawn, as DIR/<name>.png.", show_default=False)] = None,
    no_detect: Annotated[bool, typer.Option("--no-detect", help="Classify each whole image (its centred square) instead of finding faces.")] = False,
    margin: Annotated[float, typer.Option("--margin", help="Context added around each face found, as a share of its size, on every side.")] = 0.2,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Faces per forward pass.")] = 256,
    tta: Annotated[str, typer.Option("--tta", help="Views averaged per face: auto (the model file's, at least flip) | none | flip | crops.")] = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Find the faces in photos and name the expression of each, with the probability of every class.

    Each face is cropped with a margin, made 48x48 gray and classified as the mean of the probabilities for it and its mirror image (and zoomed-in crops, if the model file asks for --tta crops; --tta chooses).

    Images already 48x48 (face crops) are classified whole. A photo without a face is listed with no faces (exit code 0).

    An unreadable file is named on stderr and skipped; the others are still processed and printed, and the exit code is then 3.

    Example: fertool predict branch1.safetensors photo.jpg party/ 'shots/*.png' --json
    """
    from fertool.detect import DetectConfig, classify_faces
    from fertool.evaluate import check_tta
    from fertool.runtime import resolve_device

    check_tta(tta, allow_auto=True)
    if as_json and as_csv:
        raise BadInputError("--json and --csv: give one of them")
    if not 0 <= margin <= 1:
        raise BadInputError(f"--margin {margin}: give a share of the face's size between 0 and 1")
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: must be at least 1")
    model_path, inputs = split_model_and_images(list(paths or []))
    if not inputs:
        raise BadInputError("no photos: pass image files, folders or globs (after the model, if you give one)")
    if annotate_dir is not None:
        check_annotate_dir(annotate_dir)
    model, meta, model_name = resolve_model(model_path)
    side = meta.get("input_size", [1, 48, 48])[-1]
    if side != 48:
        raise WrongKindError(f"{model_name}: takes {side}x{side} images; predict feeds 48x48 faces, use a model trained on 48x48 data")
    classes = list(meta["classes"])
    model.to(resolve_device(device))

    files, problems = expand_inputs(inputs)
    for problem in problems:
        err.print(f"skipped {problem}", highlight=False, soft_wrap=True)
    with progress_bar() as progress:
        results, crops = scan_photos(files, DetectConfig(margin=margin), no_detect, problems, progress)
        task = progress.add_task("classifying", total=len(crops))
        # A handful of faces costs nothing to mirror: flip at least, or the views the model asks for.
        if tta == "auto":
            tta = "crops" if meta.get("tta") == "crops" else "flip"
        probs = classify_faces(model, crops, batch_size, on_batch=lambda n: progress.advance(task, n), tta=tta)
    rows = face_rows(results, probs, classes)
    written = write_annotations(annotate_dir, rows, files) if annotate_dir is not None else []
    if as_json:
        print_json({"model": model_name, "results": rows, "skipped": problems,
                    **({"annotated": written} if annotate_dir is not None else {})})
    elif as_csv:
        write_csv(rows, classes)
    else:
        print_summary(rows, classes, model_name, annotate_dir)
    if problems:
        err.print(f"[bold red]error:[/] {len(problems)} input(s) could not be read (named above); "
                  f"the results cover the other {len(rows)}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(int(ExitCode.BAD_INPUT))


def scan_photos(files: list[Path], config: DetectConfig, no_detect: bool, problems: list[str],
                progress: Any) -> tuple[list[PhotoResult], np.ndarray]:
    """Read every file and crop its faces (or the whole image); unreadable ones go to `problems`."""
    from fertool.data import IMAGE_SIZE
    from fertool.detect import photo_faces, read_photo

    results: list[PhotoResult] = []
    crops: list[np.ndarray] = []
    count = 0
    task = progress.add_task("finding faces", total=len(files))
    for path in files:
        try:
            photo = read_photo(path, config.max_side)
        except BadInputError as error:
            problems.append(str(error))
            err.print(f"skipped {error}", highlight=False, soft_wrap=True)
            progress.advance(task)
            continue
        boxes, found = photo_faces(photo, config, detect=not no_detect)
        crops.append(found)
        results.append(PhotoResult(path, photo.size, [photo.to_original(b) for b in boxes], slice(count, count + len(boxes))))
        count += len(boxes)
        progress.advance(task)
    return results, (np.concatenate(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8))


def print_summary(rows: list[dict[str, Any]], classes: list[str], model_name: str, annotate_dir: Path | None) -> None:
    table = results_table(rows, classes, model_name)
    # A terminal folds long paths to fit; piped into a file, grep or less a folded path is two
    # broken lines, so the table gets its natural width there instead of the default 80 columns.
    if out.is_terminal:
        out.print(table)
    else:  # Console.print(width=) cannot exceed the console's width, so a console as wide as the table
        width = max(out.width, Measurement.get(out, out.options.update_width(100_000), table).maximum)
        Console(file=out.file, width=width, soft_wrap=True, markup=False).print(table)
    faces = sum(len(row["faces"]) for row in rows)
    without = sum(1 for row in rows if not row["faces"])
    line = f"{faces} face{'s' if faces != 1 else ''} in {len(rows)} photo{'s' if len(rows) != 1 else ''}"
    line += f", {without} without a face" if without else ""
    line += f"; annotated copies in {annotate_dir}" if annotate_dir is not None else ""
    out.print(line, highlight=False)


def progress_bar() -> Any:
    """A progress bar on stderr for the files and faces; silent when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)
