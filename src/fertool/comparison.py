"""Two models' predictions on the same faces, side by side: `fertool compare`'s library.

    a = load_artifact("a.npz", expect="predictions", as_numpy=True)
    b = load_artifact("b.npz", expect="predictions", as_numpy=True)
    result = compare_predictions(a, b)              # accuracies, B - A with its interval, McNemar
    images, titles, right = disagreements(a, b)     # faces where they differ, for a figure

A paired comparison is only meaningful face by face, so files whose labels, face order, split or
data set differ are refused rather than compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fertool.artifacts import Artifact
from fertool.errors import BadInputError
from fertool.stats import RESAMPLES, paired_comparison, probabilities

FIX = "compare predictions of two models on the same split of the same data (`fertool eval`)"


def check_same_faces(a: Artifact, b: Artifact) -> None:
    """Refuse two predictions files that are not of the same faces in the same order."""
    for key in ("classes", "split"):
        if a.meta[key] != b.meta[key]:
            raise BadInputError(
                f"{b.path}: its {key} {b.meta[key]} differ from {a.path}'s {a.meta[key]}; {FIX}"
            )
    sha_a, sha_b = a.meta.get("dataset_sha256"), b.meta.get("dataset_sha256")
    if sha_a and sha_b and sha_a != sha_b:
        raise BadInputError(f"{b.path}: comes from another data set than {a.path}; {FIX}")
    labels_a, labels_b = a.tensors["labels"], b.tensors["labels"]
    if len(labels_a) != len(labels_b):
        raise BadInputError(f"{b.path}: has {len(labels_b)} faces, {a.path} {len(labels_a)}; {FIX}")
    indices_a, indices_b = a.tensors.get("indices"), b.tensors.get("indices")
    if indices_a is not None and indices_b is not None and not np.array_equal(indices_a, indices_b):
        raise BadInputError(f"{b.path}: holds the faces in another order than {a.path}; {FIX}")
    if not np.array_equal(labels_a, labels_b):
        raise BadInputError(f"{b.path}: its labels differ from {a.path}'s; {FIX}")


def compare_predictions(
    a: Artifact, b: Artifact, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """`fertool compare`'s result: stats.paired_comparison of B against A, with the files named."""
    check_same_faces(a, b)
    result = paired_comparison(
        probabilities(a.tensors),
        probabilities(b.tensors),
        a.tensors["labels"],
        list(a.meta["classes"]),
        resamples,
        seed,
    )
    return {
        "a": str(a.path),
        "b": str(b.path),
        "model_a": a.meta["model"],
        "model_b": b.meta["model"],
        "split": a.meta["split"],
        **result,
    }


def disagreements(
    a: Artifact, b: Artifact, data: Path | None = None, limit: int = 32
) -> tuple[np.ndarray, list[str], list[tuple[bool, bool]]]:
    """Up to `limit` faces where A and B predict different classes (uint8 N x H x W, evenly
    spread over the file's order), a three-line title for each (A's prediction, B's, the truth)
    and whether A and B are right. The faces come from `data`, else from the data set the
    predictions name."""
    from fertool.artifacts import load_artifact

    check_same_faces(a, b)
    if "indices" not in a.tensors:
        raise BadInputError(
            f"{a.path}: has no 'indices' array, so its faces cannot be found in a data set; "
            "write it again with `fertool eval DATA MODEL -o preds.npz`"
        )
    source = data if data is not None else Path(str(a.meta.get("dataset", "")))
    if data is None and not source.is_file():
        raise BadInputError(
            f"{a.path}: names the data set {source}, which is not there; pass it with --data"
        )
    dataset = load_artifact(source, expect="dataset", as_numpy=True)
    wanted = a.meta.get("dataset_sha256")
    if wanted and dataset.meta.get("sha256") != wanted:
        raise BadInputError(
            f"{source}: is not the data set {a.path} was scored on; pass that one with --data"
        )
    classes = list(a.meta["classes"])
    labels = np.asarray(a.tensors["labels"])
    pred_a = probabilities(a.tensors).argmax(axis=1)
    pred_b = probabilities(b.tensors).argmax(axis=1)
    differ = np.flatnonzero(pred_a != pred_b)
    # Spread over the file, not its first faces: data sets are often sorted by class.
    rows = (
        differ[
            np.unique(np.linspace(0, len(differ) - 1, min(limit, len(differ))).round()).astype(
                np.int64
            )
        ]
        if len(differ)
        else differ
    )
    indices = np.asarray(a.tensors["indices"])[rows]
    if len(indices) and indices.max() >= len(dataset.tensors["images"]):
        raise BadInputError(
            f"{source}: has {len(dataset.tensors['images'])} faces, fewer than {a.path} points "
            "to; pass the data set it was scored on with --data"
        )
    images = np.asarray(dataset.tensors["images"])[indices]
    titles = [
        f"A: {classes[pred_a[r]]}\nB: {classes[pred_b[r]]}\ntrue: {classes[labels[r]]}"
        for r in rows
    ]
    right = [(bool(pred_a[r] == labels[r]), bool(pred_b[r] == labels[r])) for r in rows]
    return images, titles, right
