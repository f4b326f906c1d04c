"""stats.py and calibration.py against answers worked out by hand or known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from fertool.calibration import fit_temperature, tempered_log_probs
from fertool.evaluate import log_mean_softmax, tta_logits
from fertool.metrics import classification_report
from fertool.models import build_classifier
from fertool.stats import (
    accuracy_interval,
    brier_score,
    expected_calibration_error,
    macro_f1,
    macro_f1_interval,
    mcnemar_exact,
    negative_log_likelihood,
    normal_interval,
    paired_comparison,
    probabilities,
    reliability_bins,
)

# ---------------------------------------------------------------- bootstrap


def test_the_accuracy_interval_is_the_binomial_quantiles():
    # Resampling n faces of which k are right draws Binomial(n, k/n) right answers, so the
    # percentile interval's limits are that binomial's 2.5 % and 97.5 % quantiles over n:
    # for 120 of 200, 106/200 and 133/200 (0.53 and 0.665), by hand from the binomial table.
    n, k = 200, 120
    correct = np.array([1] * k + [0] * (n - k))
    low, high = accuracy_interval(correct, resamples=20000, seed=0)
    assert binom.ppf(0.025, n, k / n) == 106 and binom.ppf(0.975, n, k / n) == 133
    assert low == pytest.approx(106 / n, abs=1.01 / n)
    assert high == pytest.approx(133 / n, abs=1.01 / n)


def test_the_normal_interval_by_hand_and_beside_the_bootstrap():
    # 1.96 x sqrt(0.5 x 0.5 / 100) = 0.098.
    assert normal_interval(0.5, 100) == pytest.approx([0.402, 0.598], abs=1e-4)
    assert normal_interval(1.0, 50) == [1.0, 1.0]
    correct = np.arange(3589) < 0.7 * 3589
    low, high = accuracy_interval(correct, resamples=4000)
    assert normal_interval(correct.mean(), 3589) == pytest.approx([low, high], abs=0.002)


def test_the_interval_is_seeded_and_collapses_on_a_constant_sample():
    correct = np.random.default_rng(1).random(500) < 0.6
    assert accuracy_interval(correct, 500, seed=3) == accuracy_interval(correct, 500, seed=3)
    assert accuracy_interval(np.ones(50), 500) == [1.0, 1.0]


def test_macro_f1_by_hand_and_against_the_report():
    # class 0: 1 right of 2, predicted once -> F1 2*1/(2+1) = 2/3; class 1: 2 of 2, predicted 3
    # times -> 2*2/(2+3) = 4/5; macro (2/3 + 4/5) / 2 = 11/15.
    assert macro_f1(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 7) == pytest.approx(11 / 15)
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 7, 300), rng.integers(0, 7, (4, 300))
    for row in range(4):
        onehot = np.eye(7)[predicted[row]]
        expected = classification_report(onehot, labels, list("abcdefg"))["macro_f1"]
        batched = macro_f1(predicted, np.broadcast_to(labels, predicted.shape), 7)
        assert batched[row] == pytest.approx(expected)


def test_the_macro_f1_interval_holds_the_value():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 1000)
    predicted = np.where(rng.random(1000) < 0.6, labels, rng.integers(0, 7, 1000))
    low, high = macro_f1_interval(predicted, labels, 7, resamples=500)
    assert low < macro_f1(predicted, labels, 7) < high
    assert 0.02 < high - low < 0.15  # about 2 x 1.96 x 0.015 for 1,000 faces


# ---------------------------------------------------------------- McNemar and paired comparison


def test_mcnemar_on_a_hand_made_table():
    # Of 10 discordant faces, A alone is right on 1: p = 2 * P(X <= 1), X ~ Bin(10, 1/2)
    # = 2 * (1 + 10) / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_a_paired_comparison_counts_the_2x2_table():
    labels = np.zeros(10, dtype=int)
    # A right on faces 0-5, B right on 3-9: both 3, only A 3, only B 4, neither 0.
    probs_a = np.tile([0.1, 0.9], (10, 1))
    probs_a[:6] = [0.9, 0.1]
    probs_b = np.tile([0.1, 0.9], (10, 1))
    probs_b[3:] = [0.8, 0.2]
    result = paired_comparison(probs_a, probs_b, labels, ["x", "y"], resamples=200)
    assert (result["only_a_right"], result["only_b_right"]) == (3, 4)
    assert (result["both_right"], result["both_wrong"]) == (3, 0)
    assert result["difference"] == pytest.approx(0.1)
    assert result["mcnemar_p"] == pytest.approx(1.0)  # 3 against 4: no evidence either way
    assert result["difference_ci95"][0] < 0.1 < result["difference_ci95"][1]
    assert not result["distinguishable"]
    assert result["per_class"]["x"]["difference"] == pytest.approx(0.1)


# ---------------------------------------------------------------- calibration scores


def test_nll_brier_and_ece_of_two_faces_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    labels = np.array([0, 1])  # the first right at 0.9, the second wrong at 0.6
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -(math.log(0.9) + math.log(0.4)) / 2
    )
    assert brier_score(probs, labels) == pytest.approx((0.02 + 0.72) / 2)
    # Each face alone in its bin: gaps 1 - 0.9 and 0.6 - 0, weighted by half each.
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6) / 2)


def synthetic_confidences(
    n: int, overconfident: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Three-class probabilities whose top class is right with probability `confidence` (a
    calibrated model), or right only half the time whatever the confidence says."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.4, 1.0, n)
    rest = (1 - confidence) / 2
    probs = np.stack([confidence, rest, rest], axis=1)
    right = rng.random(n) < (0.5 if overconfident else confidence)
    labels = np.where(right, 0, rng.integers(1, 3, n))
    return probs, labels


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    assert expected_calibration_error(*synthetic_confidences(100_000, False)) < 0.01
    probs, labels = synthetic_confidences(100_000, True)
    # Mean confidence 0.7 against accuracy 0.5: a gap of about 0.2 (larger where confident).
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2, abs=0.02)


def test_reliability_bins_cover_every_face():
    probs, labels = synthetic_confidences(1000, False)
    table = reliability_bins(probs, labels, bins=15)
    assert table["counts"].sum() == 1000 and len(table["edges"]) == 16
    filled = table["counts"] > 0
    lower, upper = table["edges"][:-1][filled], table["edges"][1:][filled]
    assert np.all((table["confidence"][filled] > lower) & (table["confidence"][filled] <= upper))


def test_old_predictions_give_probabilities_from_their_logits():
    logits = np.array([[2.0, 0.0, -1.0]])
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(probabilities({"logits": logits}), expected)
    stored = {"logits": logits, "probabilities": np.array([[0.5, 0.25, 0.25]])}
    assert np.allclose(probabilities(stored), [[0.5, 0.25, 0.25]])


# ---------------------------------------------------------------- temperature scaling


def test_temperature_scaling_undoes_overconfidence():
    # Labels drawn from softmax(z); the "model" says 3z: three times too sure. The fitted T is
    # about 3, and NLL falls to that of the true probabilities.
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(5000, 7, generator=generator)
    labels = torch.multinomial(z.softmax(1), 1, generator=generator).squeeze(1)
    logits = (3 * z).unsqueeze(0)  # one view
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    nll = lambda t: torch.nn.functional.nll_loss(tempered_log_probs(logits, t), labels).item()  # noqa: E731
    assert nll(temperature) < nll(1.0) - 0.3
    assert nll(temperature) == pytest.approx(
        torch.nn.functional.cross_entropy(z, labels).item(), abs=0.03
    )


def test_tempered_views_are_the_mean_of_the_tempered_softmax():
    logits = torch.randn(2, 5, 7)
    expected = (logits / 2).softmax(-1).mean(0).log()
    assert torch.allclose(tempered_log_probs(logits, 2.0), expected, atol=1e-6)


def test_tta_logits_divide_by_the_models_temperature():
    torch.manual_seed(0)
    model = build_classifier("tiny", {}, None).eval()
    batch = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        raw = model(batch)
        flipped = model(batch.flip(-1))
        model.temperature = 2.0
        assert torch.allclose(tta_logits(model, batch, "none"), raw / 2)
        expected = log_mean_softmax(torch.stack([raw / 2, flipped / 2]))
        assert torch.allclose(tta_logits(model, batch, "flip"), expected, atol=1e-6)
        # The predicted class never moves.
        assert torch.equal(tta_logits(model, batch, "none").argmax(1), raw.argmax(1))
