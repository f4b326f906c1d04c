"""fertool compare: two models' predictions on the same faces, with a paired test.

fertool compare a.npz b.npz
fertool compare a.npz b.npz --grid disagree.png --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from fertool.cli.base import ANALYSIS_PANEL, JsonOpt, command, out, print_json


@command(panel=ANALYSIS_PANEL)
def compare(
    a: Annotated[
        Path,
        typer.Argument(
            metavar="A",
            help="Predictions of model A (`fertool eval ... -o a.npz`).",
            show_default=False,
        ),
    ],
    b: Annotated[
        Path,
        typer.Argument(
            metavar="B",
            help="Predictions of model B on the same split of the same data.",
            show_default=False,
        ),
    ],
    grid: Annotated[
        Optional[Path],
        typer.Option(
            "--grid",
            show_default=False,
            help="Also draw faces where A and B disagree, each titled with both predictions and "
            "the truth (png, pdf or svg).",
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            show_default=False,
            help="The data set the faces of --grid come from \\[default: the one A names].",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=200, help="Most faces in --grid.")
    ] = 32,
    resamples: Annotated[
        int,
        typer.Option(
            "--resamples",
            min=100,
            help="Bootstrap resamples behind the interval of B - A (seeded: the same every run).",
        ),
    ] = 2000,
    as_json: JsonOpt = False,
) -> None:
    """Compare two models on the same faces: the accuracy difference with a paired 95 % interval,
    and McNemar's test.

    Prints each one's accuracy, B - A with a paired bootstrap interval, McNemar's exact test on
    the faces only one of them gets right, and per-class recall differences. Files of other
    faces, labels or order are refused.

    Example: fertool compare a.npz b.npz --grid disagree.png
    """
    from fertool.artifacts import check_output_path, load_artifact
    from fertool.comparison import compare_predictions, disagreements

    if grid is not None:
        check_output_path(grid, inputs=[a, b, data])
    preds_a = load_artifact(a, expect="predictions", as_numpy=True)
    preds_b = load_artifact(b, expect="predictions", as_numpy=True)
    result = compare_predictions(preds_a, preds_b, resamples)
    if grid is not None:
        from fertool.plots import disagreement_figure, save_figure

        images, titles, right = disagreements(preds_a, preds_b, data, limit)
        if len(images):
            heading = (
                f"A = {Path(result['model_a']).name}, B = {Path(result['model_b']).name}: "
                f"{len(images)} of {result['disagree']} faces where they disagree\n"
                "(title blue: A right; orange: B right; grey: neither)"
            )
            save_figure(disagreement_figure(images, titles, right, heading), grid)
            result["grid"] = str(grid)
        result["grid_faces"] = len(images)
    if as_json:
        print_json(result)
        return
    print_summary(result)


def print_summary(result: dict[str, Any]) -> None:
    low, high = result["difference_ci95"]
    out.print(
        f"A {result['a']}: accuracy {result['accuracy_a']:.2%}\n"
        f"B {result['b']}: accuracy {result['accuracy_b']:.2%}\n"
        f"B - A: {result['difference']:+.2%} (95 % interval {low:+.2%} to {high:+.2%}, "
        f"{result['count']} faces of {result['split']}); "
        + ("distinguishable" if result["distinguishable"] else "not distinguishable"),
        highlight=False,
    )
    out.print(
        f"McNemar exact test: only A right on {result['only_a_right']}, only B right on "
        f"{result['only_b_right']}; p = {result['mcnemar_p']:.3g}",
        highlight=False,
    )
    table = Table(title="recall per class")
    for column in ("class", "A", "B", "B - A", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in result["per_class"].items():
        table.add_row(
            name,
            f"{row['recall_a']:.3f}",
            f"{row['recall_b']:.3f}",
            f"{row['difference']:+.3f}",
            str(row["support"]),
        )
    out.print(table)
    if "grid" in result:
        out.print(
            f"{result['grid']}: {result['grid_faces']} faces where they disagree", highlight=False
        )
    elif "grid_faces" in result:
        out.print("no figure: A and B predict the same class on every face", highlight=False)
