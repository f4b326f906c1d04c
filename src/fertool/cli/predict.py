"""fertool predict: the expression of every face in photos, as a table, CSV or JSON.

fertool predict photo.jpg                                   # the bundled model, a table
fertool predict branch1.safetensors photos/ 'more/*.png' --json
fertool predict party.jpg --csv > faces.csv
fertool predict party.jpg --annotate annotated/             # copies with boxes and labels
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fertool.cli.base import (
    USE_PANEL,
    DeviceOpt,
    JsonOpt,
    TtaOpt,
    command,
    err,
    error_line,
    out,
    print_json,
    progress_bar,
    split_model_and_images,
)
from fertool.errors import BadInputError, ExitCode
from fertool.options import Tta


class BarProgress:
    """predict_photos' progress as rich bars; an unreadable file is named on stderr as it is met."""

    def __init__(self, progress: Any):
        self.progress, self.task = progress, None

    def stage(self, name: str, total: int) -> None:
        self.task = self.progress.add_task(name, total=total)

    def advance(self, steps: int, problem: str | None = None) -> None:
        if problem is not None:
            err.print(f"skipped {problem}", highlight=False, soft_wrap=True)
        self.progress.advance(self.task, steps)


@command(panel=USE_PANEL)
def predict(
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="[MODEL] PATH...",
            show_default=False,
            help="A model file or its ONNX export (default: the bundled model), then photos, "
            "folders (searched recursively) or globs.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Print CSV on stdout: path,x,y,w,h,label and one probability per class, "
            "a row per face.",
        ),
    ] = False,
    annotate_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--annotate",
            metavar="DIR",
            show_default=False,
            help="Also write each photo, with boxes and labels drawn, as DIR/<name>.png.",
        ),
    ] = None,
    no_detect: Annotated[
        bool,
        typer.Option(
            "--no-detect",
            help="Classify each whole image (its centred square) instead of finding faces.",
        ),
    ] = False,
    margin: Annotated[
        float,
        typer.Option(
            "--margin",
            min=0,
            max=1,
            help="Context added around each face found, as a share of its size, on every side.",
        ),
    ] = 0.2,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Faces per forward pass.")
    ] = 256,
    tta: TtaOpt = Tta.AUTO,
    device: DeviceOpt = "auto",
) -> None:
    """Find the faces in photos and name the expression of each, with the probability of every
    class.

    Each face is cropped with a margin, made 48x48 gray and classified with the views of --tta
    (auto: those the model file asks for; the bundled model's are crops, six views).

    Images already 48x48 (face crops) are classified whole. A photo without a face is listed with
    no faces (exit code 0).

    An unreadable file is named on stderr and skipped; the others are still processed and printed,
    and the exit code is then 3.

    Example: fertool predict branch1.safetensors photo.jpg party/ 'shots/*.png' --json
    """
    from fertool.bundled import load_face_model
    from fertool.detect import DetectConfig
    from fertool.photos import PredictConfig, expand_inputs, predict_photos, write_annotations

    if as_json and as_csv:
        raise BadInputError("--json and --csv: give one of them")
    model_path, inputs = split_model_and_images(list(paths or []))
    if not inputs:
        raise BadInputError(
            "no photos: pass image files, folders or globs (after the model, if you give one)"
        )
    if annotate_dir is not None:
        check_annotate_dir(annotate_dir)
    model = load_face_model(model_path)  # a .onnx export runs through ONNX Runtime
    model_name = model.name
    check_face_size(model.meta, model_name)
    classes = model.classes
    model.place(device, "fp32")  # as before: predict runs the weights as stored
    config = PredictConfig(
        detect=DetectConfig(margin=margin),
        whole_images=no_detect,
        batch_size=batch_size,
        tta=model.resolve_tta(tta.value),
    )

    files, problems = expand_inputs(inputs)
    for problem in problems:
        err.print(f"skipped {problem}", highlight=False, soft_wrap=True)
    with progress_bar() as progress:
        rows = predict_photos(files, model, classes, config, problems, BarProgress(progress))
    written = write_annotations(annotate_dir, rows, files) if annotate_dir is not None else []
    if as_json:
        print_json(
            {
                "model": model_name,
                "results": rows,
                "skipped": problems,
                **({"annotated": written} if annotate_dir is not None else {}),
            }
        )
    elif as_csv:
        write_csv(rows, classes)
    else:
        print_summary(rows, classes, model_name, annotate_dir)
    if problems:
        error_line(
            f"{len(problems)} input(s) could not be read (named above); "
            f"the results cover the other {len(rows)}"
        )
        raise typer.Exit(int(ExitCode.BAD_INPUT))


def check_face_size(meta: dict[str, Any], model_name: str) -> None:
    from fertool.constants import IMAGE_SIZE
    from fertool.errors import WrongKindError

    side = meta.get("input_size", [1, IMAGE_SIZE, IMAGE_SIZE])[-1]
    if side != IMAGE_SIZE:
        raise WrongKindError(
            f"{model_name}: takes {side}x{side} images; predict feeds {IMAGE_SIZE}x{IMAGE_SIZE} "
            f"faces, use a model trained on {IMAGE_SIZE}x{IMAGE_SIZE} data"
        )


def check_annotate_dir(folder: Path) -> None:
    """Fail before any work when --annotate's folder cannot be made or written, as outputs do."""
    from fertool.artifacts import check_output_path

    if folder.exists():
        if not folder.is_dir():
            raise BadInputError(
                f"--annotate {folder}: is a file; give a folder for the annotated copies"
            )
        if not os.access(folder, os.W_OK):
            raise BadInputError(f"--annotate {folder}: folder is not writable; choose another one")
        return
    check_output_path(
        folder
    )  # its parent must exist and be writable; the folder is made when written


def write_csv(rows: list[dict[str, Any]], classes: list[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "x", "y", "w", "h", "label", *classes])
    for row in rows:
        for face in row["faces"]:
            writer.writerow(
                [
                    row["path"],
                    *face["box"],
                    face["label"],
                    *(f"{face['probabilities'][name]:.6f}" for name in classes),
                ]
            )
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
            table.add_row(
                row["path"],
                ",".join(map(str, face["box"])),
                face["label"],
                *(f"{probs[name]:.0%}" for name in classes),
            )
    return table


def print_summary(
    rows: list[dict[str, Any]], classes: list[str], model_name: str, annotate_dir: Path | None
) -> None:
    table = results_table(rows, classes, model_name)
    # A terminal folds long paths to fit; piped into a file, grep or less a folded path is two
    # broken lines, so the table gets its natural width there instead of the default 80 columns.
    if out.is_terminal:
        out.print(table)
    else:
        # Console.print(width=) cannot exceed the console's width, so a console as wide as the table
        width = max(
            out.width, Measurement.get(out, out.options.update_width(100_000), table).maximum
        )
        Console(file=out.file, width=width, soft_wrap=True, markup=False).print(table)
    faces = sum(len(row["faces"]) for row in rows)
    without = sum(1 for row in rows if not row["faces"])
    line = (
        f"{faces} face{'s' if faces != 1 else ''} in "
        f"{len(rows)} photo{'s' if len(rows) != 1 else ''}"
    )
    line += f", {without} without a face" if without else ""
    line += f"; annotated copies in {annotate_dir}" if annotate_dir is not None else ""
    out.print(line, highlight=False)
