"""Metrics against hand-computed numbers, and split selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fertool.evaluate import predict_logits
from fertool.metrics import classification_report, confusion_matrix

CLASSES = ["a", "b", "c"]


def one_hot_logits(predicted: list[int], num_classes: int = 3) -> np.ndarray:
    return np.eye(num_classes)[predicted] * 5.0


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_report_matches_hand_computed_figures():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = [0, 0, 1, 1, 2, 2]
    report = classification_report(one_hot_logits(predicted), labels, CLASSES)
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in CLASSES)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    assert a["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert report["macro_f1"] == pytest.approx((a["f1"] + b["f1"] + c["f1"]) / 3)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_a_class_never_predicted_scores_zero_not_nan():
    report = classification_report(one_hot_logits([0, 0]), np.array([0, 1]), CLASSES)
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_class"]["c"]["support"] == 0
    assert report["macro_f1"] == pytest.approx(
        (2 / 3 + 0) / 2
    )  # absent classes are left out of the mean


def test_predict_logits_batches_give_the_same_answer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))
    images = torch.randint(0, 256, (37, 48, 48), dtype=torch.uint8)
    whole = predict_logits(model, images, torch.device("cpu"), batch_size=100)
    pieces = predict_logits(model, images, torch.device("cpu"), batch_size=5)
    assert whole.shape == (37, 7)
    torch.testing.assert_close(whole, pieces)
    expected = model(images.float().div(255).reshape(37, -1))
    torch.testing.assert_close(whole, expected.detach(), rtol=1e-5, atol=1e-5)


def test_crops_tta_views_are_the_image_its_mirror_and_zoomed_in_centres() -> None:
    from fertool.evaluate import CROP_ZOOMS, tta_views

    image = torch.zeros(1, 1, 48, 48)
    image[..., 14:34, 14:34] = 1.0  # a centred 20-pixel square
    image[..., 14:34, 14] = 0.5  # marks the left edge, so a mirror shows
    views = tta_views(image, "crops")
    assert len(views) == 2 * len(CROP_ZOOMS) == 6
    assert torch.equal(views[0], image) and torch.equal(views[1], image.flip(-1))
    for zoom, view, mirror in zip(CROP_ZOOMS[1:], views[2::2], views[3::2]):
        width = (view[0, 0, 24] > 0.25).sum().item()  # the square, scaled by the zoom
        assert abs(width - 20 * zoom) <= 1, (zoom, width)
        assert torch.allclose(mirror, view.flip(-1))
    assert tta_views(image, "none") == [image] and len(tta_views(image, "flip")) == 2


def test_crops_tta_averages_the_six_views_softmax(synthetic_data, tiny_branch) -> None:
    from fertool.artifacts import load_artifact
    from fertool.evaluate import predict_logits, select_split, to_input, tta_views
    from fertool.models import load_model

    model, _ = load_model(tiny_branch)
    images, _, _ = select_split(load_artifact(synthetic_data), "val")
    x = to_input(images[:16], torch.device("cpu"))
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in tta_views(x, "crops")]).mean(0).log()
    got = predict_logits(model, images[:16], torch.device("cpu"), tta="crops", batch_size=5)
    assert torch.allclose(got, expected, atol=1e-5)
