"""What every command shares: the Typer app, the consoles, the error wrapper, the shared options
and the progress display. Command modules import this one and the library; this module imports
no command module, so the command line has no import cycle.

    from fertool.cli.base import JsonOpt, app, out, print_json, user_errors

    @app.command(rich_help_panel=DATA_PANEL)
    @user_errors
    def prepare(...): ...

Results go to stdout (`--json`: one JSON object); progress and logs go to stderr and stay quiet
when stderr is not a terminal. A user's mistake ends in one line naming the file and the fix,
with a non-zero exit code; `fertool --debug ...` shows the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fertool.errors import ExitCode, FertoolError, Terminated
from fertool.options import Detector, Precision, Tta
from fertool.version import __version__

# The panels `fertool --help` groups the commands in.
DATA_PANEL = "Data and training"
ANALYSIS_PANEL = "Analysis"
USE_PANEL = "Use a model"

# Click's UsageError, the base of its refusals. Typer 0.2x vendors Click rather than depending on
# it, so it is reached through typer.BadParameter, a public subclass, whichever Click is in use.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class OneLineErrors(TyperGroup):
    """Click's own refusals (a value outside an option's choices or range, an unknown option, a
    missing argument) as one `error:` line and exit code 2, like every other error of fertool's,
    instead of the usage text and a box."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as error:
            context = getattr(error, "ctx", None)
            where = context.command_path if context is not None else "fertool"
            message = error.format_message()  # type: ignore[attr-defined]  # Click's, not Exception's
            error_line(f"{message} (see {where} --help)")
            raise typer.Exit(int(ExitCode.USAGE)) from None


app = typer.Typer(
    cls=OneLineErrors,
    name="fertool",
    help="Train, evaluate and explain facial-expression classifiers (FER2013 and data laid out "
    "like it).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Markup off: what these print is mostly paths and class names, and Rich would take the "[v2]" of
# "runs/[v2]/model.safetensors" for a style tag and drop it. Styled lines pass markup=True and
# escape what they interpolate.
out = Console(soft_wrap=True, markup=False)  # results
err = Console(stderr=True, markup=False)  # progress, logs and error lines
_debug = {"on": bool(os.environ.get("FERTOOL_DEBUG"))}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind the command like Ctrl-C instead of killing it where it stands.

    The handler only raises: an artifact being written is then abandoned by its atomic writer
    (no `.part` file left behind) and a training run keeps its last checkpoint.
    """

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    # Signal handlers can only be set from the main thread (tests may call commands from others).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def error_line(text: str) -> None:
    """One red `error:` line on stderr, whatever its length."""
    err.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FertoolError into one line on stderr and its exit code; Ctrl-C into 130, SIGTERM 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except FertoolError as error:
            if _debug["on"]:
                raise
            error_line(str(error))
            raise typer.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt as stop:
            if _debug["on"]:
                raise
            terminated = isinstance(stop, Terminated)
            word = "terminated" if terminated else "interrupted"
            err.print(f"[bold red]{word}[/]", markup=True, highlight=False)
            code = ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED
            raise typer.Exit(int(code)) from None

    return wrapper


def reflow(doc: str) -> str:
    """A docstring as help text: the lines of each paragraph joined, paragraphs kept apart (Rich
    would keep every line break of a docstring wrapped to the source's line length)."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def command(
    name: str | None = None, *, panel: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command on `app` in a `--help` panel, its docstring as help,
    its errors as one line."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        wrapped = user_errors(fn)
        app.command(name, help=reflow(fn.__doc__ or ""), rich_help_panel=panel)(wrapped)
        return wrapped

    return register


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")
    sys.stdout.flush()


def recorded_command() -> str:
    """The command line as a shell would take it again (paths with spaces quoted):
    `info` shows it."""
    return shlex.join(["fertool", *sys.argv[1:]])


def version_callback(value: bool) -> None:
    if value:
        out.print(f"fertool {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Train, evaluate and explain facial-expression classifiers (FER2013 and data laid out like
    it)."""
    _debug["on"] = debug or bool(os.environ.get("FERTOOL_DEBUG"))
    refuse_data_parallel(ctx.invoked_subcommand)


DATA_PARALLEL_COMMANDS = ("train-branch",)


def refuse_data_parallel(command: str | None) -> None:
    """Under torchrun, a command that does not split its work would run once per process: every
    rank would do it all and write the same files. Stop instead, with one line from rank 0."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return  # not torchrun's doing; train-branch names the bad variable itself
    if world_size <= 1 or command is None or command in DATA_PARALLEL_COMMANDS:
        return
    if rank == 0:
        error_line(
            f"fertool {command} does not run data-parallel (only train-branch does): "
            "run it without torchrun, as one process"
        )
    raise typer.Exit(int(ExitCode.USAGE))


# ---------------------------------------------------------------- options shared by commands

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="auto | cpu | cuda | cuda:N | mps; auto picks a GPU when there is one."
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision", help="auto picks the fastest precision that is correct on this machine."
    ),
]
TtaOpt = Annotated[
    Tta,
    typer.Option(
        "--tta",
        help="Views averaged per face: auto (the views the model file asks for; none if it names "
        "none) | none | flip (the face and its mirror) | crops (flip, plus two zoomed-in centre "
        "crops: 6).",
    ),
]
# The face finder's options, the same on every command that finds faces (predict, saliency
# --detect, filters --detect). Their defaults are detect.DetectConfig's (a test keeps them equal);
# `detect_config` maps them onto it.
DetectorOpt = Annotated[
    Detector,
    typer.Option(
        "--detector",
        help="The face finder: yunet (shipped with fertool; finds turned, tilted and small faces) "
        "| haar (OpenCV 4's frontal-face cascade of 2001).",
    ),
]
DetThresholdOpt = Annotated[
    float,
    typer.Option(
        "--det-threshold",
        min=0.0,
        max=1.0,
        help="yunet: the score (0-1) a face needs; lower finds more faces, and more false ones.",
    ),
]
MinFaceOpt = Annotated[
    int,
    typer.Option(
        "--min-face",
        min=1,
        metavar="PIXELS",
        help="Skip faces narrower than this, in the photo's own pixels (they are counted).",
    ),
]
AlignOpt = Annotated[
    bool,
    typer.Option(
        "--align/--no-align",
        help="yunet: turn each face so its eyes are level before cropping it.",
    ),
]
LogOpt = Annotated[
    Optional[Path],
    typer.Option("--log", show_default=False, help="Append one JSON line per epoch to this file."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt, left by an interrupted run.")
]
DataArg = Annotated[
    Path,
    typer.Argument(
        metavar="DATA", help="A dataset artifact made by `fertool prepare`.", show_default=False
    ),
]
OnnxModelArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="[MODEL]",
        help="A branch or ensemble artifact, or its ONNX export (`fertool export`) "
        "\\[default: the bundled model].",
        show_default=False,
    ),
]
ModelArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="[MODEL]",
        help="A branch or ensemble artifact \\[default: the bundled model].",
        show_default=False,
    ),
]


def detect_config(
    detector: Detector, threshold: float, min_face: int, align: bool, **more: Any
) -> Any:
    """The detect.DetectConfig of the face finder's options (`more`: its other fields)."""
    from fertool.detect import DetectConfig

    return DetectConfig(
        detector=detector.value, threshold=threshold, min_face=min_face, align=align, **more
    )


# ---------------------------------------------------------------- progress


def progress_bar(speed: bool = False, enabled: bool = True) -> Any:
    """A transient progress bar on stderr; silent when stderr is not a terminal or not `enabled`.

    `speed`: a column for a `speed` field the caller updates (images/s while training).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if speed:
        columns.append(TextColumn("{task.fields[speed]}"))
    columns.append(TimeRemainingColumn())
    return Progress(
        *columns, console=err, transient=True, disable=not (enabled and err.is_terminal)
    )


class ProgressReporter:
    """Draws the training loop's progress on stderr and appends each epoch to a JSONL log."""

    def __init__(self, log_path: Path | None, enabled: bool = True):
        self.progress = progress_bar(speed=True, enabled=enabled)
        self.enabled = enabled
        self.task: Any = None
        self.log_path = log_path
        self.seen = 0
        self.started = time.perf_counter()

    def __enter__(self) -> ProgressReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def stage(self, text: str, images: int) -> None:
        # One line, on a terminal or not, like the epoch lines: the ensemble's feature cache can
        # take minutes before epoch 1, and a log file should not look stuck meanwhile.
        if self.enabled:
            err.print(
                text, highlight=False, soft_wrap=True
            )  # one line in a log, whatever its length
        self._bar("outputs", images)

    def epoch_start(self, epoch: int, epochs: int, images: int) -> None:
        self._bar(f"epoch {epoch}/{epochs}", images)

    def _bar(self, description: str, images: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=images, speed="")
        self.seen, self.started = 0, time.perf_counter()

    def batch_done(self, images: int) -> None:
        self.seen += images
        speed = self.seen / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=images, speed=f"{speed:,.0f} img/s")

    def epoch_end(self, record: dict[str, Any]) -> None:
        # One line per epoch on stderr, on a terminal or not: a run in the background with
        # `2> train.log` shows its progress there, while --json keeps stdout to the result.
        if self.enabled:
            err.print(
                f"epoch {record['epoch']:>3}  loss {record['loss']:.4f}  "
                f"train {record['train_accuracy']:.2%}  val {record['val_accuracy']:.2%}  "
                f"{record['images_per_second']:,.0f} img/s  {record['seconds']:.1f} s",
                highlight=False,
            )
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def resumable(checkpoint: Path, quiet: bool = False) -> Iterator[None]:
    """Say how to resume when Ctrl-C or SIGTERM (see `sigterm_as_interrupt`) stops a training run.

    The exception unwinds through the loop, so an artifact being written is abandoned by its
    atomic writer and the checkpoint of the last finished epoch stays.
    """
    try:
        yield
    except KeyboardInterrupt:
        if quiet:
            raise
        if checkpoint.exists():
            text = (
                f"stopped; the last finished epoch is saved in {checkpoint}: "
                "add --resume to the same command to continue"
            )
        else:
            text = (
                "stopped before the first epoch finished; nothing to resume, run the command again"
            )
        err.print(text, highlight=False, soft_wrap=True)
        raise


# ---------------------------------------------------------------- [MODEL] IMAGE... arguments

# A first path with one of these suffixes is a model argument, not an image; .npz is never a
# model, but taking it as one gives the right error ("a predictions artifact, pass a model").
MODEL_SUFFIXES = (".safetensors", ".onnx", ".npz", ".ckpt")


def split_model_and_images(paths: list[Path]) -> tuple[Path | None, list[Path]]:
    """[MODEL] IMAGE...: the first path is the model when it is a .safetensors or .onnx file."""
    if paths and paths[0].suffix.lower() in MODEL_SUFFIXES:
        return paths[0], paths[1:]
    return None, paths
