"""Figures: each writes a real, non-blank PNG of a sensible size, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fertool.data import CLASSES
from fertool.errors import BadInputError
from fertool.plots import (
    activations_figure,
    confusion_figure,
    curves_figure,
    filters_figure,
    grid_shape,
    saliency_figure,
    save_figure,
)

RNG = np.random.default_rng(0)


def face(n: int) -> np.ndarray:
    """n smooth blobby 48 x 48 'faces' in [0, 1]: enough structure to see in a figure."""
    y, x = np.mgrid[0:48, 0:48] / 47.0
    centres = RNG.random((n, 2))
    return np.exp(-((x - centres[:, :1, None]) ** 2 + (y - centres[:, 1:, None]) ** 2) * 8).astype(
        np.float32
    )


def check_png(
    path: Path, min_size: tuple[int, int], max_size: tuple[int, int] = (4000, 8000)
) -> np.ndarray:
    """Decode the file and check it looks like a figure: not tiny, not huge, not blank."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], (
        width,
        height,
    )
    assert pixels.std() > 20, "nearly blank"
    packed = (
        (pixels[..., 0].astype(np.int32) << 16)
        | (pixels[..., 1].astype(np.int32) << 8)
        | pixels[..., 2]
    )
    assert len(np.unique(packed)) > 100, "too few colours: nothing drawn?"
    assert not list(path.parent.glob("*.part")), "temporary file left behind"
    return pixels


def confusion() -> np.ndarray:
    matrix = RNG.integers(0, 6, (7, 7))
    matrix[np.diag_indices(7)] += RNG.integers(30, 80, 7)
    return matrix


def history(epochs: int, best: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss": 2 / e,
            "val_loss": 2 / e + 0.02 * e,
            "train_accuracy": 1 - 0.7 / e,
            "val_accuracy": 0.8 - abs(e - best) * 0.02,
        }
        for e in range(1, epochs + 1)
    ]


def test_confusion_figure(tmp_path):
    path = tmp_path / "confusion.png"
    fig = confusion_figure(confusion(), CLASSES, normalize=True, title="test split")
    title = fig.axes[0].get_title()
    assert "test split" in title and "accuracy" in title
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(CLASSES)
    assert (
        fig.axes[0].get_xlabel() == "predicted class" and fig.axes[0].get_ylabel() == "true class"
    )
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert len(cells) == 49
    assert (
        fig.axes[1].get_ylabel() == "fraction of the true class"
    )  # the colour bar says what colour means
    save_figure(fig, path)
    check_png(path, min_size=(800, 700))


def test_confusion_normalises_rows_and_survives_empty_classes(tmp_path):
    matrix = confusion()
    matrix[1] = 0  # a class with no images: its row stays 0, not NaN
    fig = confusion_figure(matrix, CLASSES, normalize=True)
    values = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(values).sum(axis=1), [1, 0, 1, 1, 1, 1, 1])
    save_figure(fig, tmp_path / "c.png")
    counts = confusion_figure(matrix, CLASSES, normalize=False)
    assert counts.axes[1].get_ylabel() == "images"
    save_figure(counts, tmp_path / "counts.png")
    check_png(tmp_path / "counts.png", min_size=(800, 700))
    with pytest.raises(ValueError):
        confusion_figure(np.ones((3, 3)), CLASSES)


def test_saliency_figure(tmp_path):
    images, maps = face(4), face(4)
    maps[3] = 0  # an all-zero map (Grad-CAM can give one) still draws
    fig = saliency_figure(images, maps, [f"happy {p}%" for p in (93, 80, 70, 60)], "gradcam")
    assert "Grad-CAM" in fig.get_suptitle()
    save_figure(fig, tmp_path / "saliency.png")
    check_png(tmp_path / "saliency.png", min_size=(900, 1200))
    many = saliency_figure(face(16), face(16), ["sad 50%"] * 16, "gradient")
    save_figure(many, tmp_path / "many.png")
    pixels = check_png(tmp_path / "many.png", min_size=(900, 4000), max_size=(2000, 8000))
    assert pixels.shape[0] / pixels.shape[1] < 6  # one readable row per image, not a sliver


def test_filters_figure_makes_a_near_square_grid(tmp_path):
    assert grid_shape(272) == (16, 17)
    assert grid_shape(64) == (8, 8)
    assert grid_shape(7) == (3, 3)
    fig = filters_figure(
        face(20), list(range(100, 120)), "featex1", inactive=[i % 5 == 0 for i in range(20)]
    )
    assert "off" in fig.get_suptitle()
    save_figure(fig, tmp_path / "filters.png")
    pixels = check_png(tmp_path / "filters.png", min_size=(700, 500))
    assert 0.6 < pixels.shape[1] / pixels.shape[0] < 1.8


def test_activations_figure(tmp_path):
    fig = activations_figure(face(1)[0], RNG.random((30, 12, 12)), "featex1")
    assert any(ax.get_ylabel() == "activation" for ax in fig.axes)  # the shared colour bar
    save_figure(fig, tmp_path / "activations.png")
    check_png(tmp_path / "activations.png", min_size=(900, 500))


def test_curves_figure(tmp_path):
    fig = curves_figure([history(12, 8), history(6, 3)[:6]], ["branch 1", "branch 2"])
    loss, accuracy = fig.axes
    assert loss.get_xlabel() == accuracy.get_xlabel() == "epoch"
    assert "accuracy" in accuracy.get_ylabel()
    labels = [t.get_text() for t in accuracy.get_legend().get_texts()]
    assert {"branch 1", "branch 2", "best val epoch"} <= set(labels)
    assert len(loss.lines) == 4  # train and val loss of each run
    save_figure(fig, tmp_path / "curves.png")
    check_png(tmp_path / "curves.png", min_size=(1200, 500))
    # A history without validation records (--val-split none) still plots.
    bare = [{"epoch": e, "loss": 1 / e, "train_accuracy": 0.5} for e in range(1, 4)]
    save_figure(curves_figure([bare], ["plain"]), tmp_path / "bare.png")


def test_curves_figure_draws_the_epochs_before_an_init_start_faint(tmp_path):
    before, after = history(12, 8), history(6, 3)
    after = [{**r, "epoch": r["epoch"] + 12} for r in after]
    fig = curves_figure([after], ["longer"], earlier=[before])
    loss, accuracy = fig.axes
    faint = [
        line for line in accuracy.lines if line.get_alpha() is not None and line.get_alpha() < 1
    ]
    assert len(faint) == 2 and list(faint[0].get_xdata()) == list(
        range(1, 13)
    )  # train and val, before
    stars = [line for line in accuracy.lines if line.get_marker() == "*"]
    assert (
        len(stars) == 1 and stars[0].get_xdata()[0] > 12
    )  # the star marks the file's own best epoch
    assert "before --init" in [t.get_text() for t in accuracy.get_legend().get_texts()]
    save_figure(fig, tmp_path / "longer.png")
    check_png(tmp_path / "longer.png", min_size=(1200, 500))
    with pytest.raises(ValueError, match="earlier"):
        curves_figure([after], ["longer"], earlier=[before, before])


def test_curves_labels_of_runs_peaking_together_do_not_overlap(tmp_path):
    # Three runs that all peak on their last epoch within a point of each other (the default's
    # three -more branches did): their labels used to be drawn on top of one another.
    runs = [
        [{**r, "val_accuracy": r["val_accuracy"] - k * 0.003} for r in history(32, 32)]
        for k in range(3)
    ]
    runs.append(history(32, 5))  # one far away keeps its label under its star
    fig = curves_figure(runs, ["a", "b", "c", "d"])
    accuracy = fig.axes[1]
    labels = [t for t in accuracy.texts if t.get_text().endswith(" %")]
    assert len(labels) == 4
    # Lays out the constrained axes, so the boxes are where a PNG has them.
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in labels]
    overlapping = [
        (a.get_text(), b.get_text())
        for i, a in enumerate(labels)
        for j, b in enumerate(labels)
        if i < j and boxes[i].overlaps(boxes[j])
    ]
    assert overlapping == []
    far = next(t for t in labels if t.xy[0] == 5)
    assert far.xyann == (0, -16)  # alone: straight below its star
    panel = accuracy.get_window_extent()
    assert all(
        panel.x0 <= box.x0 and box.x1 <= panel.x1 for box in boxes
    )  # none past the panel's edges
    save_figure(fig, tmp_path / "together.png")
    check_png(tmp_path / "together.png", min_size=(1200, 500))


def test_curves_labels_of_two_close_groups_of_peaks_do_not_overlap(tmp_path):
    # The 60-epoch ablation: peaks 58.1 / 57.3 % and 54.9 / 53.6 % in the last three epochs, 2.4
    # points apart: two stacks of labels, the first stack's second label ran into the second's
    # first.
    def peaking(best: int, top: float) -> list[dict]:
        return [
            {
                "epoch": e,
                "loss": 2 / e,
                "train_accuracy": 0.25 + 0.0082 * e,
                "val_accuracy": 0.25 + (top - 0.25) * e / best if e <= best else top - 0.002,
            }
            for e in range(1, 61)
        ]

    fig = curves_figure(
        [peaking(60, 0.549), peaking(60, 0.536), peaking(58, 0.573), peaking(59, 0.581)],
        ["plain", "augment", "normalize", "both"],
    )
    labels = [t for t in fig.axes[1].texts if t.get_text().endswith(" %")]
    assert sorted(t.get_text() for t in labels) == ["53.6 %", "54.9 %", "57.3 %", "58.1 %"]
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in labels]
    overlapping = [
        (a.get_text(), b.get_text())
        for i, a in enumerate(labels)
        for j, b in enumerate(labels)
        if i < j and boxes[i].overlaps(boxes[j])
    ]
    assert overlapping == []
    # Best first, top to bottom: the stack reads in the order of the accuracies.
    by_height = [t.get_text() for t in sorted(labels, key=lambda t: -t.get_window_extent().y0)]
    assert by_height == ["58.1 %", "57.3 %", "54.9 %", "53.6 %"]


def test_save_is_atomic_and_closes_the_figure(tmp_path):
    fig = curves_figure([history(3, 2)], ["run"])
    save_figure(fig, tmp_path / "out.png")
    assert fig.axes == []  # closed: the memory is free
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    # A failed write leaves the old file in place and no temporary file.
    broken = curves_figure([history(3, 2)], ["run"])
    broken.savefig = lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full"))
    old = (tmp_path / "out.png").read_bytes()
    with pytest.raises(OSError, match="disk full"):
        save_figure(broken, tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_picks_the_format_from_the_suffix_and_checks_the_folder(tmp_path):
    save_figure(curves_figure([history(3, 2)], ["run"]), tmp_path / "curves.pdf")
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    save_figure(curves_figure([history(3, 2)], ["run"]), tmp_path / "curves.figure")  # unknown: PNG
    with Image.open(tmp_path / "curves.figure") as image:
        assert image.format == "PNG"
    with pytest.raises(BadInputError, match="does not exist"):
        save_figure(curves_figure([history(3, 2)], ["run"]), tmp_path / "missing" / "x.png")
