"""Scores of predictions: the confusion matrix, accuracy, per-class precision/recall/F1.

    report = classification_report(logits, labels, CLASSES)   # numpy in, plain Python numbers out

numpy only: `fertool confusion` scores a predictions file without importing torch, which takes
seconds to start.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    flat = labels.astype(np.int64) * num_classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(
    logits: np.ndarray, labels: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class precision/recall/F1/support, as plain Python numbers."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    predicted = logits.argmax(axis=1)
    matrix = confusion_matrix(predicted, labels, len(classes))
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    # A class never predicted (or absent) has precision (recall) 0, not NaN:
    # JSON-friendly and honest.
    precision = np.divide(
        true_positive, predicted_count, out=np.zeros(len(classes)), where=predicted_count > 0
    )
    recall = np.divide(true_positive, support, out=np.zeros(len(classes)), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(classes)), where=denom > 0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    present = support > 0
    return {
        "accuracy": float(true_positive.sum() / max(len(labels), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "count": int(len(labels)),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def most_confused(matrix: np.ndarray, classes: list[str], top: int = 3) -> list[dict[str, Any]]:
    """The off-diagonal cells with the highest share of their true class, largest first."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(rates, 0)
    order = np.dstack(np.unravel_index(np.argsort(-rates, axis=None), rates.shape))[0][:top]
    return [
        {
            "true": classes[i],
            "predicted": classes[j],
            "rate": float(rates[i, j]),
            "count": int(matrix[i, j]),
        }
        for i, j in order
        if matrix[i, j] > 0
    ]


def write_matrix_csv(path: Path, matrix: np.ndarray, classes: list[str]) -> None:
    """The confusion matrix of counts as CSV (rows true, columns predicted), written atomically."""
    from fertool.artifacts import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, matrix):
            writer.writerow([name, *map(int, row)])
