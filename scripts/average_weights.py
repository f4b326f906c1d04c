"""Average the weights of one branch's training stages (stochastic weight averaging, after the
fact).

    python scripts/average_weights.py runs/gd3/branch3-more{,2,3}.safetensors \\
        -o branch3-swa.safetensors --data fer.safetensors

The snapshots must be stages of one run (`train-branch --init` chains): same architecture,
arguments and normalisation, weights near enough that their mean is still a good network.
Parameters are averaged. Batch-norm statistics are not: the mean of the snapshots' running
statistics does not describe the averaged network's activations, so they are measured again in
one pass over DATA's train faces (plain, or with `--augment-preset`, the faces the statistics
were first gathered on). Prints each snapshot's and the average's val accuracy (no test-time
views); the output is a branch like any other, its metadata naming the snapshots.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from torch import nn

from fertool.artifacts import Artifact, check_output_path, load_artifact, save_tensors
from fertool.augment import PRESETS, Augment
from fertool.evaluate import predict_logits, select_split, to_input
from fertool.models import model_from_artifact


def val_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    logits = predict_logits(model, images, torch.device("cpu"))
    return (logits.argmax(1) == labels).float().mean().item()


@torch.no_grad()
def measure_batch_norm(
    model: nn.Module, images: torch.Tensor, augment: Augment | None, batch_size: int = 256
) -> None:
    """Replace every batch-norm layer's running statistics with their average over `images`.

    Batches of `batch_size` faces each weigh the same (the last, smaller one too): what
    PyTorch's cumulative average (momentum None) computes, within a face or two of the exact mean.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    model.eval()  # dropout off: it would change what later layers see
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches, not an exponential one
        norm.train()
    for start in range(0, len(images), batch_size):
        x = to_input(images[start : start + batch_size], torch.device("cpu"))
        model(augment(x) if augment is not None else x)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "snapshots", type=Path, nargs="+", help="branch files: stages of one training run"
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset artifact: train faces for batch norm, val to score",
    )
    parser.add_argument(
        "--augment-preset",
        choices=sorted(PRESETS),
        help="augment the batch-norm pass (default: plain faces)",
    )
    args = parser.parse_args()
    check_output_path(
        args.output, inputs=[*args.snapshots, args.data]
    )  # before the minutes of work, not after

    snapshots = [load_artifact(path, expect="branch") for path in args.snapshots]
    first = snapshots[0].meta
    for snap in snapshots[1:]:
        for key in ("arch", "arch_args", "normalization"):
            if snap.meta.get(key) != first.get(key):
                sys.exit(
                    f"{snap.path}: its {key} differs from {snapshots[0].path}'s; "
                    "average stages of one run only"
                )
    dataset = load_artifact(args.data, expect="dataset")
    train_images, _, _ = select_split(dataset, "train")
    val_images, val_labels, _ = select_split(dataset, "val")

    scores = [val_accuracy(model_from_artifact(s), val_images, val_labels) for s in snapshots]
    tensors = {
        name: (
            torch.stack([s.tensors[name].float() for s in snapshots]).mean(0)
            if value.is_floating_point()
            else value
        )
        for name, value in snapshots[-1].tensors.items()
    }
    model = model_from_artifact(Artifact(args.output, "branch", first, tensors))
    augment = None
    if args.augment_preset:
        augment = Augment(PRESETS[args.augment_preset], torch.Generator().manual_seed(0))
    measure_batch_norm(model, train_images, augment)
    score = val_accuracy(model, val_images, val_labels)

    last = snapshots[-1].meta
    averaged = {
        "files": [str(p) for p in args.snapshots],
        "val_accuracy": scores,
        "batch_norm": args.augment_preset or "plain",
    }
    meta = {k: v for k, v in last.items() if k not in ("kind", "schema", "fertool_version")}
    # The average has no best epoch of its own: its one score, on the split it was measured on.
    meta["metrics"] = {"best_val_accuracy": score, "val_split": "val"}
    meta["command"] = shlex.join(["python", *sys.argv])
    save_tensors(
        args.output, model.state_dict(), kind="branch", meta={**meta, "averaged": averaged}
    )
    print(
        json.dumps(
            {
                "output": str(args.output),
                "snapshots_val_accuracy": scores,
                "val_accuracy": score,
                "batch_norm": averaged["batch_norm"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
