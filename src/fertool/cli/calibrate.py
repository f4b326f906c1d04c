"""fertool calibrate: fit a model's temperature on validation faces, so its confidence means
what it says; eval, predict and export then use it.

fertool calibrate branch1.safetensors fer.safetensors -o calibrated.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fertool.cli.base import (
    DATA_PANEL,
    DataArg,
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    TtaOpt,
    command,
    out,
    print_json,
)
from fertool.options import Precision, Split, Tta


@command(panel=DATA_PANEL)
def calibrate(
    model_path: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A branch or ensemble artifact (the bundled model's file works too).",
            show_default=False,
        ),
    ],
    data: DataArg,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="The calibrated model: the same weights, with a temperature."
        ),
    ] = Path("calibrated.safetensors"),
    split: Annotated[
        Split,
        typer.Option("--split", help="The split to fit on: val or holdout, never test."),
    ] = Split.VAL,
    tta: TtaOpt = Tta.AUTO,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 100,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    as_json: JsonOpt = False,
) -> None:
    """Fit a temperature on validation faces so the model's confidence means what it says, and
    write the model again with it.

    T is fitted by LBFGS on the faces' negative log-likelihood and stored in the file's metadata;
    eval, predict and export then take probabilities as softmax(logits / T). With one view the
    predicted classes stay the same; with several, T reweights the views and may move a few.
    Prints NLL and ECE before and after, and after when T is fitted on half the faces and scored
    on the other half. The test split is refused.

    Example: fertool calibrate branch1.safetensors fer.safetensors -o calibrated.safetensors
    """
    from fertool.artifacts import MODEL_KINDS, check_output_path, load_artifact, save_tensors
    from fertool.calibration import calibrate_model
    from fertool.models import check_model_fits, model_from_artifact

    check_output_path(output, inputs=[model_path, data])
    artifact = load_artifact(model_path, expect=MODEL_KINDS)
    dataset = load_artifact(data, expect="dataset")
    check_model_fits(artifact.meta, model_path, dataset)
    model = model_from_artifact(artifact)  # raw logits: T is fitted from 1, not on top of an old T
    result = calibrate_model(
        model, artifact.meta, dataset, split.value, tta.value, device, precision.value, batch_size
    )
    # Metadata only: the weights are written back untouched, with everything else the file said.
    save_tensors(output, artifact.tensors, artifact.kind, {**artifact.meta, **result.metadata()})
    summary = {
        "model": str(model_path),
        "data": str(data),
        "output": str(output),
        **result.metadata()["calibration"],
        "temperature": result.temperature,
    }
    if as_json:
        print_json(summary)
        return
    held = result.held_out
    out.print(
        f"{output}: temperature {result.temperature:.3f}, fitted on {result.count} {result.split} "
        f"faces (TTA {result.tta})\n"
        f"  on them:          NLL {result.before['nll']:.4f} -> {result.after['nll']:.4f}, "
        f"ECE {result.before['ece']:.4f} -> {result.after['ece']:.4f}\n"
        f"  held-out half:    NLL {held['before']['nll']:.4f} -> {held['after']['nll']:.4f}, "
        f"ECE {held['before']['ece']:.4f} -> {held['after']['ece']:.4f} "
        f"(T {held['temperature']:.3f} fitted on the other half)",
        highlight=False,
    )
