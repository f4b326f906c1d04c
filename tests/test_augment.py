"""Batched augmentation: identity at zero strength, flips, reproducibility, bounds."""

from __future__ import annotations

import torch

from fertool.augment import Augment, AugmentConfig


def faces(n: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 1, 48, 48)


def test_zero_strength_is_the_identity():
    x = faces()
    aug = Augment(
        AugmentConfig(flip=False, rotate_degrees=0, shift=0, zoom=0),
        torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(aug(x), x, atol=1e-5, rtol=0)


def test_flip_only_mirrors_about_half_the_batch():
    x = faces(64)
    aug = Augment(
        AugmentConfig(flip=True, rotate_degrees=0, shift=0, zoom=0),
        torch.Generator().manual_seed(0),
    )
    y = aug(x)
    mirrored = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(len(x))]
    unchanged = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(len(x))]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 16 < sum(mirrored) < 48


def test_same_generator_seed_gives_the_same_batch():
    x = faces()
    a = Augment(AugmentConfig(), torch.Generator().manual_seed(3))(x)
    b = Augment(AugmentConfig(), torch.Generator().manual_seed(3))(x)
    c = Augment(AugmentConfig(), torch.Generator().manual_seed(4))(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_matrices_stay_within_the_configured_ranges():
    cfg = AugmentConfig(flip=False, rotate_degrees=5, shift=0.1, zoom=0.1)
    theta = Augment(cfg, torch.Generator().manual_seed(0)).matrices(10_000, torch.device("cpu"))
    scale = 1 / theta[:, 0, :2].norm(dim=1)  # rows of a rotation divided by the zoom
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 1, 1]))
    assert scale.min() >= 0.9 - 1e-4 and scale.max() <= 1.1 + 1e-4
    assert angle.abs().max() <= 5 + 1e-3
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-6  # 10 % of a 2-unit side
    assert angle.abs().max() > 4.5  # and the range is used, not just bounded


def test_output_stays_in_pixel_range_and_shape():
    x = faces()
    y = Augment(AugmentConfig(), torch.Generator().manual_seed(0))(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1


def test_erasing_fills_one_rectangle_in_about_the_chosen_share_of_images():
    x = torch.full((400, 1, 48, 48), 0.5)
    cfg = AugmentConfig(flip=False, rotate_degrees=0, shift=0, zoom=0, erase=0.5)
    aug = Augment(cfg, torch.Generator().manual_seed(0))
    masks = aug.erase_masks(400, 48, 48, torch.device("cpu"))
    erased = masks.flatten(1).any(1)
    assert 150 < erased.sum() < 250
    for mask in masks[erased][:50, 0]:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        # A solid rectangle: its bounding box is all True, and its area within the configured
        # bounds.
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()
        assert 0.005 * 48 * 48 <= box.numel() <= 0.3 * 48 * 48
    y = Augment(cfg, torch.Generator().manual_seed(1))(x)
    assert y.min() >= 0 and y.max() <= 1
    changed = (y != 0.5).flatten(1).any(1)
    assert 150 < changed.sum() < 250


def test_presets_name_the_report_recipe_and_a_stronger_one():
    from fertool.augment import PRESETS

    assert PRESETS["report"] == AugmentConfig()
    assert (
        PRESETS["strong"].erase > 0
        and PRESETS["strong"].rotate_degrees > PRESETS["report"].rotate_degrees
    )
