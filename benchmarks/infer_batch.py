"""Inference images/s of `predict_logits` by batch size, on FER2013's val split (or random faces).

    .venv/bin/python benchmarks/infer_batch.py [fer.safetensors]

Best of 3 passes per batch size. Where eval's default `--batch-size 100` comes from: on a
2-core CPU, batches that fit the caches beat big ones (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import sys
import time

import torch

from fertool.artifacts import load_artifact
from fertool.evaluate import predict_logits, select_split
from fertool.models import build_classifier


def main() -> None:
    if len(sys.argv) > 1:
        images, _, _ = select_split(load_artifact(sys.argv[1], expect="dataset"), "val")
    else:
        images = torch.randint(0, 256, (3589, 48, 48), dtype=torch.uint8)
    model = build_classifier("dexpression", {"num_classes": 7}, {"mean": 0.5, "std": 0.25}).eval()
    model = model.to(memory_format=torch.channels_last)
    for batch in (50, 100, 200, 500, 1000):
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            predict_logits(model, images, torch.device("cpu"), batch_size=batch)
            best = max(best, len(images) / (time.perf_counter() - started))
        print(f"batch {batch:>5}: {best:6.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
