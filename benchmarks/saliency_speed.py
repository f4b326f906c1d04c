"""Seconds per face of each saliency method on the bundled model, by how many faces a call explains.

    .venv/bin/python benchmarks/saliency_speed.py fer.safetensors
    # another checkout:
    PYTHONPATH=OTHER/src .venv/bin/python benchmarks/saliency_speed.py fer.safetensors

Median of 3 calls of `explain` per row, after one warm-up call, on the first val faces. A
user's `fertool saliency face.png` explains one face: there `smoothgrad` and `integrated` take
their 25 and 32 variants of it in shared passes of up to 64 images (since the commit that
added this script), not in 25 or 32 passes of one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import fertool
from fertool.artifacts import load_artifact
from fertool.bundled import default_model_path
from fertool.evaluate import select_split
from fertool.models import load_model
from fertool.saliency import METHODS, explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared FER2013 dataset (fertool prepare)")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    images, _, _ = select_split(load_artifact(args.data, expect="dataset"), "val")
    model, _ = load_model(default_model_path())
    model.float()
    print(f"fertool from {Path(fertool.__file__).parent}, {torch.get_num_threads()} threads\n")
    print(
        "| method | "
        + " | ".join(f"{n} face{'s' * (n > 1)}: s per face" for n in args.faces)
        + " |"
    )
    print("| --- " * (len(args.faces) + 1) + "|")
    for method in METHODS:
        cells = []
        for n in args.faces:
            faces = images[:n].float().div(255)[:, None]
            explain(model, faces, method)  # warm-up: first-call allocations
            seconds = []
            for _ in range(3):
                started = time.perf_counter()
                explain(model, faces, method)
                seconds.append(time.perf_counter() - started)
            cells.append(f"{statistics.median(seconds) / n:.3f}")
        print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
