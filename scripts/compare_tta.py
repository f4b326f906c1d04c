"""Compare test-time augmentations of a model on a split: which views raise accuracy.

    python scripts/compare_tta.py fer.safetensors results/fer2013/best-branch1.safetensors [MORE...]

Each candidate averages the softmax over its views: the image (and with "flip" its mirror),
shifted by whole pixels and/or zoomed about the centre (>1 zooms in, <1 out, the border pixels
repeated as in training). `--tta crops` in fertool is the "flip + zoom in" row. Choose on a
validation split (the default), never on test. Prints one markdown row per model and candidate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fertool.artifacts import load_artifact
from fertool.augment import zoom_about_centre
from fertool.evaluate import select_split, to_input
from fertool.models import load_model

# name: (pixel shifts (dx, dy), zooms); every candidate also has the mirror of each view except "none".
CANDIDATES: dict[str, tuple[list[tuple[int, int]], list[float]]] = {
    "none": ([(0, 0)], [1.0]),
    "flip": ([(0, 0)], [1.0]),
    "flip + shift 2 px": ([(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)], [1.0]),
    "flip + zoom out and in": ([(0, 0)], [0.93, 1.0, 1.08]),
    "flip + zoom in (= --tta crops)": ([(0, 0)], [1.0, 1.08, 1.16]),
    "flip + zoom out and in twice": ([(0, 0)], [0.93, 1.0, 1.08, 1.16]),
    "flip + shift 2 px + zoom in": ([(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)], [1.0, 1.08]),
}


def views(x: torch.Tensor, name: str) -> list[torch.Tensor]:
    shifts, zooms = CANDIDATES[name]
    return [zoom_about_centre(image, zoom, shift) for image in ([x] if name == "none" else [x, x.flip(-1)])
            for zoom in zooms for shift in shifts]


@torch.inference_mode()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str) -> float:
    predictions = []
    for start in range(0, len(images), 100):
        x = to_input(images[start : start + 100], torch.device("cpu"))
        probabilities = torch.stack([model(v).float().softmax(1) for v in views(x, name)]).mean(0)
        predictions.append(probabilities.argmax(1))
    return (torch.cat(predictions) == labels).float().mean().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    images, labels, _ = select_split(load_artifact(args.data, expect="dataset"), args.split)
    print(f"| model | test-time augmentation | views | {args.split} accuracy | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.models:
        model, _ = load_model(path)
        for name in CANDIDATES:
            started = time.perf_counter()
            score = accuracy(model, images, labels, name)
            count = len(views(to_input(images[:1], torch.device("cpu")), name))
            print(f"| {path.name} | {name} | {count} | {score:.2%} | {time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
