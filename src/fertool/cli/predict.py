"""fertool predict: the expression of every face in photos, as a table, CSV or JSON.

fertool predict photo.jpg                                   # the bundled model, a table
fertool predict branch1.safetensors photos/ 'more/*.png' --json
fertool predict party.jpg --csv > faces.csv
fertool predict party.jpg --annotate annotated/             # copies with boxes and labels
fertool predict clip.mp4 --fps 5 --smooth --json > rows.jsonl  # video: JSON Lines as it plays
fertool predict clip.mp4 --annotate clip-faces.mp4          # the video with boxes and tracks
"""

from __future__ import annotations

import contextlib
import csv
import json
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
    AlignOpt,
    DetectorOpt,
    DetThresholdOpt,
    DeviceOpt,
    JsonOpt,
    MinFaceOpt,
    TtaOpt,
    command,
    detect_config,
    err,
    error_line,
    out,
    print_json,
    progress_bar,
    split_model_and_images,
)
from fertool.errors import BadInputError, ExitCode
from fertool.options import Detector, Tta


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
            metavar="DIR|VIDEO.mp4",
            show_default=False,
            help="Also write each photo, with boxes and labels drawn, as DIR/<name>.png, and each "
            "video as DIR/<name>.mp4 (H.264) with track ids; for one video, a .mp4 path names "
            "the file itself.",
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
    detector: DetectorOpt = Detector.YUNET,
    det_threshold: DetThresholdOpt = 0.6,
    min_face: MinFaceOpt = 16,
    align: AlignOpt = True,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Faces per forward pass.")
    ] = 256,
    tta: TtaOpt = Tta.AUTO,
    every: Annotated[
        int, typer.Option("--every", min=1, help="Video: classify every Nth frame.")
    ] = 1,
    fps: Annotated[
        Optional[float],
        typer.Option(
            "--fps",
            min=0.001,
            show_default=False,
            help="Video: classify this many frames per second of video (instead of --every).",
        ),
    ] = None,
    start: Annotated[
        float, typer.Option("--start", min=0, help="Video: first second to read.")
    ] = 0.0,
    end: Annotated[
        Optional[float],
        typer.Option(
            "--end",
            min=0,
            show_default=False,
            help="Video: stop at this second [default: the end].",
        ),
    ] = None,
    detect_side: Annotated[
        int,
        typer.Option(
            "--detect-side",
            min=64,
            help="Video: find faces on frames reduced to this longer side, in pixels (faster; "
            "YuNet finds faces from about 10 px there: raise it for small faces).",
        ),
    ] = 400,
    smooth: Annotated[
        bool,
        typer.Option(
            "--smooth",
            help="Video: add each track's exponential moving average of its probabilities "
            "(time constant 0.5 s) and label by it; the raw probabilities stay in the rows.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Find the faces in photos and name the expression of each, with the probability of every
    class.

    Faces are found by YuNet, a small detector shipped with fertool (--detector haar: OpenCV's
    cascade), turned so the eyes are level, cropped with a margin, made 48x48 gray and classified
    with the views of --tta (auto: those the model file asks for; the bundled model's are crops,
    six views). Faces narrower than --min-face are skipped and counted.

    Images already 48x48 (face crops) are classified whole. A photo without a face is listed with
    no faces (exit code 0).

    An unreadable file is named on stderr and skipped; the others are still processed and printed,
    and the exit code is then 3.

    Videos (mp4, mov, mkv, webm, avi, ...; `-` or a number: a camera) give one row per face
    per sampled frame, with frame, time (s, from the stream's timestamps) and track (a face keeps
    its id across frames; it survives 10 sampled frames unseen); a frame without a face gives a
    row without a track. --json prints JSON Lines as the video plays ("type": face | no_face),
    then a "summary" record per video; the table is that summary: per track, time on screen and
    the share of each expression. Videos use one view per face when --tta is auto (the frames
    already show each face many times); --tta applies as given.

    Example: fertool predict branch1.safetensors photo.jpg party/ 'shots/*.png' --json
    """
    from fertool.artifacts import check_output_path
    from fertool.bundled import load_face_model
    from fertool.data import IMAGE_EXTENSIONS
    from fertool.photos import PredictConfig, expand_inputs, predict_photos, write_annotations
    from fertool.video import VIDEO_EXTENSIONS, VideoConfig, camera_index, is_video

    if as_json and as_csv:
        raise BadInputError("--json and --csv: give one of them")
    model_path, inputs = split_model_and_images(list(paths or []))
    if not inputs:
        raise BadInputError(
            "no photos: pass image or video files, folders or globs (after the model, if you "
            "give one)"
        )
    cameras = [index for index in map(camera_index, map(str, inputs)) if index is not None]
    inputs = [path for path in inputs if camera_index(str(path)) is None]
    files, problems = expand_inputs(inputs, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    videos = [path for path in files if is_video(path)]
    video_mode = bool(videos or cameras)
    if every > 1 and fps is not None:
        raise BadInputError("--every and --fps: give one of them")
    if annotate_dir is not None:
        if video_mode and annotate_dir.suffix.lower() in VIDEO_EXTENSIONS:
            if annotate_dir.suffix.lower() not in (".mp4", ".m4v", ".mov"):
                raise BadInputError(
                    f"--annotate {annotate_dir}: the annotated copy is H.264 in MP4; name it "
                    f"{annotate_dir.stem}.mp4"
                )
            if len(videos) + len(cameras) != 1 or len(files) != len(videos):
                raise BadInputError(
                    f"--annotate {annotate_dir}: a video path takes one video as input; "
                    "give a folder to annotate several"
                )
            check_output_path(annotate_dir, inputs=files)
        else:
            check_annotate_dir(annotate_dir)
    model = load_face_model(model_path)  # a .onnx export runs through ONNX Runtime
    model_name = model.name
    check_face_size(model.meta, model_name)
    classes = model.classes
    model.place(device, "fp32")  # as before: predict runs the weights as stored
    config = PredictConfig(
        detect=detect_config(detector, det_threshold, min_face, align, margin=margin),
        whole_images=no_detect,
        batch_size=batch_size,
        tta=model.resolve_tta(tta.value),
    )

    for problem in problems:
        err.print(f"skipped {problem}", highlight=False, soft_wrap=True)
    if video_mode:
        video_config = VideoConfig(
            detect=config.detect,
            every=every,
            fps=fps,
            start=start,
            end=end,
            detect_side=detect_side,
            whole_frames=no_detect,
            smooth=smooth,
            batch_size=batch_size,
            tta=model.video_tta(tta.value),
        )
        output = RowWriter("json" if as_json else "csv" if as_csv else "table", classes, smooth)
        sources: list[Path | int] = [*videos, *cameras]
        photos = [path for path in files if not is_video(path)]
        run_videos(
            photos, sources, model, classes, (config, video_config), output, annotate_dir, problems
        )
        if problems:
            error_line(
                f"{len(problems)} input(s) could not be read, or not to the end (named above); "
                "the rows read are printed"
            )
            raise typer.Exit(int(ExitCode.BAD_INPUT))
        return
    with progress_bar() as progress:
        rows = predict_photos(files, model, classes, config, problems, BarProgress(progress))
    written = write_annotations(annotate_dir, rows, files) if annotate_dir is not None else []
    if as_json:
        print_json(
            {
                "model": model_name,
                "results": rows,
                "skipped": problems,
                "small_faces_skipped": sum(row["small_faces_skipped"] for row in rows),
                **({"annotated": written} if annotate_dir is not None else {}),
            }
        )
    elif as_csv:
        write_csv(rows, classes)
        small = sum(row["small_faces_skipped"] for row in rows)
        if small:  # stdout is the CSV: the count goes to stderr
            err.print(f"{small} face(s) smaller than --min-face {min_face} px skipped")
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


def print_wide(table: Table) -> None:
    """A terminal folds long paths to fit; piped into a file, grep or less a folded path is two
    broken lines, so the table gets its natural width there instead of the default 80 columns."""
    if out.is_terminal:
        out.print(table)
    else:
        # Console.print(width=) cannot exceed the console's width, so a console as wide as the table
        width = max(
            out.width, Measurement.get(out, out.options.update_width(100_000), table).maximum
        )
        Console(file=out.file, width=width, soft_wrap=True, markup=False).print(table)


def print_summary(
    rows: list[dict[str, Any]], classes: list[str], model_name: str, annotate_dir: Path | None
) -> None:
    print_wide(results_table(rows, classes, model_name))
    faces = sum(len(row["faces"]) for row in rows)
    without = sum(1 for row in rows if not row["faces"])
    line = (
        f"{faces} face{'s' if faces != 1 else ''} in "
        f"{len(rows)} photo{'s' if len(rows) != 1 else ''}"
    )
    line += f", {without} without a face" if without else ""
    small = sum(row["small_faces_skipped"] for row in rows)
    line += f"; {small} smaller than --min-face skipped" if small else ""
    line += f"; annotated copies in {annotate_dir}" if annotate_dir is not None else ""
    out.print(line, highlight=False)


# ---------------------------------------------------------------- video


class RowWriter:
    """Video rows to stdout as they come (CSV or JSON Lines, flushed per frame), or a summary
    table per video."""

    def __init__(self, mode: str, classes: list[str], smooth: bool):
        from fertool.video import csv_header

        self.mode, self.classes, self.smooth = mode, classes, smooth
        self.csv = csv.writer(sys.stdout, lineterminator="\n")
        if mode == "csv":
            self.csv.writerow(csv_header(classes, smooth))

    def photos(self, rows: list[dict[str, Any]]) -> None:
        """Photos among videos: one row each face, as frame 0 of a one-frame video."""
        from fertool.video import VideoRow, VideoSummary

        for row in rows:
            faces = [
                VideoRow(
                    row["path"],
                    0,
                    0.0,
                    i + 1,
                    face["box"],
                    face.get("score"),
                    face["label"],
                    face["probabilities"],
                    dict(face["probabilities"]) if self.smooth else None,
                    face.get("landmarks"),
                )
                for i, face in enumerate(row["faces"])
            ]
            rows_of_frame = faces or [VideoRow(row["path"], 0, 0.0)]
            self.frame(rows_of_frame)
            if self.mode != "csv":  # a summary record or table per photo, as per video
                summary = VideoSummary(row["path"], self.classes)
                summary.add(rows_of_frame)
                self.summary(summary.to_dict())

    def frame(self, rows: list[Any]) -> None:
        if self.mode == "json":
            for row in rows:
                sys.stdout.write(json.dumps(row.to_dict()) + "\n")
        elif self.mode == "csv":
            from fertool.video import csv_fields

            for row in rows:
                self.csv.writerow(csv_fields(row, self.classes, self.smooth))
        else:
            return
        sys.stdout.flush()  # a pipe sees each frame's rows as the video plays

    def summary(self, record: dict[str, Any]) -> None:
        if self.mode == "json":
            print_json(record)
            return
        line = (
            f"{record['video']}: {record['faces']} face(s) in {record['frames_sampled']} sampled "
            f"frame(s), {len(record['tracks'])} track(s), "
            f"{record['frames_without_face']} frame(s) without a face"
        )
        if self.mode == "csv":
            err.print(line, highlight=False, soft_wrap=True)
            return
        if record["tracks"]:
            print_wide(track_table(record, self.classes))
        out.print(line, highlight=False)


def track_table(record: dict[str, Any], classes: list[str]) -> Table:
    """Per track: when on screen, for how long, its commonest label and each label's share."""
    from rich import box

    table = Table(title=record["video"], box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("track", "from s", "to s", "on screen s", "label"):
        table.add_column(name, justify="left" if name == "label" else "right", no_wrap=True)
    for name in classes:
        table.add_column(name[:3], justify="right", no_wrap=True)
    for track in record["tracks"]:
        table.add_row(
            str(track["track"]),
            f"{track['first']:.2f}",
            f"{track['last']:.2f}",
            f"{track['seconds']:.2f}",
            track["label"],
            *(f"{track['shares'][name]:.0%}" for name in classes),
        )
    return table


def video_targets(
    annotate: Path | None, sources: list[Path | int], inputs: list[Path]
) -> list[Path | None]:
    """Where each video's annotated copy goes: --annotate itself when it names a video file (one
    video), else DIR/<name>.mp4 (camera-N.mp4), distinct, never over an input."""
    from fertool.photos import annotation_names
    from fertool.video import VIDEO_EXTENSIONS

    if annotate is None:
        return [None] * len(sources)
    if annotate.suffix.lower() in VIDEO_EXTENSIONS:
        return [annotate]
    annotate.mkdir(exist_ok=True)
    named = [Path(f"camera-{s}") if isinstance(s, int) else s for s in sources]
    inside = [p for p in inputs if p.parent.resolve() == annotate.resolve()]  # as for photos
    return [annotate / name for name in annotation_names(named, inside, suffix=".mp4")]


def run_videos(
    photos: list[Path],
    sources: list[Path | int],
    model: Any,
    classes: list[str],
    configs: tuple[Any, Any],
    output: RowWriter,
    annotate: Path | None,
    problems: list[str],
) -> None:
    """Photos among the videos as one-frame rows, then each video streamed; problems appended."""
    from fertool.photos import predict_photos, write_annotations

    photo_config, video_config = configs
    if photos:
        with progress_bar() as progress:
            rows = predict_photos(
                photos, model, classes, photo_config, problems, BarProgress(progress)
            )
        output.photos(rows)
        if annotate is not None:
            write_annotations(annotate, rows, photos)
    inputs = [*photos, *(s for s in sources if isinstance(s, Path))]
    for source, target in zip(sources, video_targets(annotate, sources, inputs)):
        stopped = predict_one_video(source, model, classes, video_config, output, target)
        if stopped:
            problems.append(stopped)


def predict_one_video(
    source: Path | int,
    model: Any,
    classes: list[str],
    config: Any,
    output: RowWriter,
    annotate: Path | None,
) -> str | None:
    """Stream one video's rows to `output`, then its summary; the problem that stopped it, if
    any (the rows before are already out)."""
    from fertool.video import VideoStats, VideoSummary, frame_results, source_name
    from fertool.video_out import AnnotatedVideo

    stats = VideoStats()
    name = source_name(source)
    summary = VideoSummary(name, classes)
    problem = None
    writer = AnnotatedVideo(annotate, stats) if annotate is not None else None
    with contextlib.ExitStack() as stack:
        if writer is not None:
            stack.enter_context(writer)
        try:
            with progress_bar() as progress:
                task = progress.add_task(f"{Path(name).name}", total=None)
                for result in frame_results(
                    source, model, classes, config, writer is not None, stats
                ):
                    if writer is not None:
                        writer.write(result)
                    if result.sampled:
                        output.frame(result.rows)
                        summary.add(result.rows)
                    progress.advance(task)
        except KeyboardInterrupt:
            if not isinstance(source, int):
                raise
            # Ctrl-C is how a camera stream ends: the summary of what was seen still comes.
        except BadInputError as error:
            problem = str(error)
            if stats.decoded == 0:
                err.print(f"skipped {problem}", highlight=False, soft_wrap=True)
                return problem
            error_line(problem)
    record = summary.to_dict(stats)
    if problem:
        record["error"] = problem
    if writer is not None and writer.count:
        record["annotated"] = str(annotate)
    output.summary(record)
    return problem
