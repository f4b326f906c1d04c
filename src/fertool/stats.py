"""How far to trust a score: bootstrap intervals, calibration (NLL, Brier, ECE) and paired tests.

    probs = probabilities(preds.tensors)                       # N x K, rows summing to 1
    report = uncertainty_report(probs, labels, resamples=2000, seed=0)
    report["accuracy_ci95"], report["ece"]                     # [low, high], a number
    paired = paired_comparison(probs_a, probs_b, labels)       # difference, McNemar p

On FER2013's 3,589 validation faces a 95 % interval of accuracy is about +-1.5 points: a
difference between two models smaller than that is not evidence that one is better. numpy in,
plain Python numbers out; scipy is imported only by the functions that need it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from fertool.errors import BadInputError

ECE_BINS = 15  # the common choice (Guo et al. 2017), so fertool's ECE reads like the papers'
RESAMPLES = 2000  # 95 % percentile limits move by < 0.1 point between 2,000 and 10,000 resamples
CONFIDENCE = 0.95
_BATCH = 250  # resamples drawn at once: 250 x 3,589 indices is 7 MB, not 10,000 x 3,589's 287 MB


def probabilities(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Class probabilities (float64 N x K) of a predictions artifact's arrays: the stored
    `probabilities` where the file has them (fertool >= issue 40), else the softmax of `logits`,
    which is the same thing (with test-time views the logits are the log of the mean softmax)."""
    if "probabilities" in arrays:
        probs = np.asarray(arrays["probabilities"], dtype=np.float64)
        return probs / probs.sum(axis=1, keepdims=True)
    return softmax(np.asarray(arrays["logits"], dtype=np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- calibration


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), in nats; 1e-12 floors a zero so one sure mistake is not infinite."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over faces of the squared distance between the probabilities and the one-hot truth,
    summed over classes (0 is perfect, 2 the worst; Brier's multi-class form)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Faces grouped by confidence (the top probability) into `bins` equal-width bins of (0, 1]:
    each bin's count, mean confidence and accuracy (NaN where a bin is empty), and the edges."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]: a confidence of exactly 1 is in the last bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, confidence, minlength=bins) / counts
        accuracy = np.bincount(which, correct, minlength=bins) / counts
    return {"edges": edges, "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the mean over faces of |accuracy - confidence| of the face's confidence bin, i.e. the
    bins' gaps weighted by their share of the faces (0 is perfectly calibrated)."""
    table = reliability_bins(probs, labels, bins)
    filled = table["counts"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float((gaps * table["counts"][filled]).sum() / max(len(labels), 1))


# ---------------------------------------------------------------- bootstrap intervals


def macro_f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro F1 of each row of `predicted`/`labels` (... x N): the mean F1 of the classes present
    in that row, as metrics.classification_report computes it. Vectorised over leading axes, so
    a bootstrap scores a batch of resamples in one bincount."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    lead = predicted.shape[:-1]
    rows = int(np.prod(lead)) if lead else 1
    flat_pred = predicted.reshape(rows, -1).astype(np.int64)
    flat_true = labels.reshape(rows, -1).astype(np.int64)
    k = num_classes
    offset = np.arange(rows)[:, None] * k * k
    cells = np.bincount((offset + flat_true * k + flat_pred).ravel(), minlength=rows * k * k)
    matrix = cells.reshape(rows, k, k).astype(np.float64)
    tp = np.diagonal(matrix, axis1=1, axis2=2)
    support, predicted_count = matrix.sum(axis=2), matrix.sum(axis=1)
    # F1 = 2 TP / (support + predicted): the same number as 2PR/(P+R), without two divisions.
    denom = support + predicted_count
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    scores = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return scores.reshape(lead) if lead else scores[0]


def bootstrap_interval(
    samples: tuple[np.ndarray, ...],
    statistic: Any,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[float]:
    """[low, high] of a 95 % percentile bootstrap interval of `statistic(*samples, axis=-1)`,
    the samples resampled together (paired: face i of one is face i of the others).

    Percentile, not scipy's default BCa: BCa's jackknife recomputes the statistic once per face
    (3,589 times) and moved FER2013's limits by under 0.1 point; the percentile interval is also
    the one a reader can check by hand (tests/test_stats.py does).
    """
    from scipy.stats import bootstrap  # type: ignore[import-untyped]  # scipy ships no stubs

    if resamples < 100:
        raise BadInputError(f"--resamples {resamples}: use at least 100 (2,000 is the default)")
    if len(samples[0]) < 2:
        value = float(statistic(*samples, axis=-1))
        return [value, value]
    result = bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        paired=True,
        vectorized=True,
        confidence_level=CONFIDENCE,
        method="percentile",
        batch=_BATCH,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return [float(interval.low), float(interval.high)]


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).mean(axis=axis)


def accuracy_interval(
    correct: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> list[float]:
    """95 % bootstrap interval of the share of `correct` (bools or 0/1) that is true."""
    return bootstrap_interval((np.asarray(correct, dtype=np.float64),), _mean, resamples, seed)


def macro_f1_interval(
    predicted: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[float]:
    """95 % bootstrap interval of macro F1, faces resampled with their labels."""

    def statistic(pred: np.ndarray, true: np.ndarray, axis: int = -1) -> np.ndarray:
        return macro_f1(pred, true, num_classes)

    return bootstrap_interval((predicted, labels), statistic, resamples, seed)


def normal_interval(accuracy: float, count: int) -> list[float]:
    """95 % interval of an accuracy from itself and the number of faces alone (the normal
    approximation to the binomial, p +- 1.96 sqrt(p (1 - p) / n)): for results whose
    predictions are gone, where a bootstrap has nothing to resample. Within 0.1 point of the
    bootstrap on FER2013's 3,589 faces (docs/experiments/2026-12-07-uncertainty.md)."""
    half = 1.959964 * math.sqrt(accuracy * (1 - accuracy) / max(count, 1))
    return [max(0.0, accuracy - half), min(1.0, accuracy + half)]


def uncertainty_report(
    probs: np.ndarray, labels: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """What `fertool eval` adds to its scores: 95 % intervals of accuracy and macro F1, NLL,
    Brier and ECE, under plain keys, as plain Python numbers."""
    labels = np.asarray(labels).astype(np.int64)
    predicted = probs.argmax(axis=1)
    return {
        "accuracy_ci95": accuracy_interval(predicted == labels, resamples, seed),
        "macro_f1_ci95": macro_f1_interval(predicted, labels, probs.shape[1], resamples, seed),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "ece_bins": ECE_BINS,
        "ci_method": f"percentile bootstrap, {resamples} resamples, seed {seed}",
    }


# ---------------------------------------------------------------- two models on the same faces


def mcnemar_exact(only_a_right: int, only_b_right: int) -> float:
    """Two-sided p of McNemar's exact test: of the faces exactly one model gets right, is the
    split between them further from half and half than chance would make it? (The binomial
    test of `only_a_right` successes in the discordant faces at p = 0.5.)"""
    from scipy.stats import binomtest

    discordant = only_a_right + only_b_right
    if discordant == 0:
        return 1.0
    return float(binomtest(only_a_right, discordant, 0.5).pvalue)


def paired_comparison(
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Models A and B on the same faces: each one's accuracy, B - A with a paired bootstrap 95 %
    interval, McNemar's exact test on the faces where exactly one is right, and per-class recall
    differences. Pairing matters: both models find the same faces hard, so the difference varies
    far less than either accuracy does."""
    labels = np.asarray(labels).astype(np.int64)
    pred_a, pred_b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    right_a, right_b = pred_a == labels, pred_b == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    difference = right_b.astype(np.float64) - right_a.astype(np.float64)
    interval = bootstrap_interval((difference,), _mean, resamples, seed)
    per_class = {}
    for k, name in enumerate(classes):
        mine = labels == k
        if mine.any():
            recall_a, recall_b = float(right_a[mine].mean()), float(right_b[mine].mean())
            per_class[name] = {
                "support": int(mine.sum()),
                "recall_a": recall_a,
                "recall_b": recall_b,
                "difference": recall_b - recall_a,
            }
    return {
        "count": int(len(labels)),
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "difference": float(difference.mean()),
        "difference_ci95": interval,
        "distinguishable": bool(interval[0] > 0 or interval[1] < 0),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_right": int((right_a & right_b).sum()),
        "both_wrong": int((~right_a & ~right_b).sum()),
        "disagree": int((pred_a != pred_b).sum()),
        "mcnemar_p": mcnemar_exact(only_a, only_b),
        "per_class": per_class,
        "ci_method": f"paired percentile bootstrap, {resamples} resamples, seed {seed}",
    }
