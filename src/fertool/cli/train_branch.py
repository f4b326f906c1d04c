"""fertool train-branch: train one branch (or fine-tune an ensemble) into a model file.

fertool train-branch fer.safetensors --seed 1                      # --recipe best, 40 epochs
fertool train-branch fer.safetensors --seed 1 --recipe report      # the report's recipe
fertool train-branch fer.safetensors --init branch1.safetensors --epochs 10 -o longer.safetensors
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from fertool.cli.base import (
    DATA_PANEL,
    DataArg,
    DeviceOpt,
    JsonOpt,
    LogOpt,
    PrecisionOpt,
    ProgressReporter,
    ResumeOpt,
    command,
    out,
    print_json,
    recorded_command,
    resumable,
)
from fertool.options import Arch, AugmentPreset, Optimizer, Precision, Recipe, Schedule, Split

RECIPE_HELP = (
    "best: fertool's (batch norm, SGD on a one-cycle schedule, label smoothing, stronger "
    "augmentation; see docs/RESULTS.md) | report: the paper's branch with Adam at 1e-4, as the "
    "report trained it. The options below override it."
)
OVERRIDE = "\\[recipe's]"


@command("train-branch", panel=DATA_PANEL)
def train_branch_command(
    data: DataArg,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "-o",
            "--output",
            show_default=False,
            help="Artifact to write \\[default: branch<SEED>.safetensors; "
            "<INIT>-tuned.safetensors for an ensemble --init].",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of weights, shuffling, augmentation and dropout.")
    ] = 1,
    recipe: Annotated[Recipe, typer.Option("--recipe", help=RECIPE_HELP)] = Recipe.BEST,
    arch: Annotated[
        Optional[Arch],
        typer.Option(
            "--arch",
            show_default=False,
            help="dexpression: the paper's branch; dexpression_bn: batch norm instead of LRN; "
            "_deep: a third FeatEx block; _gentle_deep: and two 3x3 convs for the 7x7/2 stem; "
            f"_gentle_wide: gentle_deep with 1.5x the channels; tiny: for tests. {OVERRIDE}",
        ),
    ] = None,
    epochs: Annotated[
        Optional[int],
        typer.Option(
            "--epochs",
            min=1,
            show_default=False,
            help=f"Passes over the training split. {OVERRIDE}",
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size", min=1, show_default=False, help=f"Images per step. {OVERRIDE}"
        ),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option(
            "--lr",
            min=0,
            show_default=False,
            help=f"Learning rate (the peak, with a schedule). {OVERRIDE}",
        ),
    ] = None,
    optimizer: Annotated[
        Optional[Optimizer],
        typer.Option(
            "--optimizer", show_default=False, help=f"sgd uses Nesterov momentum 0.9. {OVERRIDE}"
        ),
    ] = None,
    schedule: Annotated[
        Optional[Schedule],
        typer.Option("--schedule", show_default=False, help=f"Learning rate per step. {OVERRIDE}"),
    ] = None,
    weight_decay: Annotated[
        Optional[float],
        typer.Option("--weight-decay", min=0, show_default=False, help=f"L2 penalty. {OVERRIDE}"),
    ] = None,
    classifier_lr: Annotated[
        Optional[float],
        typer.Option(
            "--classifier-lr",
            min=0,
            metavar="SCALE",
            show_default=False,
            help="The last layer's learning rate, as a multiple of --lr (best: 0.1, so SGD's first "
            f"steps do not diverge). {OVERRIDE}",
        ),
    ] = None,
    label_smoothing: Annotated[
        Optional[float],
        typer.Option(
            "--label-smoothing",
            min=0,
            max=1,
            show_default=False,
            help=f"Share of each target spread over all classes. {OVERRIDE}",
        ),
    ] = None,
    augment_preset: Annotated[
        Optional[AugmentPreset],
        typer.Option(
            "--augment-preset",
            show_default=False,
            help="report: flip, ±5°, ±10 % shift and zoom; strong: ±10°, ±15 %, "
            f"random erasing. {OVERRIDE}",
        ),
    ] = None,
    augment_warmup: Annotated[
        Optional[int],
        typer.Option(
            "--augment-warmup",
            min=0,
            metavar="EPOCHS",
            show_default=False,
            help="Epochs at the start that use the report preset's milder transforms (best: 1, so "
            f"a short run learns). {OVERRIDE}",
        ),
    ] = None,
    mixup: Annotated[
        Optional[float],
        typer.Option(
            "--mixup",
            min=0,
            metavar="ALPHA",
            show_default=False,
            help="Blend each batch's images in pairs, and their targets alike, "
            f"by a weight drawn from Beta(ALPHA, ALPHA) (mixup; 0.2 is usual); 0 = off. {OVERRIDE}",
        ),
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(
            "--dropout",
            min=0,
            max=1,
            metavar="P",
            show_default=False,
            help="Share of the features zeroed at random before the classifier while training, 0-1 "
            "(0 = off). \\[0.5; an --init model's own]",
        ),
    ] = None,
    augment: Annotated[
        bool,
        typer.Option(
            "--augment/--no-augment", help="Random transforms of each batch (see --augment-preset)."
        ),
    ] = True,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize", help="Zero mean, unit std from the training split."
        ),
    ] = True,
    val_split: Annotated[
        Split, typer.Option("--val-split", help="Split that selects the best epoch.")
    ] = Split.VAL,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    log: LogOpt = None,
    resume: ResumeOpt = False,
    init: Annotated[
        Optional[Path],
        typer.Option(
            "--init",
            show_default=False,
            help="Start from this model's weights (and its architecture and normalisation): train "
            "a branch longer on a fresh schedule, fine-tune it on other data, or give an ensemble "
            "to train its branches and head together (the output is an ensemble).",
        ),
    ] = None,
    teacher: Annotated[
        Optional[Path],
        typer.Option(
            "--teacher",
            metavar="PREDS|MODEL",
            show_default=False,
            help="Distil: a teacher's predictions on this data's train split (`fertool eval DATA "
            "TEACHER --split train -o teacher.npz`), or a model run on every step's transformed "
            "faces (slower, the answer fits the view), blended into every target.",
        ),
    ] = None,
    teacher_weight: Annotated[
        Optional[float],
        typer.Option(
            "--teacher-weight",
            min=0,
            max=1,
            show_default=False,
            help="The teacher's share of each target, 0-1 (the label keeps the rest). "
            "\\[0.5 with --teacher]",
        ),
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature", min=0, help="Softens the teacher's probabilities: softmax(logits / T)."
        ),
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Train one DeXpression branch; keep the weights of its best epoch on the validation split.

    The default recipe, best, gives the best model for the time given. On FER2013 (seed 1, a
    2-core AVX512-BF16 CPU, about 25 s an epoch) a run of --epochs 1 reaches 43 % val accuracy,
    3: 51 %, 8: 56 %, 40 (the default): 62.5 %; --recipe report, the report's recipe, is slower.
    With --init ENSEMBLE it fine-tunes a trained ensemble end to end instead (branches and head).
    With --teacher it learns from a trained model's predictions as well as the labels
    (distillation).

    Example: fertool train-branch fer.safetensors -o branch1.safetensors --seed 1 --epochs 40
    """
    from fertool.artifacts import check_output_path, load_artifact, save_tensors
    from fertool.branch_run import (
        BranchJob,
        branch_config,
        default_output,
        load_start,
        load_teacher,
        train_branch_job,
    )
    from fertool.checkpoint import run_checkpoint
    from fertool.distributed import process_group
    from fertool.runtime import resolve_device

    if log is not None:
        check_output_path(log, inputs=[data, init, teacher])
    dataset = load_artifact(data, expect="dataset")
    teacher_file, teacher_sha256 = (
        load_teacher(teacher, dataset) if teacher is not None else (None, "")
    )
    start, start_sha256 = load_start(init, dataset) if init is not None else (None, "")
    output = output or default_output(seed, start)
    check_output_path(output, inputs=[data, init, teacher])
    given = {
        "arch": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "classifier_lr": classifier_lr,
        "label_smoothing": label_smoothing,
        "augment_preset": augment_preset,
        "augment_warmup": augment_warmup,
        "mixup": mixup,
        "dropout": dropout,
        "teacher_weight": teacher_weight,
    }
    given = {k: (v.value if isinstance(v, Enum) else v) for k, v in given.items()}
    config = branch_config(
        recipe.value,
        given,
        start,
        has_teacher=teacher is not None,
        augment=augment,
        normalize=normalize,
        val_split=val_split.value,
        seed=seed,
        device=device,
        precision=precision.value,
        init=start_sha256,
        teacher=teacher_sha256,
        temperature=temperature,
    )
    config.validate()
    checkpoint = run_checkpoint(output, resume)
    job = BranchJob(
        config=config,
        init=init,
        teacher=teacher,
        checkpoint=checkpoint,
        resume=resume,
        command=recorded_command(),
    )
    with process_group(resolve_device(device)) as cluster:
        # Under torchrun every rank trains; rank 0 alone reports, checkpoints and writes.
        main = cluster.is_main
        with (
            resumable(checkpoint, quiet=not main),
            ProgressReporter(log if main else None, main) as reporter,
        ):
            made = train_branch_job(
                dataset, job, reporter, cluster, start=start, teacher=teacher_file
            )
    if not cluster.is_main:
        return
    save_tensors(output, made.tensors, kind=made.kind, meta=made.meta)
    checkpoint.unlink(missing_ok=True)
    if as_json:
        print_json({"output": str(output), **made.summary})
        return
    s = made.summary
    out.print(
        f"{output}: best {s['val_split']} accuracy {s['best_val_accuracy']:.2%} at epoch "
        f"{s['best_epoch']}/{s['epochs']}; {s['images_per_second']:,.0f} train images/s, "
        f"{s['seconds']:.0f} s on {s['device']} ({s['precision']})",
        highlight=False,
    )
