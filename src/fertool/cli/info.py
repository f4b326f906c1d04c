"""fertool info: what an artifact is and where it came from.

    fertool info                          # the bundled default model
    fertool info branch1.safetensors      # architecture, data, command, epochs, val accuracy
    fertool info fer.safetensors --json   # a data set: source, counts, sha256
    fertool info default.onnx             # an export: input, output, views, source model

Everything shown is read from the file's own metadata: a model file says how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from fertool.cli.base import USE_PANEL, JsonOpt, command, out, print_json


def packed_line(packing: dict[str, Any]) -> str:
    """scripts/pack_model.py's record in words: what `eval` gives with the file as it is, then
    what it weighed.

    The file's val_accuracy is the model's as it was trained (one view, full precision); a packed
    file is scored again with its own TTA and weights, and that is the figure `eval` reproduces.
    """
    scores = packing.get("accuracy_fp32", {})
    tried = ", ".join(f"{tta} {acc:.2%}" for tta, acc in scores.items() if isinstance(acc, float))
    kept = packing.get("accuracy_fp16")
    if packing.get("weights") == "fp16" and isinstance(kept, float):
        head = f"{kept:.2%} on {packing.get('split')} with its fp16 weights"
    else:
        head = f"fp32 weights kept (fp16 moved {packing.get('split')} accuracy)"
    return f"{head}; fp32 by --tta: {tried}; from {packing.get('from')}"


@command(panel=USE_PANEL)
def info(
    path: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="[FILE]",
            help="Any fertool artifact or ONNX export \\[default: the bundled model].",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a model (or any artifact) is and how it was made: architecture, data, command,
    epochs, accuracy.

    Example: fertool info branch1.safetensors
    """
    from fertool.artifacts import MODEL_KINDS, load_artifact
    from fertool.bundled import default_model_path, is_onnx
    from fertool.provenance import dataset_summary, model_summary

    path = path or default_model_path()
    if is_onnx(path):
        from fertool.onnxmodel import export_summary

        summary = export_summary(path)  # first: it names a missing or foreign file in one line
        show({"file": str(path), "bytes": path.stat().st_size, **summary}, as_json)
        return
    artifact = load_artifact(
        path, as_numpy=True
    )  # metadata and shapes only: no need to import torch
    if artifact.kind in MODEL_KINDS:
        summary = model_summary(artifact.meta, artifact.tensors)
    elif artifact.kind == "dataset":
        summary = dataset_summary(artifact.meta)
    else:
        summary = {k: v for k, v in artifact.meta.items() if k not in ("history", "param_groups")}
    show({"file": str(path), "bytes": path.stat().st_size, **summary}, as_json)


def show(summary: dict[str, Any], as_json: bool) -> None:
    """The summary as JSON, or a line per field in words."""
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        if value is None:
            continue
        if key == "branches":
            for i, branch in enumerate(value, 1):
                out.print(f"  branch {i}: {escape(shown(branch_text, branch))}", highlight=False)
            continue
        text = shown(field_text, key, value)
        if key == "val_accuracy" and "packed" in summary:
            # The bundled model's trained figure (one view) sits above `tta crops` and would read
            # as the accuracy with it; the packed line is the one `eval` reproduces.
            text += " as trained (packed: what eval gives with this file)"
        out.print(f"[bold]{key:>15}[/] {escape(text)}", markup=True, highlight=False)


def shown(describe: Callable[..., str], *args: Any) -> str:
    """`describe(*args)`, or the raw value where a hand-made file's field has another shape than
    fertool writes (`holdout` without a fraction, say): info still shows it, not a traceback."""
    try:
        return describe(*args)
    except (TypeError, ValueError, KeyError, AttributeError):
        return str(args[-1])


def branch_text(branch: dict[str, Any]) -> str:
    acc = branch["val_accuracy"]
    acc_text = f"{acc:.2%}" if isinstance(acc, float) else "?"
    # A branch trained on from another's weights: its epochs after the start's.
    after = f" after {branch['init_epochs']} (--init)" if branch["init_epochs"] else ""
    since = " (then fine-tuned with the head: see init)" if branch["fine_tuned_since"] else ""
    return (
        f"{branch['arch']}, seed {branch['seed']}, {branch['epochs']} epochs{after}, "
        f"val {acc_text}{since}: {branch['command']}"
    )


def val_suffix(record: dict[str, Any]) -> str:
    """ ", val 69.27%" for a record of another model that knows its val accuracy (older files
    may not)."""
    acc = record.get("val_accuracy")
    return f", val {acc:.2%}" if isinstance(acc, float) else ""


def field_text(key: str, value: Any) -> str:
    """One field of `info`'s summary in words."""
    if key == "temperature":
        return f"{value:.3f} (probabilities are softmax(logits / {value:.3f}): fertool calibrate)"
    if key == "init" and isinstance(value, dict):
        return (
            f"{value.get('file')} ({value.get('epochs')} epochs{val_suffix(value)}): "
            f"{value.get('command')}"
        )
    if key == "teacher" and isinstance(value, dict) and value.get("online"):
        # The teacher ran on one view per face, so its one-view val accuracy is the figure that
        # matters here, not the higher one a packed file reaches with test-time views.
        views = " on single views" if val_suffix(value) else ""
        return (
            f"{value.get('file')} ({value.get('arch')}{val_suffix(value)}{views}), "
            "run on every step's transformed faces"
        )
    if key == "teacher" and isinstance(value, dict):
        return f"{value.get('file')}: {value.get('model')}'s predictions (tta {value.get('tta')})"
    if key in ("val_accuracy", "train_mean", "train_std") and isinstance(value, float):
        return f"{value:.2%}" if key == "val_accuracy" else f"{value:.4f}"
    if key == "train_seconds" and isinstance(value, (int, float)):
        return f"{value / 60:.1f} min"
    if key == "holdout" and isinstance(value, dict):
        return (
            f"{value['fraction'] * 100:g} % of each class of train set aside "
            f"(--holdout-seed {value.get('seed')})"
        )
    if key == "packed" and isinstance(value, dict):
        return packed_line(value)
    if key == "counts" and isinstance(value, dict):
        return ", ".join(f"{split} {c.get('total')}" for split, c in value.items())
    return str(value)
