"""fertool prepare: read FER2013 (CSV or image folders) or draw synthetic faces into a data set
file.

fertool prepare fer2013.csv -o fer.safetensors
fertool prepare fer2013/ -o fer.safetensors --json
fertool prepare --synthetic 3000 -o synth.safetensors
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from fertool.cli.base import DATA_PANEL, JsonOpt, command, err, out, print_json
from fertool.options import Split


@command(panel=DATA_PANEL)
def prepare(
    source: Annotated[
        Optional[Path],
        typer.Argument(
            show_default=False,
            help="fer2013.csv, or a folder of images (ROOT/<split>/<class>/* or ROOT/<class>/* "
            "with --split).",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Dataset artifact to write.")
    ] = Path("data.safetensors"),
    synthetic: Annotated[
        int,
        typer.Option(
            "--synthetic",
            min=0,
            show_default=False,
            help="Instead of SOURCE, draw N synthetic faces (runs anywhere, no download).",
        ),
    ] = 0,
    split: Annotated[
        Optional[Split],
        typer.Option("--split", show_default=False, help="The split of a ROOT/<class>/* folder."),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad", help="Skip unreadable images (and report how many) instead of stopping."
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic faces.")] = 0,
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout",
            min=0,
            max=1,
            show_default=False,
            help="Set aside this fraction of each class of train as split 'holdout': "
            "no branch trains on it, and `ensemble --train-split holdout` trains a head on it.",
        ),
    ] = 0.0,
    holdout_seed: Annotated[
        int, typer.Option("--holdout-seed", help="Seed that picks the holdout faces.")
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Read FER2013 (Kaggle CSV or image folders) or draw synthetic faces into one dataset file.

    Example: fertool prepare fer2013/ -o fer.safetensors --json
    """
    from fertool.artifacts import check_output_path, save_tensors
    from fertool.prepare import PrepareConfig, prepare_dataset

    check_output_path(output, inputs=[source])
    config = PrepareConfig(
        source=source,
        synthetic=synthetic,
        split=split.value if split else None,
        skip_bad=skip_bad,
        seed=seed,
        holdout=holdout,
        holdout_seed=holdout_seed,
    )
    config.validate()
    started = time.perf_counter()
    reading = source is not None and source.is_dir() and err.is_terminal
    with (
        err.status(Text(f"reading images under {source}"), spinner="dots")
        if reading
        else contextlib.nullcontext()
    ):
        tensors, meta, raw = prepare_dataset(config)
    save_tensors(output, tensors, kind="dataset", meta=meta)
    summary = {
        "output": str(output),
        "source": meta["source"],
        "images": int(len(raw.labels)),
        "counts": {name: c["total"] for name, c in meta["counts"].items()},
        "per_class": meta["counts"],
        "train_mean": meta["train_mean"],
        "train_std": meta["train_std"],
        "skipped": len(raw.skipped),
        "seconds": round(time.perf_counter() - started, 2),
    }
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
    out.print(
        f"{summary['images']} images in {summary['seconds']} s{note}; "
        f"train mean {meta['train_mean']:.4f}, std {meta['train_std']:.4f}"
    )
