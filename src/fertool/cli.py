"""fertool's command line: thin commands over the library.

Each command parses options, builds a config, calls one library function, writes one artifact
and prints a summary. Results go to stdout (`--json`: one JSON object); progress and logs go to
stderr and stay quiet when stderr is not a terminal. A user's mistake ends in one line naming
the file and the fix, with a non-zero exit code; `fertool --debug ...` shows the traceback.

    fertool prepare --synthetic 3000 -o data.safetensors
    fertool train-branch data.safetensors -o branch1.safetensors --seed 1 --epochs 5
    fertool eval data.safetensors branch1.safetensors --split val -o preds.npz
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fertool import __version__
from fertool.errors import BadInputError, ExitCode, FertoolError, Terminated

if TYPE_CHECKING:  # torch and the models load inside the commands that need them: `--help` stays quick
    from fertool.models import Classifier

app = typer.Typer(
    name="fertool",
    help="Train, evaluate and explain facial-expression classifiers (FER2013 and data laid out like it).",
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
    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FertoolError into one line on stderr and its exit code; Ctrl-C into exit 130, SIGTERM into 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except FertoolError as error:
            if _debug["on"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt as stop:
            if _debug["on"]:
                raise
            terminated = isinstance(stop, Terminated)
            err.print("[bold red]terminated[/]" if terminated else "[bold red]interrupted[/]", markup=True, highlight=False)
            raise typer.Exit(int(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)) from None

    return wrapper


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")
    sys.stdout.flush()


def version_callback(value: bool) -> None:
    if value:
        out.print(f"fertool {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Train, evaluate and explain facial-expression classifiers (FER2013 and data laid out like it)."""
    _debug["on"] = debug or bool(os.environ.get("FERTOOL_DEBUG"))
    refuse_data_parallel(ctx.invoked_subcommand)


DATA_PARALLEL_COMMANDS = ("train-branch",)


def refuse_data_parallel(command: str | None) -> None:
    """Under torchrun, a command that does not split its work would run once per process: every
    rank would do it all and write the same files. Stop instead, with one line from rank 0."""
    try:
        world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        return  # not torchrun's doing; train-branch names the bad variable itself
    if world_size <= 1 or command is None or command in DATA_PARALLEL_COMMANDS:
        return
    if rank == 0:
        err.print(f"[bold red]error:[/] fertool {escape(command)} does not run data-parallel (only train-branch does): "
                  f"run it without torchrun, as one process", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(int(ExitCode.USAGE))


# Options shared by several commands, declared once.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16; auto picks the fastest correct one here.")]
TtaOpt = Annotated[str, typer.Option("--tta", help="Test-time augmentation: auto (what the model file asks for) | none | flip (mean of image and mirror) | crops (flip, plus two zoomed-in centre crops: 6 views).")]
DataArg = Annotated[Path, typer.Argument(metavar="DATA", help="A dataset artifact made by `fertool prepare`.", show_default=False)]




# ---------------------------------------------------------------- prepare


@app.command()
@user_errors
def prepare(
    source: Annotated[Optional[Path], typer.Argument(help="fer2013.csv, or a folder of images (ROOT/<split>/<class>/* or ROOT/<class>/* with --split).", show_default=False)] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Dataset artifact to write.")] = Path("data.safetensors"),
    synthetic: Annotated[int, typer.Option("--synthetic", help="Instead of SOURCE, draw N synthetic faces (runs anywhere, no download).", show_default=False)] = 0,
    split: Annotated[Optional[str], typer.Option("--split", help="train | val | test: the split of a ROOT/<class>/* folder.", show_default=False)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable images (and report how many) instead of stopping.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic faces.")] = 0,
    holdout: Annotated[float, typer.Option("--holdout", help="Set aside this fraction of each class of train as split 'holdout': no branch trains on it, and `ensemble --train-split holdout` trains a head on it.", show_default=False)] = 0.0,
    holdout_seed: Annotated[int, typer.Option("--holdout-seed", help="Seed that picks the holdout faces.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Read FER2013 (Kaggle CSV or image folders) or draw synthetic faces into one dataset file.

    Example: fertool prepare fer2013/ -o fer.safetensors --json
    """
    from fertool import data
    from fertool.artifacts import check_output_path, save_tensors
    from fertool.prepare import check_holdout_fraction, dataset_artifact, hold_out

    check_output_path(output, inputs=[source])
    if holdout:
        check_holdout_fraction(holdout)  # before minutes of reading, not after
    started = time.perf_counter()
    if synthetic < 0:
        raise BadInputError(f"--synthetic {synthetic}: give a positive number of faces")
    if synthetic and source is not None:
        raise FertoolError(f"{source}: give either SOURCE or --synthetic N, not both")
    if synthetic:
        raw = data.synthetic_faces(synthetic, seed=seed)
    elif source is None:
        raise FertoolError("no SOURCE: pass fer2013.csv, an image folder, or --synthetic N")
    elif source.is_dir():
        with err.status(Text(f"reading images under {source}"), spinner="dots") if err.is_terminal else contextlib.nullcontext():
            raw = data.load_folders(source, split=split, skip_bad=skip_bad)
    else:
        if split is not None:
            raise FertoolError(f"{source}: --split applies to a folder of class folders, not a CSV (its Usage column gives the split)")
        raw = data.load_csv(source)
    if holdout:
        raw = hold_out(raw, holdout, holdout_seed)
    tensors, meta = dataset_artifact(raw)
    if holdout:
        meta["holdout"] = {"fraction": holdout, "seed": holdout_seed}
    save_tensors(output, tensors, kind="dataset", meta=meta)
    summary = {"output": str(output), "source": meta["source"], "images": int(len(raw.labels)),
               "counts": {name: c["total"] for name, c in meta["counts"].items()},
               "per_class": meta["counts"], "train_mean": meta["train_mean"], "train_std": meta["train_std"],
               "skipped": len(raw.skipped), "seconds": round(time.perf_counter() - started, 2)}
    for line in raw.skipped:
        err.print(f"skipped {line}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{output}  ({meta['source']})")
    table.add_column("split")
    for name in meta["classes"]:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="bold")
    for name, c in meta["counts"].items():
        table.add_row(name, *[str(c[k]) for k in meta["classes"]], str(c["total"]))
    out.print(table)
    note = f", skipped {len(raw.skipped)} unreadable" if raw.skipped else ""
    out.print(f"{summary['images']} images in {summary['seconds']} s{note}; train mean {meta['train_mean']:.4f}, std {meta['train_std']:.4f}")


# ---------------------------------------------------------------- train-branch


class ProgressReporter:
    """Draws the training loop's progress on stderr and appends each epoch to a JSONL log."""

    def __init__(self, log_path: Path | None, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
            console=err, transient=True, disable=not (enabled and err.is_terminal),
        )
        self.enabled = enabled
        self.task: Any = None
        self.log_path = log_path
        self.seen = 0
        self.started = time.perf_counter()

    def __enter__(self) -> "ProgressReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def stage(self, text: str, images: int) -> None:
        # One line, on a terminal or not, like the epoch lines: the ensemble's feature cache can
        # take minutes before epoch 1, and a log file should not look stuck meanwhile.
        if self.enabled:
            err.print(text, highlight=False, soft_wrap=True)  # one line in a log, whatever its length
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
                f"epoch {record['epoch']:>3}  loss {record['loss']:.4f}  train {record['train_accuracy']:.2%}  "
                f"val {record['val_accuracy']:.2%}  {record['images_per_second']:,.0f} img/s  {record['seconds']:.1f} s",
                highlight=False,
            )
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")


def recorded_command() -> str:
    """The command line as a shell would take it again (paths with spaces quoted): `info` shows it."""
    return shlex.join(["fertool", *sys.argv[1:]])


def checkpoint_path(output: Path) -> Path:
    """Where train-branch and ensemble keep their per-epoch checkpoint: beside the output, named after it."""
    return output.with_name(output.name + ".ckpt")


def run_checkpoint(output: Path, resume: bool) -> Path:
    """The checkpoint of a run about to start; one left by a stopped run needs --resume or deleting.

    A fresh run overwrites the checkpoint after its first epoch, so forgetting --resume would
    throw away every epoch the stopped run had finished: refused before any work instead.
    """
    checkpoint = checkpoint_path(output)
    if checkpoint.exists() and not resume:
        raise BadInputError(f"{checkpoint}: a stopped run's checkpoint; add --resume to continue it, or delete the "
                            "file to start again")
    return checkpoint


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
            err.print(f"stopped; the last finished epoch is saved in {checkpoint}: add --resume to the same command to continue",
                      highlight=False, soft_wrap=True)
        else:
            err.print("stopped before the first epoch finished; nothing to resume, run the command again",
                      highlight=False, soft_wrap=True)
        raise


def load_with_digest(path: Path, expect: str | tuple[str, ...]) -> tuple[Any, str]:
    """(artifact, sha256 of its file) for a file a run learns from (--init, --teacher).

    The digest goes into the run's settings, so a checkpoint resumes only with the same file.
    """
    import hashlib

    from fertool.artifacts import load_artifact

    return load_artifact(path, expect=expect), hashlib.sha256(path.read_bytes()).hexdigest()


def load_start(path: Path, dataset: Any) -> tuple[Any, str]:
    """(artifact, sha256) of the model `--init` names, checked: a branch or an ensemble, for this data."""
    start, digest = load_with_digest(path, ("branch", "ensemble"))
    check_model_fits(start.meta, path, dataset)
    return start, digest


def init_provenance(path: Path, sha256: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What a model trained from another's weights records of that start (shown by fertool info)."""
    metrics = meta.get("metrics", {})
    history = meta.get("history", [])
    # The start's epochs travel along, so `curves` draws the whole run without the start's file.
    return {"file": str(path), "sha256": sha256, "command": meta.get("command"),
            "epochs": len(history), "val_accuracy": metrics.get("best_val_accuracy"), "history": history,
            "dataset_sha256": meta.get("dataset_sha256"), "init": meta.get("init")}


@app.command("train-branch")
@user_errors
def train_branch_command(
    data: DataArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Artifact to write \\[default: branch<SEED>.safetensors; <INIT>-tuned.safetensors for an ensemble --init].", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, shuffling, augmentation and dropout.")] = 1,
    recipe: Annotated[str, typer.Option("--recipe", help="report (the paper's branch, Adam 1e-4, as the report trained it) | best (fertool's: see docs/RESULTS.md). Options below override it.")] = "report",
    arch: Annotated[Optional[str], typer.Option("--arch", help="dexpression (the paper's branch) | dexpression_bn (batch norm instead of LRN) | dexpression_bn_deep (+ a third FeatEx block) | dexpression_bn_gentle_deep (+ two 3x3 convs for the 7x7/2 stem) | dexpression_bn_gentle_wide (gentle_deep, 1.5x the channels) | tiny (for tests). \\[recipe's]", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over the training split. \\[recipe's]", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step. \\[recipe's]", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (the peak, with a schedule). \\[recipe's]", show_default=False)] = None,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adam | sgd (Nesterov momentum 0.9). \\[recipe's]", show_default=False)] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="constant | cosine | onecycle, stepped every batch. \\[recipe's]", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="L2 penalty. \\[recipe's]", show_default=False)] = None,
    label_smoothing: Annotated[Optional[float], typer.Option("--label-smoothing", help="Share of each target spread over all classes. \\[recipe's]", show_default=False)] = None,
    augment_preset: Annotated[Optional[str], typer.Option("--augment-preset", help="report (flip, ±5°, ±10 % shift and zoom) | strong (±10°, ±15 %, random erasing). \\[recipe's]", show_default=False)] = None,
    mixup: Annotated[Optional[float], typer.Option("--mixup", help="Blend each batch's images in pairs, and their targets alike, by a weight drawn from Beta(ALPHA, ALPHA) (mixup; 0.2 is usual); 0 = off. \\[recipe's]", metavar="ALPHA", show_default=False)] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Share of the features zeroed at random before the classifier while training, 0-1 (0 = off). \\[0.5; an --init model's own]", metavar="P", show_default=False)] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random transforms of each batch (see --augment-preset).")] = True,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Zero mean, unit std from the training split.")] = True,
    val_split: Annotated[str, typer.Option("--val-split", help="Split that selects the best epoch: val | train | test | holdout.")] = "val",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    log: Annotated[Optional[Path], typer.Option("--log", help="Append one JSON line per epoch to this file.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt, left by an interrupted run.")] = False,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from this model's weights (and its architecture and normalisation): train a branch longer on a fresh schedule, fine-tune it on other data, or give an ensemble to train its branches and head together (the output is an ensemble).", show_default=False)] = None,
    teacher: Annotated[Optional[Path], typer.Option("--teacher", help="Distil: a teacher's predictions on this data's train split (`fertool eval DATA TEACHER --split train -o teacher.npz`), or a model run on every step's transformed faces (slower, the answer fits the view), blended into every target.", metavar="PREDS|MODEL", show_default=False)] = None,
    teacher_weight: Annotated[Optional[float], typer.Option("--teacher-weight", help="The teacher's share of each target, 0-1 (the label keeps the rest). \\[0.5 with --teacher]", show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Softens the teacher's probabilities: softmax(logits / T).")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Train one DeXpression branch; keep the weights of its best epoch on the validation split.

    With --init ENSEMBLE it fine-tunes a trained ensemble end to end instead (branches and head).
    With --teacher it learns from a trained model's predictions as well as the labels (distillation).

    Example: fertool train-branch fer.safetensors -o branch1.safetensors --seed 1 --recipe best
    """
    from fertool.artifacts import MODEL_KINDS, check_output_path, load_artifact, save_tensors
    from fertool.distill import teacher_provenance
    from fertool.distributed import process_group
    from fertool.runtime import resolve_device
    from fertool.train import RECIPES, TrainConfig, train_branch

    if log is not None:
        check_output_path(log, inputs=[data, init, teacher])
    dataset = load_artifact(data, expect="dataset")
    # distill.py checks that predictions fit the data, check_model_fits a model; train_branch that a weight has a teacher.
    teacher_file, teacher_sha256 = load_with_digest(teacher, ("predictions", *MODEL_KINDS)) if teacher is not None else (None, "")
    if teacher_file is not None and teacher_file.kind != "predictions":
        check_model_fits(teacher_file.meta, teacher_file.path, dataset)
    if teacher_weight is None:
        teacher_weight = 0.5 if teacher is not None else 0.0  # with a teacher: as much teacher as label
    if recipe not in RECIPES:
        raise BadInputError(f"--recipe {recipe}: choose one of {', '.join(RECIPES)}")
    given = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
             "schedule": schedule, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
             "augment_preset": augment_preset, "mixup": mixup, "dropout": dropout}
    settings = {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
    start, start_sha256 = load_start(init, dataset) if init is not None else (None, "")
    if output is None:
        ensemble_stem = start.path.stem if start is not None and start.kind == "ensemble" else None
        output = Path(f"{ensemble_stem}-tuned.safetensors" if ensemble_stem else f"branch{seed}.safetensors")
    check_output_path(output, inputs=[data, init, teacher])
    if start is not None:
        # The start decides the architecture (train_branch refuses an --arch that disagrees)
        # and the normalisation its weights were learned with (an ensemble's branches carry theirs).
        settings["arch"] = arch or start.meta["arch"]
        settings["dropout"] = dropout if dropout is not None else start.meta.get("arch_args", {}).get("dropout", 0.5)
        normalize = start.meta.get("normalization") is not None or start.meta["kind"] == "ensemble"
    config = TrainConfig(**settings, augment=augment, normalize=normalize, val_split=val_split, seed=seed,
                         device=device, precision=precision, init=start_sha256, teacher=teacher_sha256,
                         teacher_weight=teacher_weight, temperature=temperature)
    config.validate()
    checkpoint = run_checkpoint(output, resume)
    with process_group(resolve_device(device)) as cluster:
        # Under torchrun every rank trains; rank 0 alone reports, checkpoints and writes.
        with resumable(checkpoint, quiet=not cluster.is_main), ProgressReporter(log if cluster.is_main else None,
                                                                                enabled=cluster.is_main) as reporter:
            result = train_branch(dataset, config, reporter=reporter, checkpoint=checkpoint, resume=resume,
                                  cluster=cluster, init=start, teacher=teacher_file)
    if not cluster.is_main:
        return
    metrics = {"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
               "val_split": val_split, "images_per_second": result.images_per_second, "seconds": result.seconds,
               "processes": cluster.world_size}
    meta = {**result.meta, "input_size": [1, dataset.meta["image_size"], dataset.meta["image_size"]],
            "train_config": asdict(config), "seed": seed, "metrics": metrics, "history": result.history,
            "dataset_sha256": dataset.meta["sha256"], "dataset_source": dataset.meta["source"],
            "device": result.device, "precision": result.precision,
            "command": recorded_command()}
    if start is not None:
        meta["init"] = init_provenance(start.path, start_sha256, start.meta)
    if teacher_file is not None:
        meta["teacher"] = teacher_provenance(teacher_file, teacher_sha256)
    save_tensors(output, result.model.state_dict(), kind=start.meta["kind"] if start is not None else "branch", meta=meta)
    checkpoint.unlink(missing_ok=True)
    summary = {"output": str(output), "epochs": len(result.history), **metrics,
               "final_val_accuracy": result.history[-1]["val_accuracy"], "device": result.device, "precision": result.precision}
    if as_json:
        print_json(summary)
        return
    out.print(
        f"{output}: best {val_split} accuracy {result.best_val_accuracy:.2%} at epoch {result.best_epoch}/{len(result.history)}; "
        f"{result.images_per_second:,.0f} train images/s, {result.seconds:.0f} s on {result.device} ({result.precision})",
        highlight=False,
    )


# ---------------------------------------------------------------- eval


def check_model_fits(model_meta: dict[str, Any], model_path: Path, dataset: Any) -> None:
    from fertool.errors import WrongKindError

    if list(model_meta["classes"]) != list(dataset.meta["classes"]):
        raise WrongKindError(f"{model_path}: predicts classes {model_meta['classes']}, but {dataset.path} has {dataset.meta['classes']}; use a model trained on such data")
    size = model_meta.get("input_size", [1, 48, 48])[-1]
    if size != dataset.meta["image_size"]:
        raise WrongKindError(f"{model_path}: takes {size}x{size} images, but {dataset.path} holds {dataset.meta['image_size']}x{dataset.meta['image_size']}; prepare the data at the model's size")


@app.command("eval")
@user_errors
def eval_command(
    data: DataArg,
    model_path: Annotated[Optional[Path], typer.Argument(metavar="[MODEL]", help="A branch or ensemble artifact \\[default: the bundled model].", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="train | val | test | holdout")] = "val",
    tta: TtaOpt = "auto",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the predictions artifact (npz: logits, labels, indices).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass (100 was fastest on a 2-core CPU; GPUs like more).")] = 100,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Score a model on one split: accuracy and per-class precision, recall and F1.

    Example: fertool eval fer.safetensors branch1.safetensors --split val -o preds.npz --tta flip
    """
    import torch

    from fertool.artifacts import check_output_path, load_artifact, save_npz
    from fertool.evaluate import predict_logits, select_split
    from fertool.metrics import classification_report
    from fertool.runtime import precision_name, resolve_device, resolve_precision

    from fertool.cli_analysis import default_model_path
    from fertool.evaluate import check_tta, model_tta
    from fertool.models import load_model

    check_tta(tta, allow_auto=True)  # before minutes of loading
    model_path = model_path or default_model_path()
    if output is not None:
        check_output_path(output, inputs=[data, model_path])
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: must be at least 1")
    dataset = load_artifact(data, expect="dataset")
    model, meta = load_model(model_path)
    check_model_fits(meta, model_path, dataset)
    tta = model_tta(meta, tta)
    images, labels, indices = select_split(dataset, split)
    run_device = resolve_device(device)
    dtype = resolve_precision(precision, run_device)
    started = time.perf_counter()
    logits = predict_logits(model.to(run_device).to(memory_format=torch.channels_last), images, run_device, dtype,
                            batch_size, tta=tta)
    seconds = time.perf_counter() - started
    report = classification_report(logits.numpy(), labels.numpy(), meta["classes"])
    if output is not None:
        save_npz(output, {"logits": logits.numpy(), "labels": labels.numpy(), "indices": indices.numpy()},
                 kind="predictions",
                 meta={"model": str(model_path), "model_kind": meta["kind"], "dataset": str(data),
                       "dataset_sha256": dataset.meta["sha256"], "split": split, "classes": meta["classes"],
                       "tta": tta})
    summary = {"model": str(model_path), "data": str(data), "split": split, "tta": tta, **report,
               "images_per_second": len(images) / seconds, "seconds": seconds,
               "device": str(run_device), "precision": precision_name(dtype)}
    if output is not None:
        summary["output"] = str(output)
    if as_json:
        print_json(summary)
        return
    out.print(report_table(report, f"{model_path} on {data} [{split}]" + (f", TTA {tta}" if tta != "none" else "")))
    out.print(f"accuracy {report['accuracy']:.2%} ({report['count']} images), macro F1 {report['macro_f1']:.3f}; "
              f"{summary['images_per_second']:,.0f} images/s on {run_device}", highlight=False)


def report_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    return table


# ---------------------------------------------------------------- ensemble


@app.command("ensemble")
@user_errors
def ensemble_command(
    data: DataArg,
    branch_paths: Annotated[list[Path], typer.Argument(metavar="BRANCH...", help="Two or more branch artifacts.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Ensemble artifact to write.")] = Path("ensemble.safetensors"),
    features: Annotated[str, typer.Option("--features", help="What the head reads: penultimate (last FeatEx features) | logits.")] = "penultimate",
    average: Annotated[bool, typer.Option("--average", help="No head: average the branches' probabilities (the baseline).")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes of the head over the training split.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 100,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate of the head.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW's decoupled weight decay of the head.")] = 1e-4,
    hidden: Annotated[str, typer.Option("--hidden", help="Widths of the head's hidden layers, or none (one linear layer).")] = "512,256",
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout before each of the head's layers.")] = 0.5,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Augment images on their way through the frozen branches (slower).")] = False,
    views: Annotated[str, typer.Option("--views", help="Train the head on these views of each face and pick its epoch on their mean: none | flip | crops (as eval's --tta, which then uses them).")] = "none",
    val_split: Annotated[str, typer.Option("--val-split", help="Split that selects the best epoch.")] = "val",
    train_split: Annotated[str, typer.Option("--train-split", help="Split the head learns from: train, or holdout (faces set aside by prepare --holdout, which the branches never saw).")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the head's weights and shuffling.")] = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    log: Annotated[Optional[Path], typer.Option("--log", help="Append one JSON line per epoch to this file.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt, left by an interrupted run.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Join frozen branches with three dense layers (or average them), selected on validation.

    Example: fertool ensemble fer.safetensors branch1.safetensors branch2.safetensors branch3.safetensors -o ensemble.safetensors
    """
    from fertool.artifacts import check_output_path, load_artifact, save_tensors
    from fertool.ensemble import EnsembleConfig, average_ensemble, ensemble_meta, parse_hidden, train_ensemble
    from fertool.evaluate import predict_logits, select_split
    from fertool.runtime import resolve_device, resolve_precision

    check_output_path(output, inputs=[data, *branch_paths])
    if log is not None:  # a bad log path fails now, not after the cached passes and an epoch
        check_output_path(log, inputs=[data, *branch_paths])
    config = EnsembleConfig(features=features, hidden=parse_hidden(hidden), dropout=dropout, epochs=epochs,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment, views=views,
                            val_split=val_split, train_split=train_split, seed=seed, device=device,
                            precision=precision)
    config.validate()
    dataset = load_artifact(data, expect="dataset")
    branches = [load_artifact(p, expect="branch") for p in branch_paths]
    for branch in branches:
        check_model_fits(branch.meta, branch.path, dataset)
    model: Classifier
    if average:
        model = average_ensemble(branches)
        images, labels, _ = select_split(dataset, val_split)
        # Scored as `eval` will score the file: on the chosen device and precision, with the views
        # it asks for (`--views`), so the accuracy it records is the one eval gives back.
        run_device = resolve_device(device)
        logits = predict_logits(model.to(run_device), images, run_device, resolve_precision(precision, run_device),
                                tta=config.views)
        model.cpu()
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        meta = {**ensemble_meta(branches, model, config), "metrics": {"best_val_accuracy": accuracy, "val_split": val_split}, "history": []}
        history: list[dict[str, Any]] = []
    else:
        checkpoint = run_checkpoint(output, resume)
        with resumable(checkpoint), ProgressReporter(log) as reporter:
            result = train_ensemble(dataset, branches, config, reporter=reporter, checkpoint=checkpoint, resume=resume)
        model, accuracy, history = result.model, result.best_val_accuracy, result.history
        meta = {**result.meta, "train_config": {**asdict(config), "hidden": list(config.hidden)},
                "metrics": {"best_val_accuracy": accuracy, "best_epoch": result.best_epoch, "val_split": val_split,
                            "images_per_second": result.images_per_second, "seconds": result.seconds},
                "history": history}
    meta.update({"seed": seed, "dataset_sha256": dataset.meta["sha256"], "dataset_source": dataset.meta["source"],
                 "normalization": None, "command": recorded_command()})
    save_tensors(output, model.state_dict(), kind="ensemble", meta=meta)
    checkpoint_path(output).unlink(missing_ok=True)
    branch_accuracy = {str(b.path): b.meta.get("metrics", {}).get("best_val_accuracy") for b in branches}
    summary = {"output": str(output), "mode": "average" if average else features, "best_val_accuracy": accuracy,
               "epochs": len(history), "branches": branch_accuracy, "val_split": val_split}
    if as_json:
        print_json(summary)
        return
    for path, acc in branch_accuracy.items():
        out.print(f"  branch {path}: {val_split} accuracy {acc:.2%}" if acc is not None else f"  branch {path}", highlight=False)
    out.print(f"{output}: {summary['mode']} ensemble of {len(branches)} branches, {val_split} accuracy {accuracy:.2%}", highlight=False)


def main() -> None:
    """Console-script entry point (`fertool`, `python -m fertool`)."""
    # A fixed name: usage lines and shell completion say `fertool` under `python -m` too.
    app(prog_name="fertool")


# The analysis commands live in their own module; importing it registers them on `app`.
from fertool import cli_analysis  # noqa: E402,F401
