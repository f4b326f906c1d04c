"""fertool ensemble: join frozen branches with a trained head, or average them.

fertool ensemble fer.safetensors b1.safetensors b2.safetensors b3.safetensors \\
    -o ensemble.safetensors
fertool ensemble fer.safetensors b1.safetensors b2.safetensors --average -o average.safetensors
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

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
from fertool.configs import EnsembleConfig
from fertool.options import Features, Precision, Split, Views

DEFAULTS = EnsembleConfig()


@command("ensemble", panel=DATA_PANEL)
def ensemble_command(
    data: DataArg,
    branch_paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="BRANCH...", help="Two or more branch artifacts.", show_default=False
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Ensemble artifact to write.")
    ] = Path("ensemble.safetensors"),
    features: Annotated[
        Features,
        typer.Option(
            "--features",
            help="What the head reads: penultimate (the last FeatEx block's features) or logits.",
        ),
    ] = Features(DEFAULTS.features),
    average: Annotated[
        bool,
        typer.Option(
            "--average", help="No head: average the branches' probabilities (the baseline)."
        ),
    ] = False,
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Passes of the head over the training split.")
    ] = DEFAULTS.epochs,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per step.")
    ] = DEFAULTS.batch_size,
    lr: Annotated[
        float, typer.Option("--lr", min=0, help="AdamW learning rate of the head.")
    ] = DEFAULTS.lr,
    weight_decay: Annotated[
        float,
        typer.Option("--weight-decay", min=0, help="AdamW's decoupled weight decay of the head."),
    ] = DEFAULTS.weight_decay,
    hidden: Annotated[
        str,
        typer.Option(
            "--hidden", help="Widths of the head's hidden layers, or none (one linear layer)."
        ),
    ] = ",".join(map(str, DEFAULTS.hidden)),
    dropout: Annotated[
        float,
        typer.Option("--dropout", min=0, max=1, help="Dropout before each of the head's layers."),
    ] = DEFAULTS.dropout,
    augment: Annotated[
        bool,
        typer.Option(
            "--augment/--no-augment",
            help="Augment images on their way through the frozen branches (slower).",
        ),
    ] = DEFAULTS.augment,
    views: Annotated[
        Views,
        typer.Option(
            "--views",
            help="Train the head on these views of each face and pick its epoch on their mean "
            "(as eval's --tta, which then uses them).",
        ),
    ] = Views(DEFAULTS.views),
    val_split: Annotated[
        Split, typer.Option("--val-split", help="Split that selects the best epoch.")
    ] = Split(DEFAULTS.val_split),
    train_split: Annotated[
        Split,
        typer.Option(
            "--train-split",
            help="Split the head learns from: train, or holdout (faces set aside by prepare "
            "--holdout, which the branches never saw).",
        ),
    ] = Split(DEFAULTS.train_split),
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the head's weights and shuffling.")
    ] = DEFAULTS.seed,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    log: LogOpt = None,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Join frozen branches with three dense layers (or average them), selected on validation.

    Example: fertool ensemble fer.safetensors branch*.safetensors -o ensemble.safetensors
    """
    from fertool.artifacts import check_output_path, load_artifact, save_tensors
    from fertool.checkpoint import checkpoint_path, run_checkpoint
    from fertool.ensemble import make_ensemble, parse_hidden

    check_output_path(output, inputs=[data, *branch_paths])
    if log is not None:  # a bad log path fails now, not after the cached passes and an epoch
        check_output_path(log, inputs=[data, *branch_paths])
    config = EnsembleConfig(
        features=features.value,
        hidden=parse_hidden(hidden),
        dropout=dropout,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        augment=augment,
        views=views.value,
        val_split=val_split.value,
        train_split=train_split.value,
        seed=seed,
        device=device,
        precision=precision.value,
    )
    config.validate()
    dataset = load_artifact(data, expect="dataset")
    branches = [load_artifact(p, expect="branch") for p in branch_paths]
    # An average trains nothing: no checkpoint to keep, nothing to resume.
    checkpoint = checkpoint_path(output) if average else run_checkpoint(output, resume)
    guard = contextlib.nullcontext() if average else resumable(checkpoint)
    with guard, ProgressReporter(log) as reporter:
        model, meta = make_ensemble(
            dataset, branches, config, average, reporter, None if average else checkpoint, resume
        )
    save_tensors(
        output, model.state_dict(), kind="ensemble", meta={**meta, "command": recorded_command()}
    )
    checkpoint.unlink(missing_ok=True)
    accuracy = meta["metrics"]["best_val_accuracy"]
    branch_accuracy = {
        str(b.path): b.meta.get("metrics", {}).get("best_val_accuracy") for b in branches
    }
    summary = {
        "output": str(output),
        "mode": "average" if average else config.features,
        "best_val_accuracy": accuracy,
        "epochs": len(meta["history"]),
        "branches": branch_accuracy,
        "val_split": config.val_split,
    }
    if as_json:
        print_json(summary)
        return
    for path, acc in branch_accuracy.items():
        line = (
            f"  branch {path}: {config.val_split} accuracy {acc:.2%}"
            if acc is not None
            else f"  branch {path}"
        )
        out.print(line, highlight=False)
    out.print(
        f"{output}: {summary['mode']} ensemble of {len(branches)} branches, "
        f"{config.val_split} accuracy {accuracy:.2%}",
        highlight=False,
    )
