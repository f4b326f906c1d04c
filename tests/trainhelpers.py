"""Helpers for tests of the training loop."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from fertool.artifacts import save_npz
from fertool.evaluate import predict_logits, select_split


@contextlib.contextmanager
def ctrl_c_in_epoch(epoch: int) -> Iterator[None]:
    """Inside the block, the training loop raises KeyboardInterrupt as epoch `epoch` starts
    (after the previous epochs finished and were checkpointed), as a user's Ctrl-C would."""
    import fertool.train as train_module

    real, calls = train_module.train_one_epoch, []

    def stop_at_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "train_one_epoch", stop_at_epoch)
        with pytest.raises(KeyboardInterrupt):
            yield


def write_teacher(path: Path, dataset, logits: np.ndarray, split: str = "train", **changes) -> Path:
    """A predictions artifact as `fertool eval DATA MODEL --split SPLIT -o PATH` writes it."""
    _, labels, indices = select_split(dataset, split)
    arrays = {
        "logits": logits.astype(np.float32),
        "labels": labels.numpy(),
        "indices": indices.numpy(),
    }
    meta = {
        "model": "teacher.safetensors",
        "model_kind": "branch",
        "dataset": str(dataset.path),
        "dataset_sha256": dataset.meta["sha256"],
        "split": split,
        "classes": dataset.meta["classes"],
        "tta": "none",
    }
    for key, value in changes.items():
        if key in arrays:
            arrays[key] = value
        else:
            meta[key] = value
    save_npz(path, arrays, kind="predictions", meta=meta)
    return path


def next_class_teacher(dataset, tmp_path: Path) -> Path:
    """A teacher sure of the wrong answer: each face's next class, (label + 1) mod 7."""
    _, labels, _ = select_split(dataset, "train")
    shifted = (labels.numpy() + 1) % 7
    return write_teacher(tmp_path / "next.npz", dataset, np.eye(7)[shifted] * 20.0)


def agreement_on_train(model: torch.nn.Module, dataset) -> tuple[float, float]:
    """(share of train faces the model gives the next class, share it gives the label)."""
    images, labels, _ = select_split(dataset, "train")
    predicted = predict_logits(model, images, torch.device("cpu")).argmax(1)
    return (predicted == (labels + 1) % 7).float().mean().item(), (
        predicted == labels
    ).float().mean().item()
