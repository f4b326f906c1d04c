"""fertool curves: loss and accuracy per epoch, from the histories model files record.

fertool curves branch1.safetensors branch2.safetensors -o curves.png --labels one,two
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fertool.cli.base import ANALYSIS_PANEL, command, out
from fertool.errors import BadInputError


@command(panel=ANALYSIS_PANEL)
def curves(
    models: Annotated[
        list[Path],
        typer.Argument(
            metavar="MODEL...",
            help="Branch or ensemble artifacts with a training history.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path(
        "curves.png"
    ),
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            help="Comma-separated names for the legend \\[default: file names].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Plot loss and train/val accuracy per epoch from models' recorded histories, one line per
    model.

    Example: fertool curves branch1.safetensors branch2.safetensors -o curves.png
    """
    from fertool.artifacts import MODEL_KINDS, check_output_path, load_artifact
    from fertool.plots import curves_figure, save_figure
    from fertool.provenance import run_history

    check_output_path(output, inputs=models)
    names = [s.strip() for s in labels.split(",")] if labels else [p.stem for p in models]
    if len(names) != len(models):
        raise BadInputError(
            f"--labels gives {len(names)} names for {len(models)} models; give one per model"
        )
    histories, earlier = [], []
    for path in models:
        before, history = run_history(load_artifact(path, expect=MODEL_KINDS, as_numpy=True).meta)
        if not history:
            raise BadInputError(
                f"{path}: records no training epochs (an --average ensemble?); pass trained models"
            )
        histories.append(history)
        earlier.append(before)
    save_figure(curves_figure(histories, names, earlier=earlier), output)
    out.print(f"{output}: {len(models)} training run(s)", highlight=False)
