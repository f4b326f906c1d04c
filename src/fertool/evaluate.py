"""Predictions: run a model over a split, with or without test-time augmentation.

    images, labels, indices = select_split(dataset, "val")
    logits = predict_logits(model, images, device=torch.device("cpu"))
    report = classification_report(logits.numpy(), labels.numpy(), CLASSES)   # fertool.metrics

Everything here works on tensors and numpy arrays; files are the CLI's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from fertool.artifacts import Artifact
from fertool.augment import zoom_about_centre
from fertool.constants import SPLITS
from fertool.errors import BadInputError
from fertool.runtime import autocast, eval_mode

# check_tta and model_tta live in schemas.py, torch-free, so an ONNX model resolves its views
# without torch; imported here too, where the views are made.
from fertool.schemas import TTA_MODES, check_tta, model_tta  # noqa: F401

SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


def select_split(dataset: Artifact, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (uint8 N x 48 x 48), labels and dataset indices of one split."""
    if split not in SPLIT_CODES:
        raise BadInputError(f"split {split!r}: choose one of {', '.join(SPLIT_CODES)}")
    indices = torch.nonzero(dataset.tensors["split"] == SPLIT_CODES[split]).flatten()
    if len(indices) == 0:
        counts = ", ".join(
            f"{name} {c.get('total')}" for name, c in dataset.meta.get("counts", {}).items()
        )
        fix = (
            "set some training faces aside with `fertool prepare SOURCE --holdout 0.1`"
            if split == "holdout"
            else "choose another split with --split/--val-split"
        )
        raise BadInputError(f"{dataset.path}: has no {split} images ({counts}); {fix}")
    return dataset.tensors["images"][indices], dataset.tensors["labels"][indices], indices


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W (or N x 1 x H x W) -> float N x 1 x H x W in [0, 1], channels-last,
    on device."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


# TTA_MODES (none, flip, crops) comes from schemas.py, which checks a file's `tta` without torch.

# `crops`: the image and centred crops of 1/1.08 and 1/1.16 of its side (44 and 41 of 48 pixels)
# scaled back up, each also mirrored: six views. Zooming in is one of the training transforms;
# chosen on FER2013 val over shifts and zooming out (docs/RESULTS.md has the comparison).
CROP_ZOOMS = (1.0, 1.08, 1.16)


def tta_views(batch: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of an N x 1 x H x W batch whose softmax `predict_logits` averages."""
    if tta == "none":
        return [batch]
    views = [batch, batch.flip(-1)]
    if tta == "crops":
        for zoom in CROP_ZOOMS[1:]:
            crop = zoom_about_centre(batch, zoom)  # resampled as the training zoom is
            views += [crop, crop.flip(-1)]
    return views


def tta_logits(model: nn.Module, batch: torch.Tensor, tta: str) -> torch.Tensor:
    """Logits (float32) of an N x 1 x H x W input batch; with views (`tta` other than none), the
    log of their mean softmax, whose softmax is the views' mean probabilities. All views of a
    batch go through the model as one pass.

    Each view's logits are divided by the model's `temperature` (fertool calibrate; 1 unless
    models.load_model read one from the file) before the softmax: applied here, not in
    forward(), so every prediction path honours it and gradients and exports see the raw net.
    """
    temperature = float(getattr(model, "temperature", 1.0))
    if (
        tta == "none" or len(batch) == 0
    ):  # no faces: nothing to zoom, and the width is still the classes'
        return model(batch).float() / temperature
    views = tta_views(batch, tta)
    raw = model(torch.cat(views)).float() / temperature
    return log_mean_softmax(raw.view(len(views), len(batch), -1))


def log_mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """views x N x classes logits -> N x classes: the log of each image's mean softmax over its
    views."""
    return logits.float().softmax(dim=-1).mean(dim=0).clamp_min(1e-12).log()


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 100,  # cache-sized: on a 2-core CPU 100 ran 25 % faster than 500
    on_batch: Callable[[int], None] | None = None,
    tta: str = "none",
) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 images, in batches, with the model in eval mode.

    `tta="flip"` (test-time augmentation) averages the softmax of each image and its mirror
    image, the flip every model is trained with; `tta="crops"` adds two zoomed-in centre crops,
    each mirrored too (see `tta_views`). The "logits" are then log mean probabilities.
    """
    check_tta(tta)
    outputs = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            batch = to_input(images[start : start + batch_size], device)
            with autocast(device, dtype):
                outputs.append(tta_logits(model, batch, tta))
            if on_batch is not None:
                on_batch(len(batch))
    return torch.cat(outputs).cpu() if outputs else torch.empty(0, 0)


@dataclass
class Evaluation:
    """A model scored on one split: its logits, the labels, and the report of metrics.py."""

    logits: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor  # each row's index in the data set
    report: dict[str, Any]
    split: str
    tta: str
    seconds: float
    device: str
    precision: str

    @property
    def images_per_second(self) -> float:
        return len(self.labels) / max(self.seconds, 1e-9)


class FaceRunner(Protocol):
    """What `evaluate_model` runs: a facemodel.FaceModel (torch or ONNX Runtime). Declared here,
    not imported, because facemodel's torch side is built on this module's `predict_logits`."""

    def place(self, device: str = "auto", precision: str = "auto") -> tuple[str, str]: ...
    def resolve_tta(self, requested: str) -> str: ...
    def log_probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 100,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray: ...


def evaluate_model(
    model: FaceRunner,
    meta: dict[str, Any],
    dataset: Artifact,
    split: str = "val",
    tta: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 100,
) -> Evaluation:
    """Score `model` (a facemodel.FaceModel: `load_face_model(path)`, or
    `TorchFaceModel(module, meta, name)` for a model in memory; `meta` its metadata) on a split
    of `dataset`, as `fertool eval` does: one path for torch and ONNX Runtime."""
    from fertool.metrics import classification_report

    tta = model.resolve_tta(tta)
    images, labels, indices = select_split(dataset, split)
    run_device, precision_used = model.place(device, precision)
    started = time.perf_counter()
    logits = torch.from_numpy(
        model.log_probabilities(images.numpy(), tta=tta, batch_size=batch_size)
    )
    seconds = time.perf_counter() - started
    report = classification_report(logits.numpy(), labels.numpy(), meta["classes"])
    return Evaluation(
        logits=logits,
        labels=labels,
        indices=indices,
        report=report,
        split=split,
        tta=tta,
        seconds=seconds,
        device=run_device,
        precision=precision_used,
    )
