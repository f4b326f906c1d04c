"""fertool confusion: the confusion matrix of saved predictions, as a figure and a CSV.

fertool confusion preds.npz -o confusion.png --csv confusion.csv
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from fertool.cli.base import ANALYSIS_PANEL, JsonOpt, command, out, print_json


@command(panel=ANALYSIS_PANEL)
def confusion(
    predictions: Annotated[
        Path,
        typer.Argument(
            metavar="PREDS",
            help="Predictions made by `fertool eval ... -o preds.npz`.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Figure to write (png, pdf or svg).")
    ] = Path("confusion.png"),
    counts: Annotated[
        bool,
        typer.Option(
            "--counts", help="Colour by raw counts instead of the share of each true class."
        ),
    ] = False,
    csv_path: Annotated[
        Optional[Path],
        typer.Option("--csv", help="Also write the matrix of counts as CSV.", show_default=False),
    ] = None,
    title: Annotated[
        Optional[str],
        typer.Option(
            "--title",
            help="Figure title \\[default: model, split and accuracy].",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the confusion matrix of saved predictions; name the most-confused pairs and the worst
    class.

    Example: fertool confusion preds.npz -o confusion.png --csv confusion.csv
    """
    from fertool.artifacts import check_output_path, load_artifact
    from fertool.metrics import classification_report, most_confused, write_matrix_csv
    from fertool.plots import confusion_figure, save_figure

    for path in (output, csv_path):
        if path is not None:
            check_output_path(path, inputs=[predictions])
    preds = load_artifact(predictions, expect="predictions", as_numpy=True)
    classes = preds.meta["classes"]
    report = classification_report(preds.tensors["logits"], preds.tensors["labels"], classes)
    matrix = np.array(report["confusion"])
    heading = (
        title or f"{Path(preds.meta['model']).name} on {preds.meta['split']}"
    )  # the figure adds the accuracy
    save_figure(confusion_figure(matrix, classes, normalize=not counts, title=heading), output)
    if csv_path is not None:
        write_matrix_csv(csv_path, matrix, classes)
    pairs = most_confused(matrix, classes)
    recalls = {
        name: row["recall"] for name, row in report["per_class"].items() if row["support"] > 0
    }
    worst = min(recalls, key=lambda name: recalls[name])
    summary = {
        "output": str(output),
        "accuracy": report["accuracy"],
        "matrix": report["confusion"],
        "classes": classes,
        "most_confused": pairs,
        "worst_class": {"class": worst, "recall": recalls[worst]},
    }
    if csv_path is not None:
        summary["csv"] = str(csv_path)
    if as_json:
        print_json(summary)
        return
    out.print(
        f"{output}: accuracy {report['accuracy']:.2%} on {int(matrix.sum())} images",
        highlight=False,
    )
    for pair in pairs:
        out.print(
            f"  {pair['true']:>8} taken for {pair['predicted']:<8} {pair['rate']:6.1%}  "
            f"({pair['count']} image{'s' if pair['count'] != 1 else ''})",
            highlight=False,
        )
    out.print(f"  worst class: {worst} (recall {recalls[worst]:.1%})", highlight=False)
