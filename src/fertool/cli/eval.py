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
            help="Write the predictions artifact (npz: logits, labels, indices).",
        ),
    ] = None,
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
    """Score a model on one split: accuracy and per-class precision, recall and F1.

    MODEL may be an ONNX export (`fertool export`), run through ONNX Runtime on the CPU: its views
    are built in (--tta auto) and the logits kept are the log of its probabilities.

    Example: fertool eval fer.safetensors branch1.safetensors --split val -o preds.npz --tta flip
    """
    from fertool.artifacts import check_output_path, load_artifact, save_npz
    from fertool.bundled import load_face_model
    from fertool.evaluate import evaluate_model
    from fertool.models import check_model_fits

    if output is not None:
        check_output_path(output, inputs=[data, model_path])
    dataset = load_artifact(data, expect="dataset")
    model = load_face_model(model_path)
    meta, model_name = model.meta, model.name
    check_model_fits(meta, Path(model_name), dataset)
    result = evaluate_model(
        model, meta, dataset, split.value, tta.value, device, precision.value, batch_size
    )
    report = result.report
    if output is not None:
        save_npz(
            output,
            {
                "logits": result.logits.numpy(),
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
