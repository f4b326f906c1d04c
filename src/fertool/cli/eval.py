"""fertool eval: score a model on one split of a data set, and keep its predictions.

fertool eval fer.safetensors                                  # the bundled model on val
fertool eval fer.safetensors branch1.safetensors -o preds.npz --tta flip
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from fertool.cli.base import (
    DATA_PANEL,
    DataArg,
    DeviceOpt,
    JsonOpt,
    OnnxModelArg,
    PrecisionOpt,
    TtaOpt,
    command,
    out,
    print_json,
)
from fertool.options import Precision, Split, Tta


@command("eval", panel=DATA_PANEL)
def eval_command(
    data: DataArg,
    model_path: OnnxModelArg = None,
    split: Annotated[Split, typer.Option("--split", help="The split to score.")] = Split.VAL,
    tta: TtaOpt = Tta.AUTO,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "-o",
            "--output",
            show_default=False,
            help="Write the predictions artifact (npz: logits, probabilities, labels, indices).",
        ),
    ] = None,
    resamples: Annotated[
        int,
        typer.Option(
            "--resamples",
            min=100,
            help="Bootstrap resamples behind the 95 % intervals (seeded: the same every run).",
        ),
    ] = 2000,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per forward pass (100 was fastest on a 2-core CPU; GPUs like more).",
        ),
    ] = 100,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.AUTO,
    as_json: JsonOpt = False,
) -> None:
    """Score a model on one split: accuracy and macro F1 with 95 % intervals, per-class scores,
    and how well its confidence is calibrated.

    The intervals are percentile bootstraps (--resamples, seeded); calibration is NLL, Brier
    score and expected calibration error (ECE) over 15 confidence bins.

    MODEL may be an ONNX export (`fertool export`), run through ONNX Runtime on the CPU: its views
    are built in (--tta auto) and the logits kept are the log of its probabilities.

    Example: fertool eval fer.safetensors branch1.safetensors --split val -o preds.npz --tta flip
    """
    from fertool.artifacts import check_output_path, load_artifact, save_npz
    from fertool.bundled import load_face_model
    from fertool.evaluate import evaluate_model
    from fertool.models import check_model_fits, temperature_of
    from fertool.stats import probabilities, uncertainty_report

    if output is not None:
        check_output_path(output, inputs=[data, model_path])
    dataset = load_artifact(data, expect="dataset")
    model = load_face_model(model_path)
    meta, model_name = model.meta, model.name
    check_model_fits(meta, Path(model_name), dataset)
    result = evaluate_model(
        model, meta, dataset, split.value, tta.value, device, precision.value, batch_size
    )
    probs = probabilities({"logits": result.logits.numpy()})
    report = {**result.report, **uncertainty_report(probs, result.labels.numpy(), resamples)}
    if output is not None:
        save_npz(
            output,
            {
                "logits": result.logits.numpy(),
                "probabilities": probs.astype("float32"),
                "labels": result.labels.numpy(),
                "indices": result.indices.numpy(),
            },
            kind="predictions",
            meta={
                "model": model_name,
                "model_kind": meta["kind"],
                "dataset": str(data),
                "dataset_sha256": dataset.meta["sha256"],
                "split": result.split,
                "classes": meta["classes"],
                "tta": result.tta,
                "temperature": temperature_of(meta),
            },
        )
    summary = {
        "model": model_name,
        "data": str(data),
        "split": result.split,
        "tta": result.tta,
        **report,
        "images_per_second": result.images_per_second,
        "seconds": result.seconds,
        "device": result.device,
        "precision": result.precision,
    }
    if output is not None:
        summary["output"] = str(output)
    if as_json:
        print_json(summary)
        return
    views = f", TTA {result.tta}" if result.tta != "none" else ""
    out.print(report_table(report, f"{model_name} on {data} [{result.split}]{views}"))
    out.print(
        f"accuracy {report['accuracy']:.2%} ({report['count']} images), macro F1 "
        f"{report['macro_f1']:.3f}; {result.images_per_second:,.0f} images/s on {result.device}",
        highlight=False,
    )
    out.print(uncertainty_table(report))


def uncertainty_table(report: dict[str, Any]) -> Table:
    """The scores with their 95 % intervals, and the calibration of the confidence."""
    table = Table(title="how far to trust it", caption=report["ci_method"])
    for column in ("score", "value", "95 % interval", "meaning"):
        table.add_column(column, justify="left" if column in ("score", "meaning") else "right")
    low, high = report["accuracy_ci95"]
    table.add_row("accuracy", f"{report['accuracy']:.2%}", f"{low:.2%} - {high:.2%}", "share right")
    low, high = report["macro_f1_ci95"]
    table.add_row(
        "macro F1", f"{report['macro_f1']:.3f}", f"{low:.3f} - {high:.3f}", "classes weighed alike"
    )
    table.add_row("NLL", f"{report['nll']:.3f}", "", "nats per face; lower is better")
    table.add_row("Brier", f"{report['brier']:.3f}", "", "0 perfect, 2 worst")
    table.add_row(
        "ECE", f"{report['ece']:.3f}", "", f"confidence - accuracy gap, {report['ece_bins']} bins"
    )
    return table


def report_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(
            name,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    return table
