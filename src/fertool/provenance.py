"""What a model file records of how it was made, and reading that record back.

A branch trained from another's weights (`train-branch --init`) stores the start's record under
`init`, and that start may have its own: a chain, oldest last. Everything that walks it goes
through `init_chain`.

    from fertool.provenance import chain_epochs, run_history
    earlier, own = run_history(artifact.meta)   # epochs numbered on one axis, for `curves`
    chain_epochs(artifact.meta.get("init"))     # epochs trained before this run
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Iterator

from fertool.artifacts import Artifact, load_artifact
from fertool.schemas import dtype_name

Record = dict[str, Any]


def init_chain(init: Record | None) -> Iterator[Record]:
    """The --init records of a run, its own start first, then that start's start, and so on."""
    while init:
        yield init
        init = init.get("init")


def chain_epochs(init: Record | None) -> int:
    """Epochs trained before a run, over its whole --init chain (a branch trained in stages)."""
    return sum(start.get("epochs", 0) for start in init_chain(init))


def start_provenance(init: Record | None) -> Record | None:
    """An --init record down its chain, without the per-epoch histories (`curves` draws those)."""
    if not init:
        return None
    own = {k: v for k, v in init.items() if k != "history"}
    return {**own, "init": start_provenance(init.get("init"))}


def run_history(meta: Record) -> tuple[list[Record], list[Record]]:
    """(the epochs of the runs a branch continued with --init, oldest first; its own epochs),
    numbered on one axis: a branch trained 10 epochs from a 22-epoch start has epochs 23-32.

    Files made before the start's history was recorded give no earlier epochs, but keep the
    numbering, so `fertool curves start.safetensors longer.safetensors` still lines them up.
    """
    earlier: list[Record] = []
    offset = 0
    for start in reversed(list(init_chain(meta.get("init")))):
        earlier += [
            {**record, "epoch": offset + i + 1}
            for i, record in enumerate(start.get("history") or [])
        ]
        offset += start.get("epochs", 0)
    own = [
        {**record, "epoch": offset + i + 1} for i, record in enumerate(meta.get("history") or [])
    ]
    return earlier, own


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_with_digest(path: Path, expect: str | tuple[str, ...]) -> tuple[Artifact, str]:
    """(artifact, sha256 of its file) for a file a run learns from (--init, --teacher).

    The digest goes into the run's settings, so a checkpoint resumes only with the same file.
    """
    return load_artifact(path, expect=expect), file_sha256(path)


def init_provenance(path: Path, sha256: str, meta: Record) -> Record:
    """What a model trained from another's weights records of that start (shown by fertool info)."""
    metrics = meta.get("metrics", {})
    history = meta.get("history", [])
    # The start's epochs travel along, so `curves` draws the whole run without the start's file.
    return {
        "file": str(path),
        "sha256": sha256,
        "command": meta.get("command"),
        "epochs": len(history),
        "val_accuracy": metrics.get("best_val_accuracy"),
        "history": history,
        "dataset_sha256": meta.get("dataset_sha256"),
        "init": meta.get("init"),
    }


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
        "parameters": sum(
            math.prod(t.shape)
            for name, t in tensors.items()
            if not name.endswith("num_batches_tracked")
        ),
        "weights_dtype": ", ".join(sorted(d for d in dtypes if d.startswith(("float", "bfloat"))))
        or None,
        "data": meta.get("dataset_source"),
        "data_sha256": meta.get("dataset_sha256"),
        "command": meta.get("command"),
        "init": start_provenance(
            meta.get("init")
        ),  # the branch whose weights this run started from, if any
        "teacher": meta.get("teacher"),  # the predictions a distilled branch learned from, if any
        "epochs": len(meta.get("history", [])) or config.get("epochs"),
        "epochs_before": chain_epochs(meta.get("init")) or None,  # over the whole --init chain
        "best_epoch": metrics.get("best_epoch"),
        "val_split": metrics.get("val_split"),
        "val_accuracy": metrics.get("best_val_accuracy"),
        "tta": meta.get("tta", "none"),
        "temperature": meta.get("temperature"),  # fertool calibrate's; none: as trained
        "seed": meta.get("seed"),
        "device": meta.get("device"),
        "precision": meta.get("precision"),
        "train_seconds": metrics.get("seconds"),
        "fertool_version": meta.get("fertool_version"),
    }
    if (
        "packing" in meta
    ):  # scripts/pack_model.py's measurements: accuracy with the file's TTA and dtype
        summary["packed"] = meta["packing"]
    if meta["kind"] == "ensemble":
        summary["features"] = meta.get("arch_args", {}).get("features")
        summary["head"] = head_shape(meta, tensors)
        # An ensemble trained on from another (train-branch --init) changed its branches too:
        # their records say how they were made and what they scored before that.
        tuned = meta.get("init") is not None
        summary["branches"] = [
            {
                "arch": b.get("arch"),
                "seed": b.get("seed"),
                "val_accuracy": b.get("metrics", {}).get("best_val_accuracy"),
                "epochs": len(b.get("history", [])),
                "init_epochs": chain_epochs(b.get("init")),
                "command": b.get("command"),
                "fine_tuned_since": tuned,
            }
            for b in meta.get("branches", [])
        ]
    return summary


def head_shape(meta: dict[str, Any], tensors: dict[str, Any]) -> str:
    """An ensemble's head as its layer widths, read off the weights: '7344 -> 512 -> 256 -> 7,
    dropout 0.5'."""
    # The head is a Sequential of dropout, linear, ReLU...: its linear layers are the indexed
    # weights.
    weights = sorted(
        (int(name.split(".")[1]), t.shape)
        for name, t in tensors.items()
        if name.startswith("head.") and name.endswith(".weight")
    )
    if not weights:
        return "none: the mean of the branches' probabilities"
    widths = [weights[0][1][1]] + [shape[0] for _, shape in weights]
    return " -> ".join(map(str, widths)) + f", dropout {meta.get('arch_args', {}).get('dropout')}"


def dataset_summary(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "dataset",
        "source": meta.get("source"),
        "classes": meta.get("classes"),
        "image_size": meta.get("image_size"),
        "counts": meta.get("counts"),
        "holdout": meta.get("holdout"),
        "skipped": meta.get("skipped"),
        "train_mean": meta.get("train_mean"),
        "train_std": meta.get("train_std"),
        "sha256": meta.get("sha256"),
        "fertool_version": meta.get("fertool_version"),
    }
