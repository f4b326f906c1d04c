"""fertool reliability: is a model's confidence its accuracy? A reliability diagram.

fertool reliability preds.npz -o rel.png
fertool reliability before.npz after.npz -o rel.png --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fertool.cli.base import ANALYSIS_PANEL, JsonOpt, command, out, print_json


@command(panel=ANALYSIS_PANEL)
def reliability(
    predictions: Annotated[
        list[Path],
        typer.Argument(
            metavar="PREDS...",
            help="Predictions made by `fertool eval ... -o preds.npz`; several are overlaid.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Figure to write (png, pdf or svg).")
    ] = Path("reliability.png"),
    names: Annotated[
        Optional[str],
        typer.Option(
            "--names",
            show_default=False,
            help="Legend names, comma-separated, one per file \\[default: the file names].",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw a reliability diagram (confidence against accuracy, ECE) of one or more predictions
    files.

    Accuracy per confidence bin (15 bins) against the bin's mean confidence, the gap shaded, the
    faces in each bin counted, the expected calibration error in the title. Several files are
    drawn side by side in each bin, with a legend.

    Example: fertool reliability preds.npz -o rel.png
    """
    from fertool.artifacts import check_output_path, load_artifact
    from fertool.errors import BadInputError
    from fertool.plots import reliability_figure, save_figure
    from fertool.stats import ECE_BINS, expected_calibration_error, probabilities, reliability_bins

    check_output_path(output, inputs=predictions)
    labels = [p.stem for p in predictions]
    if names is not None:
        labels = [n.strip() for n in names.split(",")]
        if len(labels) != len(predictions):
            raise BadInputError(
                f"--names {names}: gives {len(labels)} names for {len(predictions)} files; "
                "give one per file"
            )
    tables, eces = [], []
    for path in predictions:
        preds = load_artifact(path, expect="predictions", as_numpy=True)
        probs, truth = probabilities(preds.tensors), preds.tensors["labels"]
        tables.append(reliability_bins(probs, truth))
        eces.append(expected_calibration_error(probs, truth))
    save_figure(reliability_figure(tables, labels, eces), output)
    files: list[dict[str, Any]] = [
        {
            "predictions": str(path),
            "name": name,
            "ece": ece,
            "counts": [int(n) for n in table["counts"]],
            "accuracy": [
                None if n == 0 else float(v) for n, v in zip(table["counts"], table["accuracy"])
            ],
            "confidence": [
                None if n == 0 else float(v) for n, v in zip(table["counts"], table["confidence"])
            ],
        }
        for path, name, table, ece in zip(predictions, labels, tables, eces)
    ]
    summary = {"output": str(output), "bins": ECE_BINS, "files": files}
    if as_json:
        print_json(summary)
        return
    for row in files:
        out.print(f"{row['predictions']}: ECE {row['ece']:.3f} ({ECE_BINS} bins)", highlight=False)
    out.print(f"wrote {output}", highlight=False)
