"""fertool's command line: thin commands over the library, one module per command.

`base` holds the Typer app, the consoles, the error wrapper and the shared options; each command
module imports it and the library, never another command module, and nothing in the library
imports `fertool.cli`. Importing this package registers every command on `app`.

    fertool prepare --synthetic 3000 -o data.safetensors
    fertool train-branch data.safetensors -o branch1.safetensors --seed 1 --epochs 5
    fertool eval data.safetensors branch1.safetensors --split val -o preds.npz
"""

from __future__ import annotations

from fertool.cli import (  # noqa: F401  (each registers its command on `app`, in --help's order)
    calibrate,
    compare,
    confusion,
    curves,
    ensemble,
    eval,
    export,
    filters,
    info,
    predict,
    prepare,
    reliability,
    saliency,
    timeline,
    train_branch,
)
from fertool.cli.base import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (`fertool`, `python -m fertool`)."""
    # A fixed name: usage lines and shell completion say `fertool` under `python -m` too.
    app(prog_name="fertool")
