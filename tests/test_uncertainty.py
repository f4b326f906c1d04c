"""eval's intervals and calibration, compare, reliability and calibrate through the CLI, on the
outputs of `fertool eval`: real PNGs decoded, numbers checked against the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clitools import assert_real_png, copy_with_meta, invoke, json_of, one_line_error
from scipy.stats import binomtest  # type: ignore[import-untyped]

from fertool.artifacts import load_artifact, save_npz
from fertool.stats import (
    accuracy_interval,
    brier_score,
    expected_calibration_error,
    probabilities,
)


@pytest.fixture(scope="module")
def two_evals(
    synthetic_data: Path, tiny_branch: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict]:
    """The tiny branch scored on val with one view (A) and with its mirror too (B): two sets of
    predictions of the same faces that disagree on some."""
    folder = tmp_path_factory.mktemp("evals")
    a, b = folder / "a.npz", folder / "b.npz"
    report = json_of(
        invoke("eval", synthetic_data, tiny_branch, "--tta", "none", "-o", a, "--json")
    )
    json_of(invoke("eval", synthetic_data, tiny_branch, "--tta", "flip", "-o", b, "--json"))
    return a, b, report


def test_eval_reports_intervals_and_calibration(two_evals):
    a, _, report = two_evals
    low, high = report["accuracy_ci95"]
    assert low <= report["accuracy"] <= high and high - low < 0.2
    low, high = report["macro_f1_ci95"]
    assert low <= report["macro_f1"] <= high
    preds = load_artifact(a)
    probs, labels = probabilities(preds.tensors), preds.tensors["labels"]
    assert report["ece"] == pytest.approx(expected_calibration_error(probs, labels))
    assert report["nll"] == pytest.approx(-np.log(probs[np.arange(len(labels)), labels]).mean())
    assert report["brier"] == pytest.approx(brier_score(probs, labels))
    assert report["ece_bins"] == 15
    # The intervals are the seeded bootstrap of these very faces (eval's default 2,000 resamples).
    assert report["accuracy_ci95"] == pytest.approx(
        accuracy_interval(probs.argmax(1) == labels, 2000, 0)
    )
    assert report["accuracy_ci95"][0] < report["accuracy_ci95"][1]
    # The file keeps the probabilities, rows summing to 1, and the model's temperature.
    assert np.allclose(preds.tensors["probabilities"].sum(1), 1, atol=1e-5)
    assert preds.meta["temperature"] == 1.0


def test_eval_table_shows_the_intervals(synthetic_data, tiny_branch):
    result = invoke("eval", synthetic_data, tiny_branch, "--resamples", "200")
    assert result.exit_code == 0, result.output
    assert "95 % interval" in result.stdout and "ECE" in result.stdout


def test_compare_two_evals_with_a_grid(two_evals, tmp_path):
    a, b, _ = two_evals
    grid = tmp_path / "disagree.png"
    result = json_of(invoke("compare", a, b, "--grid", grid, "--json", "--resamples", "500"))
    labels = load_artifact(a).tensors["labels"]
    right_a = probabilities(load_artifact(a).tensors).argmax(1) == labels
    right_b = probabilities(load_artifact(b).tensors).argmax(1) == labels
    assert result["accuracy_a"] == pytest.approx(right_a.mean())
    assert result["difference"] == pytest.approx(right_b.mean() - right_a.mean())
    assert result["only_a_right"] == int((right_a & ~right_b).sum())
    low, high = result["difference_ci95"]
    assert low <= result["difference"] <= high
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    assert result["only_b_right"] == only_b
    assert result["mcnemar_p"] == pytest.approx(binomtest(only_a, only_a + only_b).pvalue)
    assert result["distinguishable"] == (low > 0 or high < 0)
    assert result["disagree"] > 0, "the mirror should change some predictions"
    assert result["grid_faces"] == min(32, result["disagree"])
    assert_real_png(grid)
    table = invoke("compare", a, b, "--resamples", "200")
    assert "McNemar" in table.stdout and "distinguishable" in table.stdout


def test_compare_refuses_other_faces(two_evals, synthetic_data, tiny_branch, tmp_path):
    a, _, _ = two_evals
    train = tmp_path / "train.npz"
    invoke("eval", synthetic_data, tiny_branch, "--split", "train", "-o", train)
    one_line_error(invoke("compare", a, train), "differ", "same split")
    preds = load_artifact(a)
    shuffled = tmp_path / "shuffled.npz"
    order = np.random.default_rng(0).permutation(len(preds.tensors["labels"]))
    save_npz(
        shuffled,
        {name: array[order] for name, array in preds.tensors.items()},
        kind="predictions",
        meta=preds.meta,
    )
    one_line_error(invoke("compare", a, shuffled), "another order")


def test_a_predictions_file_without_logits_is_refused(two_evals, tmp_path):
    a, _, _ = two_evals
    preds = load_artifact(a)
    bare = tmp_path / "bare.npz"
    save_npz(bare, {"labels": preds.tensors["labels"]}, kind="predictions", meta=preds.meta)
    one_line_error(invoke("reliability", bare, "-o", tmp_path / "r.png"), "bare.npz", "logits")
    one_line_error(invoke("compare", a, bare), "bare.npz", "logits")
    broken = tmp_path / "broken.npz"
    save_npz(
        broken,
        {**preds.tensors, "probabilities": preds.tensors["probabilities"] * 2},
        kind="predictions",
        meta=preds.meta,
    )
    one_line_error(invoke("reliability", broken, "-o", tmp_path / "r.png"), "summing to 1")


def test_reliability_overlays_files(two_evals, tmp_path):
    a, b, _ = two_evals
    # A file from before issue 40, logits only, still draws.
    old = tmp_path / "old.npz"
    preds = load_artifact(a)
    arrays = {k: v for k, v in preds.tensors.items() if k != "probabilities"}
    save_npz(old, arrays, kind="predictions", meta=preds.meta)
    png = tmp_path / "rel.png"
    summary = json_of(
        invoke("reliability", old, b, "-o", png, "--names", "one view,mirror", "--json")
    )
    assert_real_png(png)
    assert [f["name"] for f in summary["files"]] == ["one view", "mirror"]
    first = summary["files"][0]
    assert sum(first["counts"]) == len(preds.tensors["labels"])
    assert first["ece"] == pytest.approx(
        expected_calibration_error(probabilities(preds.tensors), preds.tensors["labels"])
    )
    one_line_error(invoke("reliability", a, b, "-o", png, "--names", "x"), "--names")


def test_calibrate_writes_a_temperature_that_eval_uses(synthetic_data, tiny_branch, tmp_path):
    # Eval of the calibrated file scores the NLL calibrate promised, with accuracy unchanged, and
    # the weights are the file's own, byte for byte.
    from safetensors.torch import load_file

    calibrated = tmp_path / "calibrated.safetensors"
    summary = json_of(invoke("calibrate", tiny_branch, synthetic_data, "-o", calibrated, "--json"))
    assert summary["temperature"] > 0 and summary["split"] == "val"
    assert summary["after"]["nll"] <= summary["before"]["nll"] + 1e-9
    assert {"before", "after", "temperature"} <= summary["held_out"].keys()
    written = load_artifact(calibrated)
    assert written.meta["temperature"] == pytest.approx(summary["temperature"])
    assert written.meta["arch"] == load_artifact(tiny_branch).meta["arch"]
    original, new = load_file(str(tiny_branch)), load_file(str(calibrated))
    assert original.keys() == new.keys()
    assert all(np.array_equal(original[k].numpy(), new[k].numpy()) for k in original)
    before = json_of(invoke("eval", synthetic_data, tiny_branch, "--json", "--resamples", "200"))
    after = json_of(invoke("eval", synthetic_data, calibrated, "--json", "--resamples", "200"))
    assert after["accuracy"] == before["accuracy"]
    assert after["nll"] == pytest.approx(summary["after"]["nll"], rel=1e-4)
    assert before["nll"] == pytest.approx(summary["before"]["nll"], rel=1e-4)
    text = invoke("calibrate", tiny_branch, synthetic_data, "-o", tmp_path / "c2.safetensors")
    assert "held-out half" in text.stdout and "ECE" in text.stdout


def test_calibrate_refuses_the_test_split(synthetic_data, tiny_branch, tmp_path):
    out = tmp_path / "c.safetensors"
    one_line_error(
        invoke("calibrate", tiny_branch, synthetic_data, "--split", "test", "-o", out),
        "--split test",
        "--split val",
    )
    assert not out.exists()


def test_a_bad_temperature_is_refused(tiny_branch, synthetic_data, tmp_path):
    bad = copy_with_meta(tiny_branch, tmp_path / "bad.safetensors", temperature=-1.0)
    one_line_error(invoke("eval", synthetic_data, bad), "temperature", "positive")


def test_the_grid_refuses_another_data_set(two_evals, small_synthetic_data, tmp_path):
    a, b, _ = two_evals
    grid = tmp_path / "g.png"
    one_line_error(
        invoke("compare", a, b, "--grid", grid, "--data", small_synthetic_data),
        "small.safetensors",
        "--data",
    )
    assert not grid.exists()


def test_disagreements_are_titled_with_both_predictions_and_the_truth(two_evals):
    from fertool.comparison import disagreements

    a, b = (load_artifact(p, as_numpy=True) for p in two_evals[:2])
    images, titles, right = disagreements(a, b, limit=5)
    assert images.dtype == np.uint8 and images.shape[1:] == (48, 48) and 0 < len(images) <= 5
    classes = a.meta["classes"]
    for title, (a_right, b_right) in zip(titles, right):
        pred_a, pred_b, truth = (line.split(": ")[1] for line in title.splitlines())
        assert {pred_a, pred_b, truth} <= set(classes) and pred_a != pred_b
        assert a_right == (pred_a == truth) and b_right == (pred_b == truth)
