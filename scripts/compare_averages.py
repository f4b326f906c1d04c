"""Score the plain average of every subset of models from their saved predictions: which to average.

    for b in runs/*/branch*.safetensors; do
        fertool eval fer.safetensors $b --split val --tta crops \\
            -o preds/$(basename $(dirname $b))-$(basename $b .safetensors).npz
    done
    python scripts/compare_averages.py preds/*.npz --max-mib 10 --top 15

`fertool ensemble --average` averages its branches' probabilities, and `eval --tta` averages the
probabilities of each branch's views; both are plain means, so the average of several models
under one TTA is the mean of the probabilities their `eval -o` files hold. Every subset is scored
from those files in milliseconds instead of one ensemble file and one evaluation per subset.
The predictions must come from one data set, split and TTA (checked). With `--max-mib`, subsets
whose weights would not fit that many MiB in fp16 (the bundled model's format) are left out; the
sizes count each model file's tensors at two bytes each and so ignore the few KB of metadata.

`--errors` adds how alike the models' mistakes are (pairs that err on the same faces gain
little from averaging) and the share of faces at least one model gets right.

Choose on a validation split, never on test: picking the best of many subsets also flatters the
winner by a little, so report the runners-up beside it (`--top`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from fertool.artifacts import load_artifact
from fertool.errors import BadInputError, FertoolError

MIB = 2**20


def load_predictions(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """models x N x classes probabilities, the labels, and each file's metadata (checked to
    agree)."""
    artifacts = [load_artifact(path, expect="predictions") for path in paths]
    first = artifacts[0]
    for artifact in artifacts[1:]:
        for key in ("dataset_sha256", "split", "tta"):
            if artifact.meta[key] != first.meta[key]:
                raise BadInputError(
                    f"{artifact.path}: {key} {artifact.meta[key]!r}, but {first.path} has "
                    f"{first.meta[key]!r}; evaluate every model on one data set, split and --tta"
                )
        if not np.array_equal(artifact.tensors["indices"], first.tensors["indices"]):
            raise BadInputError(
                f"{artifact.path}: scores other faces than {first.path}; evaluate both on one split"
            )
    # Saved "logits" are log mean probabilities under TTA and true logits without;
    # softmax undoes both.
    logits = np.stack([a.tensors["logits"].astype(np.float64) for a in artifacts])
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities, first.tensors["labels"], [a.meta for a in artifacts]


def fp16_bytes(model_path: str) -> int | None:
    """Bytes of the model's tensors at two bytes per element; None when the file is gone."""
    path = Path(model_path)
    if not path.is_file():
        return None
    return 2 * sum(t.numel() for t in load_artifact(path).tensors.values() if t.is_floating_point())


def print_shared_errors(probabilities: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """How alike the models' mistakes are: an average can only fix a face some member gets right.

    Per pair, the share of the faces either model gets wrong that both get wrong, and how often
    the two predict the same class; then how many faces every model, and at least one, gets right
    (the ceiling no average of these models can pass).
    """
    predicted = probabilities.argmax(axis=2)
    right = predicted == labels
    print("| pair | both wrong, of the faces either gets wrong | same prediction |")
    print("| --- | --- | --- |")
    for a, b in itertools.combinations(range(len(names)), 2):
        either_wrong = ~right[a] | ~right[b]
        shared = (~right[a] & ~right[b]).sum() / max(int(either_wrong.sum()), 1)
        print(
            f"| {names[a]} + {names[b]} | {shared:.1%} | "
            f"{(predicted[a] == predicted[b]).mean():.1%} |"
        )
    print(
        f"every model right: {right.all(axis=0).mean():.2%}; at least one right: "
        f"{right.any(axis=0).mean():.2%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "predictions", type=Path, nargs="+", help="files written by `fertool eval ... -o`"
    )
    parser.add_argument(
        "--max-mib", type=float, help="leave out subsets whose fp16 weights exceed this"
    )
    parser.add_argument("--top", type=int, default=20, help="rows to print, best first")
    parser.add_argument(
        "--errors", action="store_true", help="then a table of how alike each pair's mistakes are"
    )
    args = parser.parse_args()
    try:
        probabilities, labels, metas = load_predictions(args.predictions)
    except FertoolError as err:  # one line naming the file, as the CLI prints it
        print(f"error: {err}", file=sys.stderr)
        return int(err.exit_code)
    sizes = [fp16_bytes(meta["model"]) for meta in metas]
    names = [path.stem for path in args.predictions]
    rows = []
    for count in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), count):
            known = [b for b in (sizes[i] for i in subset) if b is not None]
            size = (
                sum(known) if len(known) == len(subset) else None
            )  # None: some model file is not here
            if args.max_mib is not None and (size is None or size > args.max_mib * MIB):
                continue
            predicted = probabilities[list(subset)].mean(axis=0).argmax(axis=1)
            rows.append((float((predicted == labels).mean()), subset, size))
    rows.sort(key=lambda row: (-row[0], len(row[1])))  # ties: fewer models first
    print(
        f"| models averaged ({metas[0]['split']}, --tta {metas[0]['tta']}) | accuracy | fp16 MiB |"
    )
    print("| --- | --- | --- |")
    for score, subset, size in rows[: args.top]:
        mib = "–" if size is None else f"{size / MIB:.2f}"
        print(f"| {' + '.join(names[i] for i in subset)} | {score:.2%} | {mib} |")
    if args.errors:
        print()
        print_shared_errors(probabilities, labels, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
