"""Compare test-time augmentations of a model on a split: which views raise accuracy.

    python scripts/compare_tta.py fer.safetensors results/fer2013/best-branch1.safetensors [MORE...]

Each candidate averages the softmax over its views: the image (and, in every candidate but
"none", its mirror), shifted by whole pixels and/or zoomed about the centre (>1 zooms in, <1 out,
the border pixels repeated as in training). `--tta crops` in fertool is the "flip + zoom in" row.
Each distinct view goes through the model once and every candidate is scored from those
probabilities, so the table costs the union of the views, not their sum. `--precision bf16`
computes as `fertool eval --precision bf16` does (the default, fp32, as `pack_model.py` does).
Choose on a validation split (the default), never on test. Prints one markdown row per model
and candidate.
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
from fertool.runtime import autocast, resolve_precision

SHIFTS_2PX = [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)]

# name: (pixel shifts (dx, dy), zooms); every candidate also has the mirror of each view except
# "none".
CANDIDATES: dict[str, tuple[list[tuple[int, int]], list[float]]] = {
    "none": ([(0, 0)], [1.0]),
    "flip": ([(0, 0)], [1.0]),
    "flip + shift 2 px": (SHIFTS_2PX, [1.0]),
    "flip + zoom out and in": ([(0, 0)], [0.93, 1.0, 1.08]),
    "flip + zoom in (= --tta crops)": ([(0, 0)], [1.0, 1.08, 1.16]),
    "flip + zoom out and in twice": ([(0, 0)], [0.93, 1.0, 1.08, 1.16]),
    "flip + shift 2 px + zoom in": (SHIFTS_2PX, [1.0, 1.08]),
    # Finer and further zooms, and shifts at every zoom of --tta crops (the training transforms
    # zoom by up to 15 % and shift by up to 15 %: 1.24 is past what a branch has seen).
    "flip + zoom in, finer steps": ([(0, 0)], [1.0, 1.05, 1.10, 1.15]),
    "flip + zoom in thrice": ([(0, 0)], [1.0, 1.08, 1.16, 1.24]),
    "flip + shift 2 px at each crops zoom": (SHIFTS_2PX, [1.0, 1.08, 1.16]),
}

View = tuple[bool, float, tuple[int, int]]  # (mirrored, zoom, shift)


def candidate_views(name: str) -> list[View]:
    shifts, zooms = CANDIDATES[name]
    return [
        (mirrored, zoom, shift)
        for mirrored in ([False] if name == "none" else [False, True])
        for zoom in zooms
        for shift in shifts
    ]


def make_view(x: torch.Tensor, view: View) -> torch.Tensor:
    mirrored, zoom, shift = view
    return zoom_about_centre(x.flip(-1) if mirrored else x, zoom, shift)


@torch.inference_mode()
def view_probabilities(
    model: torch.nn.Module, images: torch.Tensor, views: list[View], dtype: torch.dtype | None
) -> dict[View, torch.Tensor]:
    """Each view's softmax over the split (N x classes), every view computed once."""
    model.eval()
    cpu = torch.device("cpu")
    chunks: dict[View, list[torch.Tensor]] = {view: [] for view in views}
    for start in range(0, len(images), 100):
        x = to_input(images[start : start + 100], cpu)
        for view in views:
            with autocast(cpu, dtype):
                chunks[view].append(model(make_view(x, view)).float().softmax(1))
    return {view: torch.cat(parts) for view, parts in chunks.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--split", default="val")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    images, labels, _ = select_split(load_artifact(args.data, expect="dataset"), args.split)
    dtype = resolve_precision(args.precision, torch.device("cpu"))
    needed = list(dict.fromkeys(view for name in CANDIDATES for view in candidate_views(name)))
    print(f"| model | test-time augmentation | views | {args.split} accuracy |")
    print("| --- | --- | --- | --- |")
    for path in args.models:
        model, _ = load_model(path)
        started = time.perf_counter()
        probabilities = view_probabilities(model, images, needed, dtype)
        for name in CANDIDATES:
            views = candidate_views(name)
            predicted = torch.stack([probabilities[view] for view in views]).mean(0).argmax(1)
            score = (predicted == labels).float().mean().item()
            print(f"| {path.name} | {name} | {len(views)} | {score:.2%} |", flush=True)
        print(
            f"{path.name}: {len(needed)} distinct views in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
