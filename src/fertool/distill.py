"""Knowledge distillation: a teacher's predictions on the training faces as extra targets.

    fertool eval fer.safetensors ensemble.safetensors --split train --tta crops -o teacher.npz
    fertool train-branch fer.safetensors --recipe best --teacher teacher.npz -o student.safetensors
    fertool train-branch fer.safetensors --recipe best --teacher ensemble.safetensors \\
        -o student.safetensors

The teacher comes in two forms. A predictions artifact is computed once, by `eval`, and the
branch trains at the cost of an ordinary run; the price is that the teacher saw each face
plain (or through its test-time views), not through the step's random crop, shift or erasing,
so its answer describes a face the student is not shown. A model (a branch or an ensemble) is
run beside every step on the very faces the student sees, after augmentation and mixup (the
"consistent teacher" of Beyer et al., 2022): its answer fits the view, at the cost of its
forward pass (a three-wide-branch teacher next to a wide student: 1.68x the epoch time on the
project's 2-core CPU, docs/RESULTS.md).

Each target is `(1 - weight) * one_hot(label) + weight * softmax(teacher_logits / temperature)`
(Hinton et al., 2015, with the student's side at temperature 1); label smoothing and mixup
then apply to it as they do to a plain label.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from fertool.artifacts import Artifact
from fertool.errors import BadInputError
from fertool.evaluate import select_split
from fertool.models import model_from_artifact
from fertool.runtime import autocast

REMAKE = "write it with `fertool eval DATA TEACHER --split train -o teacher.npz`"


def teacher_probabilities(teacher: Artifact, dataset: Artifact, temperature: float) -> torch.Tensor:
    """The teacher's class probabilities for the dataset's train split, in the split's order
    (float32 N x K).

    Refused unless the predictions were made on this very data set's train split: a teacher
    for other faces, or for another split, would teach the wrong answer without any error.
    """
    where = f"--teacher {teacher.path}"
    if teacher.meta.get("dataset_sha256") != dataset.meta["sha256"]:
        raise BadInputError(f"{where}: was predicted on other data than {dataset.path}; {REMAKE}")
    if teacher.meta.get("split") != "train":
        raise BadInputError(
            f"{where}: holds the {teacher.meta.get('split')} split, "
            f"a teacher needs the train split; {REMAKE}"
        )
    if list(teacher.meta.get("classes", [])) != list(dataset.meta["classes"]):
        raise BadInputError(
            f"{where}: predicts classes {teacher.meta.get('classes')}, but {dataset.path} has "
            f"{dataset.meta['classes']}; {REMAKE}"
        )
    _, _, indices = select_split(dataset, "train")
    given = teacher.tensors.get("indices")
    if given is None or not torch.equal(torch.as_tensor(given).long(), indices.long()):
        raise BadInputError(
            f"{where}: does not hold one prediction per train face in order; {REMAKE}"
        )
    logits = torch.as_tensor(teacher.tensors["logits"]).float()
    return (logits / temperature).softmax(dim=1)


def teacher_network(teacher: Artifact, device: torch.device) -> torch.nn.Module:
    """A model artifact as a frozen teacher on `device`, to be run on each step's faces.

    The caller has checked that it predicts the data's classes at its image size. Its own
    test-time views (`tta` in its metadata) are not used: it answers for the one view the
    student is shown.
    """
    network = (
        model_from_artifact(teacher).to(device).to(memory_format=torch.channels_last)
    )  # in eval mode
    return network.requires_grad_(False)


def view_probabilities(
    network: torch.nn.Module, x: torch.Tensor, temperature: float, dtype: torch.dtype | None
) -> torch.Tensor:
    """The teacher's class probabilities for a batch as the student sees it (float32 B x K)."""
    # no_grad, not inference_mode: the probabilities become loss targets, which autograd keeps.
    with torch.no_grad(), autocast(x.device, dtype):
        logits = network(x)
    return (logits.float() / temperature).softmax(dim=1)


def blend_targets(targets: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """Class-probability targets: the labels (class indices, or probabilities after mixup) and
    the teacher's probabilities, mixed by `weight`.

    With `weight` at most 0.5 the label keeps the largest share, so a hit still means the true
    class.
    """
    if not targets.is_floating_point():
        targets = F.one_hot(targets, teacher.shape[1])
    return (1 - weight) * targets.to(teacher.dtype) + weight * teacher


def architecture_text(meta: dict[str, Any]) -> str | None:
    """A model's architecture in words: a branch's arch, or what an ensemble is made of.

    An ensemble's own arch is just "ensemble"; the branches are what a reader of `info` wants.
    """
    branches = meta.get("branches")
    if meta.get("kind") != "ensemble" or not branches:
        return meta.get("arch")
    counts = Counter(str(branch.get("arch")) for branch in branches)
    return f"ensemble of {len(branches)}: " + ", ".join(f"{n} {arch}" for arch, n in counts.items())


def teacher_provenance(teacher: Artifact, sha256: str) -> dict[str, Any]:
    """What a distilled branch records of its teacher (shown by `fertool info`)."""
    if teacher.kind != "predictions":
        # A model run on every step's faces: the file is the model, and it used no test-time views.
        return {
            "file": str(teacher.path),
            "sha256": sha256,
            "model": str(teacher.path),
            "online": True,
            "arch": architecture_text(teacher.meta),
            "val_accuracy": teacher.meta.get("metrics", {}).get("best_val_accuracy"),
        }
    return {
        "file": str(teacher.path),
        "sha256": sha256,
        "model": teacher.meta.get("model"),
        "tta": teacher.meta.get("tta"),
    }
