"""Turn a source (Kaggle CSV, image folders, synthetic faces) into a dataset artifact.

    tensors, meta = dataset_artifact(load_csv(Path("fer2013.csv")))
    save_tensors("data.safetensors", tensors, kind="dataset", meta=meta)

The metadata records per-split counts, the training split's mean and std (what `--normalize`
uses, computed on train only so validation never leaks into preprocessing) and a sha256 of the
content, which every model trained on it copies, so a model says exactly what it saw.

    raw = hold_out(raw, fraction=0.1, seed=0)   # 10 % of each class of train -> split "holdout"
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fertool.constants import CLASSES, SPLITS
from fertool.data import RawDataset
from fertool.errors import BadInputError

DATASET_SCHEMA = 1


def content_sha256(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (images, labels, split):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def split_counts(labels: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    """{"train": {"total": n, "angry": n, ...}, ...} for the splits that have images."""
    counts: dict[str, dict[str, int]] = {}
    for code, name in enumerate(SPLITS):
        in_split = labels[split == code]
        if len(in_split) == 0:
            continue
        per_class = np.bincount(in_split, minlength=len(CLASSES))
        counts[name] = {
            "total": int(len(in_split)),
            **{c: int(per_class[i]) for i, c in enumerate(CLASSES)},
        }
    return counts


def train_statistics(images: np.ndarray, split: np.ndarray) -> tuple[float, float]:
    """Mean and std of the training pixels, in [0, 1] units (all pixels if there is no train
    split)."""
    train = images[split == 0] if (split == 0).any() else images
    pixels = (
        torch.from_numpy(train).float().div_(255.0)
    )  # float64 sums would double the memory for nothing
    return float(pixels.mean()), float(pixels.std())


HOLDOUT = SPLITS.index("holdout")


def check_holdout_fraction(fraction: float) -> None:
    if not 0 < fraction < 1:
        raise BadInputError(
            f"--holdout {fraction}: give the fraction of the training faces to set aside, e.g. 0.1"
        )


def hold_out(raw: RawDataset, fraction: float, seed: int = 0) -> RawDataset:
    """`raw` with `fraction` of each class's training faces moved to the holdout split.

    Per class, so the holdout has train's class mix (disgust is 1.5 % of it); drawn with `seed`,
    so the same source and seed always hold out the same faces. Branches train on split 0 only,
    so an ensemble head trained on the holdout (`ensemble --train-split holdout`) learns how the
    branches behave on faces they never saw, not on faces they have memorised.
    """
    check_holdout_fraction(fraction)
    rng = np.random.default_rng(seed)
    split = raw.split.copy()
    for label in range(len(CLASSES)):
        candidates = np.flatnonzero((raw.split == 0) & (raw.labels == label))
        count = int(round(fraction * len(candidates)))
        split[rng.permutation(candidates)[:count]] = HOLDOUT
    if not (split == HOLDOUT).any():
        raise BadInputError(
            f"--holdout {fraction}: sets aside no face of the {int((raw.split == 0).sum())} in "
            "train; give a larger fraction"
        )
    return dataclasses.replace(raw, split=split)


def dataset_artifact(raw: RawDataset) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a dataset artifact built from `raw`."""
    images = np.ascontiguousarray(raw.images, dtype=np.uint8)
    labels = np.ascontiguousarray(raw.labels, dtype=np.int64)
    split = np.ascontiguousarray(raw.split, dtype=np.uint8)
    mean, std = train_statistics(images, split)
    tensors = {
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels),
        "split": torch.from_numpy(split),
    }
    if raw.masks is not None:
        tensors["masks"] = torch.from_numpy(np.ascontiguousarray(raw.masks, dtype=np.uint8))
    meta = {
        "classes": list(CLASSES),
        "source": raw.source,
        "counts": split_counts(labels, split),
        "train_mean": mean,
        "train_std": std,
        "image_size": int(images.shape[-1]),
        "skipped": len(raw.skipped),
        "sha256": content_sha256(images, labels, split),
        "dataset_schema": DATASET_SCHEMA,
    }
    return tensors, meta


@dataclasses.dataclass
class PrepareConfig:
    """What `fertool prepare` reads and how: one of `source` or `synthetic`."""

    source: Path | None = None  # fer2013.csv, or a folder of images
    synthetic: int = 0  # instead of a source, draw this many synthetic faces
    split: str | None = None  # the split of a ROOT/<class>/* folder
    skip_bad: bool = False  # skip unreadable images (counted) instead of stopping
    seed: int = 0  # of the synthetic faces
    holdout: float = 0.0  # fraction of each class of train set aside as split "holdout"
    holdout_seed: int = 0

    def validate(self) -> None:
        if self.holdout:
            check_holdout_fraction(self.holdout)  # before minutes of reading, not after
        if self.synthetic < 0:
            raise BadInputError(f"--synthetic {self.synthetic}: give a positive number of faces")
        if self.synthetic and self.source is not None:
            raise BadInputError(f"{self.source}: give either SOURCE or --synthetic N, not both")
        if not self.synthetic and self.source is None:
            raise BadInputError("no SOURCE: pass fer2013.csv, an image folder, or --synthetic N")
        if self.source is not None and not self.source.is_dir() and self.split is not None:
            raise BadInputError(
                f"{self.source}: --split applies to a folder of class folders, not a CSV "
                "(its Usage column gives the split)"
            )


def prepare_dataset(
    config: PrepareConfig,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], RawDataset]:
    """(tensors, metadata, the raw data set with its skipped files) of the data set `config`
    names."""
    from fertool import data

    config.validate()
    if config.synthetic:
        raw = data.synthetic_faces(config.synthetic, seed=config.seed)
    elif config.source is not None and config.source.is_dir():
        raw = data.load_folders(config.source, split=config.split, skip_bad=config.skip_bad)
    else:
        assert config.source is not None  # validate() refused neither
        raw = data.load_csv(config.source)
    if config.holdout:
        raw = hold_out(raw, config.holdout, config.holdout_seed)
    tensors, meta = dataset_artifact(raw)
    if config.holdout:
        meta["holdout"] = {"fraction": config.holdout, "seed": config.holdout_seed}
    return tensors, meta, raw
