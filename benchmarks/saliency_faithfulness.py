"""How faithful each saliency method is on real faces, and what it costs: the deletion test.

    .venv/bin/python benchmarks/saliency_faithfulness.py fer.safetensors [--model M] [--faces 100]

For each method, the maps of `--faces` val faces (evenly spaced through the split) for the
class the model predicts; then the pixels are replaced in the order of each map, most salient
first, and the model's probability of that class is read after every 5 % of the pixels
(Petsiuk et al. 2018, RISE's "deletion"). A map that names the pixels the decision rests on
makes the probability fall fast: the mean over 0-50 % replaced (the curve's area, lower is more
faithful) is the score. `random` replaces in a random order, the score of a map that knows
nothing. `integrated, black baseline` is integrated gradients from a black image, the paper's
choice; fertool's `integrated` starts from the face's own mean brightness instead.

What a pixel is replaced with decides what the test rewards: a method whose path starts at
black (integrated gradients' usual baseline) is tested on its own path when pixels turn black.
So three fills, each a column: the face blurred (11 x 11 box; no method's baseline), the
training split's mean grey, and black. Seconds are wall time of `explain` for all the faces,
one run each, on this machine's threads (noisy: compare within a run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fertool.artifacts import load_artifact
from fertool.bundled import default_model_path
from fertool.evaluate import select_split
from fertool.models import load_model
from fertool.saliency import METHODS, IntegratedGradients, explain, predict_probabilities

FRACTIONS = np.linspace(0.0, 0.5, 11)  # share of the pixels replaced, most salient first
# The paper's baseline, which fertool's `integrated` does not use: this row says why.
BLACK_BASELINE = "integrated, black baseline"


def fills(images01: torch.Tensor, train_mean: float) -> dict[str, torch.Tensor]:
    """What each pixel becomes when deleted, per fill: N x 1 x H x W like the images."""
    blurred = F.avg_pool2d(F.pad(images01, (5, 5, 5, 5), mode="replicate"), 11, stride=1)
    return {
        "blur": blurred,
        "mean grey": torch.full_like(images01, train_mean),
        "black": torch.zeros_like(images01),
    }


def deletion_score(
    model: torch.nn.Module,
    images01: torch.Tensor,
    maps: np.ndarray,
    targets: torch.Tensor,
    fill: torch.Tensor,
) -> float:
    """Area under the mean probability of each face's target class as its pixels are replaced,
    0-50 %."""
    n, pixels = len(images01), images01[0].numel()
    order = torch.from_numpy(np.argsort(-maps.reshape(n, -1), axis=1, kind="stable").copy())
    flat, replacement = images01.reshape(n, -1), fill.reshape(n, -1)
    curve = []
    for fraction in FRACTIONS:
        deleted = order[:, : int(round(fraction * pixels))]
        changed = flat.clone().scatter_(1, deleted, replacement.gather(1, deleted))
        probabilities = predict_probabilities(model, changed.reshape(images01.shape))
        curve.append(probabilities[torch.arange(n), targets].mean().item())
    return float(np.trapezoid(curve, FRACTIONS) / FRACTIONS[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared FER2013 dataset (fertool prepare)")
    parser.add_argument("--model", type=Path, default=None, help="a model file [the bundled model]")
    parser.add_argument(
        "--faces", type=int, default=100, help="val faces, evenly spaced through the split"
    )
    args = parser.parse_args()

    dataset = load_artifact(args.data, expect="dataset")
    images, _, _ = select_split(dataset, "val")
    chosen = np.linspace(0, len(images) - 1, args.faces).round().astype(int)
    images01 = images[chosen].float().div(255)[:, None]
    model, _ = load_model(args.model or default_model_path())
    model.float()  # packed fp16 weights: maps and curves in fp32, as eval scores them
    replacements = fills(images01, float(dataset.meta["train_mean"]))
    targets = predict_probabilities(model, images01).argmax(dim=1)

    rows: list[dict[str, Any]] = []
    for method in [*METHODS, BLACK_BASELINE, "random"]:
        started = time.perf_counter()
        if method == "random":
            maps = (
                np.random.default_rng(0)
                .random((len(images01), *images01.shape[2:]))
                .astype(np.float32)
            )
        elif method == BLACK_BASELINE:
            with IntegratedGradients(model, baseline=0.0) as integrated:
                maps = integrated(images01, targets).numpy()
        else:
            maps = explain(model, images01, method, target="predicted").raw
        seconds = time.perf_counter() - started
        scores = {
            name: deletion_score(model, images01, maps, targets, fill)
            for name, fill in replacements.items()
        }
        rows.append(
            {"method": method, "deletion": scores, "seconds_per_face": seconds / len(images01)}
        )
        print(json.dumps(rows[-1]), flush=True)

    print(
        f"\n{len(images01)} val faces, model {args.model or 'bundled'}: deletion score, the mean "
        "probability of the predicted class while 0-50 % of the pixels are replaced (lower = more "
        "faithful)\n"
    )
    print("| method | " + " | ".join(f"{name} fill" for name in replacements) + " | s per face |")
    print("| --- " * (len(replacements) + 2) + "|")
    for row in sorted(rows, key=lambda r: r["deletion"]["blur"]):
        cells = " | ".join(f"{row['deletion'][name]:.3f}" for name in replacements)
        print(f"| {row['method']} | {cells} | {row['seconds_per_face']:.3f} |")


if __name__ == "__main__":
    main()
