"""fertool info: what an artifact is and where it came from (registered on cli.app).

    fertool info                          # the bundled default model
    fertool info branch1.safetensors      # architecture, data, command, epochs, val accuracy
    fertool info fer.safetensors --json   # a data set: source, counts, sha256

Everything shown is read from the file's own metadata: a model file says how it was made.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from fertool.cli import JsonOpt, app, out, print_json, user_errors
from fertool.schemas import dtype_name


def model_summary(meta: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Provenance of a branch or ensemble: what it is, what it saw, how it was made, how good it is.

    `tensors` are numpy arrays or torch tensors: only their shapes and dtypes are read.
    """
    metrics = meta.get("metrics", {})
    dtypes = {dtype_name(t) for t in tensors.values()}
    config = meta.get("train_config", {})
    summary = {
        "kind": meta["kind"],
        "arch": meta.get("arch"),
        "classes": meta.get("classes"),
        "input_size": meta.get("input_size"),
        "parameters": sum(math.prod(t.shape) for name, t in tensors.items() if not name.endswith("num_batches_tracked")),
        "weights_dtype": ", ".join(sorted(d for d in dtypes if d.startswith(("float", "bfloat")))) or None,
        "data": meta.get("dataset_source"),
        "data_sha256": meta.get("dataset_sha256"),
        "command": meta.get("command"),
        "init": start_provenance(meta.get("init")),  # the branch whose weights this run started from, if any
        "teacher": meta.get("teacher"),  # the predictions a distilled branch learned from, if any
        "epochs": len(meta.get("history", [])) or config.get("epochs"),
        "epochs_before": chain_epochs(meta.get("init")) or None,  # over the whole --init chain
        "best_epoch": metrics.get("best_epoch"),
        "val_split": metrics.get("val_split"),
        "val_accuracy": metrics.get("best_val_accuracy"),
        "tta": meta.get("tta", "none"),
        "seed": meta.get("seed"),
        "device": meta.get("device"),
        "precision": meta.get("precision"),
        "train_seconds": metrics.get("seconds"),
        "fertool_version": meta.get("fertool_version"),
    }
    if "packing" in meta:  # scripts/pack_model.py's measurements: accuracy with the file's TTA and dtype
        summary["packed"] = meta["packing"]
    if meta["kind"] == "ensemble":
        summary["features"] = meta.get("arch_args", {}).get("features")
        summary["head"] = head_shape(meta, tensors)
        # An ensemble trained on from another (train-branch --init) changed its branches too:
        # their records say how they were made and what they scored before that.
        tuned = meta.get("init") is not None
        summary["branches"] = [
            {"arch": b.get("arch"), "seed": b.get("seed"), "val_accuracy": b.get("metrics", {}).get("best_val_accuracy"),
             "epochs": len(b.get("history", [])), "init_epochs": chain_epochs(b.get("init")),
             "command": b.get("command"), "fine_tuned_since": tuned}
            for b in meta.get("branches", [])
        ]
    return summary


def head_shape(meta: dict[str, Any], tensors: dict[str, Any]) -> str:
    """An ensemble's head as its layer widths, read off the weights: '7344 -> 512 -> 256 -> 7, dropout 0.5'."""
    # The head is a Sequential of dropout, linear, ReLU...: its linear layers are the indexed weights.
    weights = sorted((int(name.split(".")[1]), t.shape) for name, t in tensors.items()
                     if name.startswith("head.") and name.endswith(".weight"))
    if not weights:
        return "none: the mean of the branches' probabilities"
    widths = [weights[0][1][1]] + [shape[0] for _, shape in weights]
    return " -> ".join(map(str, widths)) + f", dropout {meta.get('arch_args', {}).get('dropout')}"


def chain_epochs(init: dict[str, Any] | None) -> int:
    """Epochs trained before a run, over its whole --init chain (a branch trained in stages)."""
    total = 0
    while init:
        total += init.get("epochs", 0)
        init = init.get("init")
    return total


def start_provenance(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """An --init record down its chain of starts, without their per-epoch histories (curves draws those)."""
    if not init:
        return None
    return {**{k: v for k, v in init.items() if k != "history"}, "init": start_provenance(init.get("init"))}


def packed_line(packing: dict[str, Any]) -> str:
    """scripts/pack_model.py's record in words: what `eval` gives with the file as it is, then what it weighed.

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


def dataset_summary(meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "dataset", "source": meta.get("source"), "classes": meta.get("classes"),
            "image_size": meta.get("image_size"), "counts": meta.get("counts"), "holdout": meta.get("holdout"),
            "skipped": meta.get("skipped"), "train_mean": meta.get("train_mean"), "train_std": meta.get("train_std"),
            "sha256": meta.get("sha256"), "fertool_version": meta.get("fertool_version")}


@app.command()
@user_errors
def info(
    path: Annotated[Optional[Path], typer.Argument(metavar="[FILE]", help="Any fertool artifact \\[default: the bundled model].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a model (or any artifact) is and how it was made: architecture, data, command, epochs, accuracy.

    Example: fertool info branch1.safetensors
    """
    from fertool.artifacts import MODEL_KINDS, load_artifact
    from fertool.cli_analysis import default_model_path

    path = path or default_model_path()
    artifact = load_artifact(path, as_numpy=True)  # metadata and shapes only: no need to import torch
    if artifact.kind in MODEL_KINDS:
        summary = model_summary(artifact.meta, artifact.tensors)
    elif artifact.kind == "dataset":
        summary = dataset_summary(artifact.meta)
    else:
        summary = {k: v for k, v in artifact.meta.items() if k not in ("history", "param_groups")}
    summary = {"file": str(path), "bytes": path.stat().st_size, **summary}
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
    return (f"{branch['arch']}, seed {branch['seed']}, {branch['epochs']} epochs{after}, val {acc_text}{since}: "
            f"{branch['command']}")


def val_suffix(record: dict[str, Any]) -> str:
    """", val 69.27%" for a record of another model that knows its val accuracy (older files may not)."""
    acc = record.get("val_accuracy")
    return f", val {acc:.2%}" if isinstance(acc, float) else ""


def field_text(key: str, value: Any) -> str:
    """One field of `info`'s summary in words."""
    if key == "init" and isinstance(value, dict):
        return f"{value.get('file')} ({value.get('epochs')} epochs{val_suffix(value)}): {value.get('command')}"
    if key == "teacher" and isinstance(value, dict) and value.get("online"):
        # The teacher ran on one view per face, so its one-view val accuracy is the figure that
        # matters here, not the higher one a packed file reaches with test-time views.
        views = " on single views" if val_suffix(value) else ""
        return f"{value.get('file')} ({value.get('arch')}{val_suffix(value)}{views}), run on every step's transformed faces"
    if key == "teacher" and isinstance(value, dict):
        return f"{value.get('file')}: {value.get('model')}'s predictions (tta {value.get('tta')})"
    if key in ("val_accuracy", "train_mean", "train_std") and isinstance(value, float):
        return f"{value:.2%}" if key == "val_accuracy" else f"{value:.4f}"
    if key == "train_seconds" and isinstance(value, (int, float)):
        return f"{value / 60:.1f} min"
    if key == "holdout" and isinstance(value, dict):
        return f"{value['fraction'] * 100:g} % of each class of train set aside (--holdout-seed {value.get('seed')})"
    if key == "packed" and isinstance(value, dict):
        return packed_line(value)
    if key == "counts" and isinstance(value, dict):
        return ", ".join(f"{split} {c.get('total')}" for split, c in value.items())
    return str(value)
