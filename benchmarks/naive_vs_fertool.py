"""fertool's trainer and inference against a typical PyTorch FER2013 pipeline, side by side.

    .venv/bin/python benchmarks/naive_vs_fertool.py runs/fer.safetensors --images 6000 --rounds 3
    .venv/bin/python benchmarks/naive_vs_fertool.py --synthetic 3000      # no data set needed

The *naive* pipeline is written here the way most FER2013 tutorials do it: a Dataset that turns
each 48x48 image into a PIL image, per-sample torchvision transforms (flip, affine ±5° / ±10 %
shift and zoom, ToTensor, Normalize), a shuffling DataLoader, the model in the default memory
layout in fp32, and `loss.item()` every batch. *fertool* is `fertool.train.train_branch` itself
(uint8 data in memory, one affine grid per batch, channels_last, the precision `auto` picks, no
per-batch host syncs) and `fertool.evaluate.predict_logits` for inference. Same model, same
batch size, same images, same augmentation ranges; both run one epoch over the same subset.

Rounds alternate naive and fertool so both see the same machine load; the medians and their
ratio are printed, and with --json written as one JSON object. docs/BENCHMARKS.md records runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fertool.artifacts import Artifact, load_artifact
from fertool.evaluate import predict_logits, select_split
from fertool.models import build_classifier
from fertool.runtime import resolve_device
from fertool.train import TrainConfig, train_branch


class TutorialDataset(Dataset):
    """Per-sample PIL + torchvision transforms: the pattern the speed-up is measured against."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def tutorial_transforms(mean: float, std: float, train: bool) -> Any:
    steps = (
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomAffine(degrees=5, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
        if train
        else []
    )
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize([mean], [std])])


def naive_train_epoch(
    images: np.ndarray,
    labels: np.ndarray,
    arch: str,
    mean: float,
    std: float,
    batch_size: int,
    workers: int,
) -> float:
    torch.manual_seed(0)
    model = build_classifier(
        arch, {"num_classes": 7}, None
    ).backbone  # normalisation is in the transforms
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(
        TutorialDataset(images, labels, tutorial_transforms(mean, std, train=True)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
    )
    model.train()
    running_loss, started = 0.0, time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # the per-batch host sync tutorials print from
    return len(images) / (time.perf_counter() - started)


def naive_infer(
    images: np.ndarray,
    labels: np.ndarray,
    arch: str,
    mean: float,
    std: float,
    batch_size: int,
    workers: int,
) -> float:
    model = build_classifier(arch, {"num_classes": 7}, None).backbone.eval()
    loader = DataLoader(
        TutorialDataset(images, labels, tutorial_transforms(mean, std, train=False)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
    )
    started = time.perf_counter()
    predictions = []
    with torch.no_grad():
        for x, _ in loader:
            predictions.append(model(x).argmax(1))
    return len(images) / (time.perf_counter() - started)


def fertool_train_epoch(
    subset: Artifact, arch: str, batch_size: int, precision: str
) -> tuple[float, str]:
    config = TrainConfig(arch=arch, epochs=1, batch_size=batch_size, seed=0, precision=precision)
    result = train_branch(subset, config)
    return result.history[0]["images_per_second"], result.precision


def fertool_infer(images: torch.Tensor, arch: str, batch_size: int) -> float:
    model = build_classifier(arch, {"num_classes": 7}, {"mean": 0.5, "std": 0.25}).eval()
    model = model.to(memory_format=torch.channels_last)
    device = resolve_device("cpu")
    started = time.perf_counter()
    predict_logits(model, images, device, batch_size=batch_size)
    return len(images) / (time.perf_counter() - started)


def subset_of(dataset: Artifact, count: int, seed: int = 0) -> Artifact:
    """The first `count` training images (random order, fixed seed) plus 100 val images."""
    train = torch.nonzero(dataset.tensors["split"] == 0).flatten()
    val = torch.nonzero(dataset.tensors["split"] == 1).flatten()[:100]
    pick = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]]
    index = torch.cat([pick, val])
    tensors = {k: dataset.tensors[k][index] for k in ("images", "labels", "split")}
    return Artifact(path=dataset.path, kind="dataset", meta=dataset.meta, tensors=tensors)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores visible, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="a dataset artifact (fertool prepare)")
    parser.add_argument(
        "--synthetic", type=int, default=0, help="use N synthetic faces instead of DATA"
    )
    parser.add_argument(
        "--images", type=int, default=6000, help="training images per epoch measured"
    )
    parser.add_argument("--arch", default="dexpression")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers tried (naive)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if args.synthetic:
        from fertool.data import synthetic_faces
        from fertool.prepare import dataset_artifact

        tensors, meta = dataset_artifact(synthetic_faces(args.synthetic, seed=0))
        dataset = Artifact(
            path=Path(f"synthetic:{args.synthetic}"), kind="dataset", meta=meta, tensors=tensors
        )
    else:
        dataset = load_artifact(args.data, expect="dataset")
    subset = subset_of(dataset, args.images)
    images, labels, _ = select_split(subset, "train")
    np_images, np_labels = images.numpy(), labels.numpy()
    mean, std = float(dataset.meta["train_mean"]), float(dataset.meta["train_std"])
    print(machine())
    print(
        f"{len(images)} training images from {dataset.path}, {args.arch}, batch {args.batch_size}"
    )

    runs: dict[str, list[float]] = {f"naive_train_w{w}": [] for w in args.workers}
    runs.update({f"naive_infer_w{w}": [] for w in args.workers})
    runs.update({"fertool_train": [], "fertool_infer": []})
    precision = "?"
    for round_ in range(args.rounds):
        for workers in args.workers:
            runs[f"naive_train_w{workers}"].append(
                naive_train_epoch(
                    np_images, np_labels, args.arch, mean, std, args.batch_size, workers
                )
            )
            runs[f"naive_infer_w{workers}"].append(
                naive_infer(np_images, np_labels, args.arch, mean, std, args.batch_size, workers)
            )
        rate, precision = fertool_train_epoch(subset, args.arch, args.batch_size, args.precision)
        runs["fertool_train"].append(rate)
        runs["fertool_infer"].append(fertool_infer(images, args.arch, 100))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items()),
            flush=True,
        )

    medians = {k: statistics.median(v) for k, v in runs.items()}
    best_naive_train = max(
        medians[f"naive_train_w{w}"] for w in args.workers
    )  # the naive pipeline at its best
    best_naive_infer = max(medians[f"naive_infer_w{w}"] for w in args.workers)
    result = {
        "machine": machine(),
        "data": str(dataset.path),
        "images": len(images),
        "arch": args.arch,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "fertool_precision": precision,
        "median_images_per_second": medians,
        "runs": runs,
        "train_speedup": medians["fertool_train"] / best_naive_train,
        "infer_speedup": medians["fertool_infer"] / best_naive_infer,
        "fertool_epoch_seconds_fer2013": 28709 / medians["fertool_train"],
        "naive_epoch_seconds_fer2013": 28709 / best_naive_train,
    }
    print(
        f"train: naive {best_naive_train:.0f} img/s (best of workers {args.workers}), fertool "
        f"{medians['fertool_train']:.0f} img/s ({precision}): {result['train_speedup']:.2f}x; a "
        f"full FER2013 epoch {result['fertool_epoch_seconds_fer2013']:.0f} s vs "
        f"{result['naive_epoch_seconds_fer2013']:.0f} s"
    )
    print(
        f"infer: naive {best_naive_infer:.0f} img/s, fertool {medians['fertool_infer']:.0f} img/s: "
        f"{result['infer_speedup']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
