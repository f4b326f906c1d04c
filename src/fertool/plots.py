"""Figures for people: confusion matrices, saliency maps, filters, activations, training curves.

    from fertool.data import CLASSES
    from fertool.plots import confusion_figure, curves_figure, save_figure

    fig = confusion_figure(matrix, CLASSES, normalize=True, title="DeXpression, FER2013 test")
    save_figure(fig, "confusion.png")              # atomic write; the figure is closed
    save_figure(curves_figure([meta["history"]], ["branch 1"]), "curves.png")
    # saliency_figure(images01, result.maps, titles, "gradcam")     <- saliency.explain
    # filters_figure(vis.images, vis.filters, "featex1", inactive=vis.objective_end <= 0)
    # activations_figure(image01[0, 0], maps, "featex1")            <- filters.activation_maps

Every function returns a `matplotlib.figure.Figure` built without pyplot: no display, no global
figure list to leak from, and the CLI and tests run headless (Agg draws PNGs). Each figure has a
title, axis labels, class names, and a colour bar wherever colour means a number, sized to stay
readable at the size it is saved (150 dpi). Grids of up to 272 filters draw as one image, so
even the biggest figure saves in about two seconds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fertool.artifacts import atomic_path

DPI = 150
_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
_HEAT = "inferno"  # perceptually uniform, and readable in grayscale print


def save_figure(fig: Figure, path: Path | str, dpi: int = DPI) -> None:
    """Write `fig` atomically to `path` (format from the suffix: png, pdf, svg, jpg; else png),
    then close it."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    fmt = suffix if suffix in ("png", "pdf", "svg", "jpg", "jpeg") else "png"
    try:
        with atomic_path(path) as tmp:  # tmp ends in .part: say the format, do not let it guess
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        close_figure(fig)


def close_figure(fig: Figure) -> None:
    """Free a figure; also drop it from pyplot's list if a caller made it with pyplot."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    fig.clear()


# --- confusion matrix ---------------------------------------------------------------------------


def confusion_figure(
    matrix: np.ndarray, classes: Sequence[str], normalize: bool = True, title: str | None = None
) -> Figure:
    """Counts K x K (rows: true class) as a heat map with the value in every cell.

    `normalize` divides each row by its total (recall on the diagonal); cells still show counts.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {k} classes")
    totals = counts.sum(axis=1, keepdims=True)
    values = (
        np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        if normalize
        else counts
    )
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    side = max(4.5, 0.75 * k + 2.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(values.max(), 1)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    _annotate_cells(ax, values, counts, normalize, vmax, fontsize=max(6, 11 - k // 3))
    ax.set_xticks(range(k), labels=classes, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("fraction of the true class" if normalize else "images")
    heading = title or "Confusion matrix"
    ax.set_title(f"{heading}\naccuracy {accuracy:.1%} on {counts.sum():,} images", fontsize=11)
    return fig


def _annotate_cells(
    ax: Axes, values: np.ndarray, counts: np.ndarray, normalize: bool, vmax: float, fontsize: int
) -> None:
    for (row, col), value in np.ndenumerate(values):
        text = f"{value:.2f}\n({counts[row, col]})" if normalize else f"{counts[row, col]}"
        # Blues is dark above ~55 % of its range: switch to white text there.
        colour = "white" if value > 0.55 * vmax else "black"
        if counts[row, col] == 0:  # a plain grey 0 keeps the eye on the cells that hold images
            text, colour = "0", "0.6"
        ax.text(
            col,
            row,
            text,
            ha="center",
            va="center",
            color=colour,
            fontsize=fontsize,
            linespacing=1.1,
        )


# --- saliency -----------------------------------------------------------------------------------


def saliency_figure(
    images01: np.ndarray, maps: np.ndarray, titles: Sequence[str], method: str
) -> Figure:
    """One row per image: the input, the saliency map, the map over the input; one colour bar.

    `images01` and `maps` are N x H x W in [0, 1] (each map divided by its own max, as
    `explain` returns them); `titles[i]` labels row i (e.g. "happy 93 %").
    """
    images01, maps = np.asarray(images01), np.asarray(maps)
    n = len(images01)
    if maps.shape != images01.shape or len(titles) != n:
        raise ValueError(
            f"need as many maps and titles as images: {images01.shape}, {maps.shape}, {len(titles)}"
        )
    # Fixed margins in inches, no layout engine: 16 rows lay out in a fraction of the time.
    row, top, bottom, width = 2.3, 1.35, 0.15, 7.6
    height = n * row + top + bottom
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(
        n,
        3,
        squeeze=False,
        gridspec_kw={
            "left": 1.15 / width,
            "right": 1 - 0.15 / width,
            "top": 1 - top / height,
            "bottom": bottom / height,
            "wspace": 0.06,
            "hspace": 0.1,
        },
    )
    fig.suptitle(
        f"{_METHOD_NAMES.get(method, method)} saliency", fontsize=13, y=1 - 0.12 / height, va="top"
    )
    for i in range(n):
        heat = _saliency_row(axes[i], images01[i], maps[i], titles[i])
    for ax, heading in zip(axes[0], ("input", "saliency map", "map over the input")):
        ax.set_title(heading, fontsize=10)
    left, right = axes[0, 1].get_position(), axes[0, 2].get_position()
    bar_axes = fig.add_axes((left.x0, 1 - 0.78 / height, right.x1 - left.x0, 0.11 / height))
    bar = fig.colorbar(heat, cax=bar_axes, orientation="horizontal")
    bar.set_label("saliency, relative to the image's strongest pixel", fontsize=9, labelpad=2)
    bar.ax.xaxis.set_label_position("top")
    bar.ax.tick_params(labelsize=8)
    return fig


def _saliency_row(axes: np.ndarray, image01: np.ndarray, saliency: np.ndarray, title: str) -> Any:
    ax_in, ax_map, ax_over = axes
    ax_in.imshow(image01, cmap="gray", vmin=0, vmax=1)
    ax_in.set_ylabel(title, fontsize=10)
    heat = ax_map.imshow(saliency, cmap=_HEAT, vmin=0, vmax=1)
    ax_over.imshow(image01, cmap="gray", vmin=0, vmax=1)
    # Opacity follows the map, so the face stays visible wherever the map is low.
    ax_over.imshow(saliency, cmap=_HEAT, vmin=0, vmax=1, alpha=np.clip(saliency * 1.2, 0, 0.85))
    if not saliency.any():
        ax_map.text(
            0.5,
            0.5,
            "all zero:\nno location raised\nthe class score",
            transform=ax_map.transAxes,
            ha="center",
            va="center",
            color="white",
            fontsize=9,
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return heat


_METHOD_NAMES = {
    "gradient": "Gradient |∂score/∂pixel|",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "integrated": "Integrated gradients",
}


# --- filters and activations --------------------------------------------------------------------


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding `count` cells, at least as wide as tall."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def filters_figure(
    images: np.ndarray,
    indices: Sequence[int],
    layer: str,
    title: str | None = None,
    inactive: Sequence[bool] | np.ndarray | None = None,
) -> Figure:
    """A grid of per-filter images (F x H x W in [0, 1]), each labelled with its filter index.

    `inactive[i]` marks a filter that stayed at zero even for its optimised image (a dead ReLU
    unit, common after training): its picture is faded and labelled "off".
    """
    images = np.asarray(images, dtype=np.float32)
    off = np.zeros(len(images), bool) if inactive is None else np.asarray(inactive, bool)
    if len(indices) != len(images) or len(off) != len(images):
        raise ValueError(
            f"{len(images)} images but {len(indices)} filter indices, {len(off)} flags"
        )
    shown = np.where(off[:, None, None], 0.3 * images + 0.7, images)  # faded towards white
    labels = [f"{index} off" if dead else str(index) for index, dead in zip(indices, off)]
    fig, ax = _mosaic_figure(
        shown,
        labels,
        [0.55 if dead else 0.0 for dead in off],
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extra_width=0.0,
    )
    heading = title or f"{layer}: the input that maximises each filter's mean activation"
    if off.any():
        heading += (
            f"\n({off.sum()} filters marked 'off' stayed at zero: dead units, "
            "their pictures show nothing)"
        )
    fig.suptitle(heading, fontsize=11)
    return fig


def activations_figure(image01: np.ndarray, maps: np.ndarray, layer: str) -> Figure:
    """The input face beside a grid of one layer's activation maps (C x h x w), one colour scale."""
    maps = np.asarray(maps, dtype=np.float32)
    low, high = float(min(maps.min(), 0.0)), float(max(maps.max(), 1e-6))
    fig, ax = _mosaic_figure(
        maps,
        [str(i) for i in range(len(maps))],
        [0.0] * len(maps),
        cmap="viridis",
        vmin=low,
        vmax=high,
        extra_width=2.6,
    )
    fig.suptitle(
        f"{layer}: activation maps of {len(maps)} filters ({maps.shape[1]} x {maps.shape[2]} each)",
        fontsize=11,
    )
    width, height = fig.get_size_inches()
    face_axes = fig.add_axes(
        (0.2 / width, 1 - 3.0 / height, 2.2 / width, 2.2 / height)
    )  # top left, by the grid
    face_axes.imshow(np.asarray(image01), cmap="gray", vmin=0, vmax=1)
    face_axes.set_title("input", fontsize=10)
    face_axes.set_axis_off()
    bar = fig.colorbar(ax.images[0], ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("activation")
    return fig


def _mosaic_figure(
    tiles: np.ndarray,
    labels: Sequence[str],
    greys: Sequence[float],
    cmap: str,
    vmin: float,
    vmax: float,
    extra_width: float,
) -> tuple[Figure, Axes]:
    """All tiles in one near-square image with a label above each: one axes, however many tiles.

    One imshow instead of one axes per tile draws 272 filters in about a second rather than
    fifteen. `extra_width` (inches) is room on the left for other panels.
    """
    count, height, width = tiles.shape
    rows, columns = grid_shape(count)
    gap_x, band = max(1, width // 12), max(3, round(height * 0.32))  # band: room for the label
    mosaic = np.full((rows * (height + band), columns * (width + gap_x)), np.nan, np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = r * (height + band) + band, c * (width + gap_x)
        mosaic[top : top + height, left : left + width] = tile
    cell = _cell_inches(columns)
    grid_width, grid_height = columns * cell, rows * cell * (height + band) / (width + gap_x)
    fig_width, fig_height = (
        grid_width + extra_width + 0.4,
        grid_height + 0.85,
    )  # 0.7 in above for the title
    fig = Figure(figsize=(fig_width, fig_height))
    ax = fig.add_axes(
        (
            (extra_width + 0.1) / fig_width,
            0.15 / fig_height,
            grid_width / fig_width,
            grid_height / fig_height,
        )
    )
    ax.imshow(
        mosaic,
        cmap=colormaps[cmap].with_extremes(bad="white"),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    for i, (label, grey) in enumerate(zip(labels, greys)):
        r, c = divmod(i, columns)
        ax.text(
            c * (width + gap_x) + width / 2,
            r * (height + band) + band - 0.5,
            label,
            ha="center",
            va="bottom",
            fontsize=_label_size(columns),
            color=str(grey),
        )
    ax.set_axis_off()
    return fig, ax


def _cell_inches(columns: int) -> float:
    """Cell size that keeps a grid between ~5 and ~11 inches wide."""
    return float(np.clip(9.0 / columns, 0.6, 1.3))


def _label_size(columns: int) -> int:
    return 9 if columns <= 8 else 7 if columns <= 13 else 6


# --- training curves ----------------------------------------------------------------------------


def curves_figure(
    histories: Sequence[Sequence[dict[str, Any]]],
    labels: Sequence[str],
    earlier: Sequence[Sequence[dict[str, Any]]] | None = None,
) -> Figure:
    """Loss and accuracy per epoch for one or more training runs, one colour per run.

    Each history is a list of per-epoch records with "loss", "train_accuracy" and optionally
    "val_loss", "val_accuracy" (as `train_branch` writes them). The best validation epoch of
    each run is marked with a star. `earlier[i]`, where given, are the epochs of the runs that
    run i continued (train-branch --init), drawn faint in its colour: the star stays on the
    run's own epochs, since its file holds the weights of those.
    """
    earlier = earlier or [[] for _ in histories]
    if not len(histories) == len(labels) == len(earlier):
        raise ValueError(
            f"{len(histories)} histories but {len(labels)} labels and {len(earlier)} earlier runs"
        )
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    stars = []
    for i, (history, before) in enumerate(zip(histories, earlier)):
        colour = _COLOURS[i % len(_COLOURS)]
        if before:
            _plot_run(ax_loss, ax_acc, list(before), colour, faint=True)
        stars += _plot_run(ax_loss, ax_acc, list(history), colour)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.margins(x=0.04, y=0.1)  # room for the stars and their labels
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _label_stars(ax_acc, stars)  # after the margins: it lays the labels out in the final limits
    runs = [
        Line2D([], [], color=_COLOURS[i % len(_COLOURS)], lw=2, label=label)
        for i, label in enumerate(labels)
    ]
    if any(earlier):
        runs.append(Line2D([], [], color="gray", lw=2, alpha=_FAINT, label="before --init"))
    ax_loss.legend(handles=runs + _style_handles(train="--", val="-"), fontsize=8)
    best = Line2D([], [], ls="", marker="*", ms=11, color="black", label="best val epoch")
    ax_acc.legend(handles=runs + _style_handles(train="--", val="-") + [best], fontsize=8)
    fig.suptitle("Training curves", fontsize=12)
    return fig


_FAINT = 0.35  # the alpha of epochs before an --init start


def _plot_run(
    ax_loss: Axes, ax_acc: Axes, history: list[dict[str, Any]], colour: str, faint: bool = False
) -> list[tuple[float, float, str]]:
    """Draw one run; return its best-val star as [(epoch, accuracy %, colour)] (none when faint)."""
    epochs = [record.get("epoch", i + 1) for i, record in enumerate(history)]
    style: dict[str, Any] = {"color": colour, "marker": ".", "alpha": _FAINT if faint else 1.0}
    # One convention in both panels: train dashed, validation solid (validation is what counts).
    ax_loss.plot(epochs, [r["loss"] for r in history], ls="--", **style)
    if all("val_loss" in r for r in history):
        ax_loss.plot(epochs, [r["val_loss"] for r in history], ls="-", **style)
    if all("train_accuracy" in r for r in history):
        ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in history], ls="--", **style)
    if history and all("val_accuracy" in r for r in history):
        val = [100 * r["val_accuracy"] for r in history]
        ax_acc.plot(epochs, val, ls="-", **style)
        if not faint:
            best = int(np.argmax(val))  # the first best epoch, as train_branch keeps it
            ax_acc.plot(
                epochs[best],
                val[best],
                marker="*",
                ms=14,
                color=colour,
                mec="black",
                mew=0.8,
                zorder=5,
            )
            return [(epochs[best], val[best], colour)]
    return []


_LABEL_STEP = 12  # points between stacked labels: one line of font size 8 and its box


def _label_stars(ax: Axes, stars: list[tuple[float, float, str]]) -> None:
    """Write each star's accuracy below it. A label that would touch one already written near the
    same epochs (runs that all peak at the end) goes under it instead: labels stack, best first.

    Call it once the axes' limits are final: the stacking is worked out in points from them.
    """
    low, high = ax.get_xlim()
    bottom, top = ax.get_ylim()
    close_epochs = (high - low) / 12  # a label is about a twelfth of the panel wide
    points_per_percent = ax.bbox.height * 72 / ax.figure.dpi / (top - bottom)
    written: list[tuple[float, float]] = []  # (epoch, height in points) of each label so far
    for epoch, value, colour in sorted(stars, key=lambda s: -s[1]):
        star = (value - bottom) * points_per_percent
        label = (
            star - 16
        )  # below the star: the train curve (dashed) usually runs above the val curve there
        while clashes := [
            y for e, y in written if abs(e - epoch) <= close_epochs and abs(y - label) < _LABEL_STEP
        ]:
            label = min(clashes) - _LABEL_STEP
        written.append((epoch, label))
        # Near either edge the label leans inwards, or half of it would fall outside the panel.
        align, dx = "center", 0
        if epoch > high - (high - low) / 10:
            align, dx = "right", 8
        elif epoch < low + (high - low) / 10:
            align, dx = "left", -8
        ax.annotate(
            f"{value:.1f} %",
            (epoch, value),
            textcoords="offset points",
            xytext=(dx, round(label - star, 2)),
            ha=align,
            fontsize=8,
            color=colour,
            zorder=6,  # over stars
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def _style_handles(train: str, val: str) -> list[Line2D]:
    return [
        Line2D([], [], color="gray", ls=train, label="train"),
        Line2D([], [], color="gray", ls=val, label="val"),
    ]


# --- video timeline -----------------------------------------------------------------------------

# One colour per FER2013 class, the same in every figure that colours by class: warm for the
# aroused negative ones, green for happy, blue for sad, grey for neutral.
CLASS_COLOURS = {
    "angry": "tab:red",
    "disgust": "tab:olive",
    "fear": "tab:purple",
    "happy": "tab:green",
    "sad": "tab:blue",
    "surprise": "tab:orange",
    "neutral": "tab:gray",
}


def class_colour(name: str, index: int) -> str:
    """The colour of class `name`; classes of other data sets take the cycle, by position."""
    return CLASS_COLOURS.get(name, _COLOURS[index % len(_COLOURS)])


def timeline_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    title: str = "Expressions over time",
    ylabel: str = "probability",
) -> Figure:
    """Probabilities against time, one panel per (title, times N, probabilities N x K), a shared
    time axis; a gap over three times the usual step between samples breaks the lines (the face
    was off screen)."""
    fig = Figure(figsize=(11, 1.2 + 1.9 * len(panels)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0])
    for ax, (name, times, probs) in zip(axes, panels):
        times, probs = _broken_at_gaps(np.asarray(times, float), np.asarray(probs, float))
        for k, cls in enumerate(classes):
            ax.plot(times, probs[:, k], color=class_colour(cls, k), lw=1.6, label=cls)
        ax.set(ylim=(0, 1), ylabel=ylabel)
        ax.set_title(name, loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    fig.legend(
        handles=[
            Line2D([], [], color=class_colour(c, k), lw=2, label=c) for k, c in enumerate(classes)
        ],
        loc="outside right upper",
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title, fontsize=12)
    return fig


def _broken_at_gaps(times: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN rows inserted where the step between samples exceeds three times the median step."""
    if len(times) < 3:
        return times, probs
    steps = np.diff(times)
    gaps = np.flatnonzero(steps > 3 * max(float(np.median(steps)), 1e-9))
    return (
        np.insert(times, gaps + 1, np.nan),
        np.insert(probs, gaps + 1, np.full(probs.shape[1], np.nan), axis=0),
    )


# --- calibration and paired comparison ----------------------------------------------------------


def reliability_figure(
    tables: Sequence[dict[str, Any]], names: Sequence[str], eces: Sequence[float]
) -> Figure:
    """Confidence against accuracy per confidence bin (stats.reliability_bins), one colour per
    predictions file: bars of accuracy, the gap to the bin's mean confidence shaded, the diagonal
    a perfectly calibrated model would follow, and below, how many faces fall in each bin.
    """
    if not (len(tables) == len(names) == len(eces)) or not tables:
        raise ValueError(
            f"need one name and ECE per table: {len(tables)}, {len(names)}, {len(eces)}"
        )
    edges = np.asarray(tables[0]["edges"])
    width = (edges[1] - edges[0]) / len(tables)
    fig = Figure(figsize=(7.0, 7.2), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="perfectly calibrated")
    for i, (table, name, ece) in enumerate(zip(tables, names, eces)):
        colour = _COLOURS[i % len(_COLOURS)]
        left = edges[:-1] + i * width
        counts = np.asarray(table["counts"])
        filled = counts > 0
        accuracy = np.nan_to_num(np.asarray(table["accuracy"], dtype=float))
        confidence = np.nan_to_num(np.asarray(table["confidence"], dtype=float))
        ax.bar(
            left[filled],
            accuracy[filled],
            width,
            align="edge",
            color=colour,
            alpha=0.75,
            edgecolor="white",
            linewidth=0.5,
            label=f"{name} (ECE {ece:.3f})",
        )
        # The gap: from the bar's top to the bin's mean confidence (above: overconfident).
        ax.bar(
            left[filled],
            (confidence - accuracy)[filled],
            width,
            bottom=accuracy[filled],
            align="edge",
            color=colour,
            alpha=0.25,
            hatch="//",
            edgecolor=colour,
            linewidth=0,
        )
        ax_count.bar(left, counts, width, align="edge", color=colour, alpha=0.75)
        if len(tables) == 1:
            for x, n in zip(left[filled], counts[filled]):
                ax_count.text(x + width / 2, n, f"{n:,}", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in the bin")
    ax.legend(loc="upper left", fontsize=9)
    ax.text(
        0.98,
        0.02,
        "hatched: gap to the bin's mean confidence\n(above the bar: overconfident)",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        color="0.3",
    )
    ax_count.set_xlabel("confidence (probability of the predicted class)")
    ax_count.set_ylabel("faces")
    bins = len(edges) - 1
    scores = ", ".join(f"{e:.3f}" for e in eces)
    label = "ECE" if len(eces) == 1 else "ECEs"
    ax.set_title(f"Reliability diagram, {bins} bins: {label} {scores}", fontsize=11)
    return fig


def disagreement_figure(
    images: np.ndarray, titles: Sequence[str], right: Sequence[tuple[bool, bool]], heading: str
) -> Figure:
    """Faces (uint8 N x H x W) on which two models disagree, each titled with both predictions and
    the truth (`titles[i]`, three lines); the title is in A's colour (blue, as in the other
    figures' first run) where A is right, B's (orange) where B is, grey where neither is."""
    images = np.asarray(images)
    if len(titles) != len(images) or len(right) != len(images) or not len(images):
        raise ValueError(f"need a title per face: {len(images)} faces, {len(titles)} titles")
    rows, columns = grid_shape(len(images))
    cell = float(np.clip(10.0 / columns, 1.2, 1.8))
    fig = Figure(figsize=(columns * cell, rows * (cell + 0.55) + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, title, (a_right, b_right) in zip(axes.flat, images, titles, right):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        colour = _COLOURS[0] if a_right else _COLOURS[1] if b_right else "0.35"
        ax.set_title(title, fontsize=8, color=colour, linespacing=1.1)
    fig.suptitle(heading, fontsize=11)
    return fig
