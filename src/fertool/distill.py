"""Knowledge distillation: a teacher's predictions on the training faces as extra targets.

    fertool eval fer.safetensors ensemble.safetensors --split train --tta crops -o teacher.npz
    fertool train-branch fer.safetensors --recipe best --teacher teacher.npz -o student.safetensors

The teacher is a predictions artifact, not a model: its outputs are computed once, by `eval`,
and the branch trains at the cost of an ordinary run (a three-branch teacher run beside every
step would double it). The price is that the teacher saw each face plain (or through its
test-time views), not through the step's random transforms; the transforms keep the
expression, so its probabilities still describe the face.

Each target is `(1 - weight) * one_hot(label) + weight * softmax(teacher_logits / temperature)`
(Hinton et al., 2015, with the student's side at temperature 1); label smoothing and mixup
then apply to it as they do to a plain label.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fertool.artifacts import Artifact
from fertool.errors import BadInputError
from fertool.evaluate import select_split

REMAKE = "write it with `fertool eval DATA TEACHER --split train -o teacher.npz`"


def teacher_probabilities(teacher: Artifact, dataset: Artifact, temperature: float) -> torch.Tensor:
    """The teacher's class probabilities for the dataset's train split, in the split's order (float32 N x K).

    Refused unless the predictions were made on this very data set's train split: a teacher
    for other faces, or for another split, would teach the wrong answer without any error.
    """
    where = f"--teacher {teacher.path}"
    if teacher.meta.get("dataset_sha256") != dataset.meta["sha256"]:
        raise BadInputError(f"{where}: was predicted on other data than {dataset.path}; {REMAKE}")
    if teacher.meta.get("split") != "train":
        raise BadInputError(f"{where}: holds the {teacher.meta.get('split')} split, a teacher needs the train split; {REMAKE}")
    if list(teacher.meta.get("classes", [])) != list(dataset.meta["classes"]):
        raise BadInputError(f"{where}: predicts classes {teacher.meta.get('classes')}, but {dataset.path} has "
                            f"{dataset.meta['classes']}; {REMAKE}")
    _, _, indices = select_split(dataset, "train")
    given = teacher.tensors.get("indices")
    if given is None or not torch.equal(torch.as_tensor(given).long(), indices.long()):
        raise BadInputError(f"{where}: does not hold one prediction per train face in order; {REMAKE}")
    logits = torch.as_tensor(teacher.tensors["logits"]).float()
    return (logits / temperature).softmax(dim=1)


def blend_targets(labels: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """Class-probability targets: the one-hot labels and the teacher's probabilities, mixed by `weight`.

    With `weight` at most 0.5 the label keeps the largest share, so a hit still means the true class.
    """
    return (1 - weight) * F.one_hot(labels, teacher.shape[1]).to(teacher.dtype) + weight * teacher


def teacher_provenance(teacher: Artifact, sha256: str) -> dict[str, Any]:
    """What a distilled branch records of its teacher (shown by `fertool info`)."""
    return {"file": str(teacher.path), "sha256": sha256, "model": teacher.meta.get("model"),
            "tta": teacher.meta.get("tta")}
