"""What decides a branch's training run: its settings (`TrainConfig`), the named recipes that
fill them (`--recipe`), the learning rate of every step and the optimizer.

    config = TrainConfig(**{**RECIPES["best"], "epochs": 10, "seed": 1})
    learning_rate(config, step=100, total_steps=2250)     # one-cycle, a pure function of the step
    optimizer = make_optimizer(model, config)

The schedule is a function of the step, so a resumed run needs no scheduler state and a changed
`--epochs` simply stretches it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fertool.augment import PRESETS
from fertool.configs import check_schedule
from fertool.errors import BadInputError
from fertool.models import FERClassifier
from fertool.options import Optimizer, Schedule


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the artifact as `train_config`."""

    arch: str = "dexpression"
    epochs: int = 30
    batch_size: int = 100  # the report's
    lr: float = 1e-4  # the report's Adam learning rate; the peak of a schedule
    weight_decay: float = 0.0
    # The last layer's learning rate, as a multiple of lr (make_optimizer says why).
    classifier_lr: float = 1.0
    # Before the branch's classifier (an ensemble's: before each layer of its head).
    dropout: float = 0.5
    augment: bool = True
    normalize: bool = True
    optimizer: str = "adam"  # adam | sgd (Nesterov momentum 0.9)
    schedule: str = "constant"  # constant | cosine | onecycle, stepped every batch
    label_smoothing: float = 0.0
    augment_preset: str = "report"  # a key of augment.PRESETS
    # Epochs at the start that use the "report" preset instead (run_epoch says why).
    augment_warmup: int = 0
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend of image pairs; 0 = off
    # sha256 of the teacher's file, predictions or a model (distill.py); "" = no teacher.
    teacher: str = ""
    teacher_weight: float = 0.0  # the teacher's share of each target
    temperature: float = 1.0  # softens the teacher's probabilities (> 1: flatter)
    val_split: str = "val"
    # sha256 of the branch file whose weights the run starts from; "" = random weights.
    init: str = ""
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        check_schedule(self.epochs, self.batch_size, self.lr)
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment_preset": tuple(PRESETS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                flag = "--" + name.replace("_", "-")
                raise BadInputError(
                    f"{flag} {getattr(self, name)}: choose one of {', '.join(allowed)}"
                )
        if not (math.isfinite(self.classifier_lr) and self.classifier_lr > 0):
            raise BadInputError(
                f"--classifier-lr {self.classifier_lr}: must be a positive multiple of --lr "
                "(1 = --lr)"
            )
        if self.augment_warmup < 0:
            raise BadInputError(
                f"--augment-warmup {self.augment_warmup}: must be 0 (off) or a number of epochs"
            )
        if not 0 <= self.dropout < 1:
            raise BadInputError(f"--dropout {self.dropout}: must be in [0, 1) (0 = off)")
        if not 0 <= self.label_smoothing < 1:
            raise BadInputError(f"--label-smoothing {self.label_smoothing}: must be in [0, 1)")
        if not (math.isfinite(self.mixup) and self.mixup >= 0):
            raise BadInputError(
                f"--mixup {self.mixup}: must be 0 (off) or a positive Beta alpha such as 0.2"
            )
        if not 0 <= self.teacher_weight <= 1:
            raise BadInputError(f"--teacher-weight {self.teacher_weight}: must be in [0, 1]")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise BadInputError(
                f"--temperature {self.temperature}: must be positive "
                "(1 = the teacher's own probabilities)"
            )


OPTIMIZERS = Optimizer.values()
SCHEDULES = Schedule.values()

# Named starting points for `--recipe`; options given on the command line override them.
RECIPES: dict[str, dict[str, Any]] = {
    # The report: DeXpression as published, Adam 1e-4, batch 100, its Keras augmentation.
    "report": {
        "arch": "dexpression",
        "epochs": 30,
        "batch_size": 100,
        "lr": 1e-4,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "schedule": "constant",
        "label_smoothing": 0.0,
        "augment_preset": "report",
    },
    # fertool's: batch norm instead of LRN, SGD + Nesterov on a one-cycle schedule, label
    # smoothing, wider transforms and random erasing (docs/RESULTS.md has the measurements).
    # Its classifier learns at a tenth of the rate and its first epoch sees the report's milder
    # transforms, so a run of any length learns from its first epoch (make_optimizer, run_epoch).
    "best": {
        "arch": "dexpression_bn",
        "epochs": 40,
        "batch_size": 128,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "classifier_lr": 0.1,
        "optimizer": "sgd",
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment_preset": "strong",
        "augment_warmup": 1,
    },
}


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` of `total_steps`: a pure function, so resuming
    needs no scheduler state and a changed --epochs simply stretches the schedule."""
    t = min(step / max(total_steps, 1), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))
    if config.schedule == "onecycle":
        # As torch's OneCycleLR: cosine up from lr/25 over the first 30 %, then down to lr/25e4.
        start, end, warm = config.lr / 25, config.lr / 25e4, 0.3
        if t < warm:
            return start + (config.lr - start) * 0.5 * (1 - math.cos(math.pi * t / warm))
        return end + (config.lr - end) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))
    return config.lr


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer; a branch's last layer (fc) in a group of its own whose rate is
    `config.classifier_lr` times the schedule's (`lr_scale`, read by optimize_epoch).

    Why `--recipe best` gives it a tenth: batch norm makes every conv's output independent of its
    weights' scale, so a large SGD rate only turns them slowly; the fc has no such normalisation
    and reads 2,448 non-negative features (|mean feature|^2 about 3,000 at initialisation), so
    SGD with momentum 0.9 is stable on it only below a rate of about 0.004-0.008. At 0.05 its
    logits swing between classes within 15 steps, and the network recovers only by shrinking its
    features some 250-fold: a lost first epoch (27 % val on FER2013 in a 1-epoch run, a mean
    loss of 3.0 above a uniform guess's 1.95). A tenth keeps it under that bound at the peak
    (docs/experiments/2026-12-07-first-epoch.md).
    """
    out = output_layer(model) if config.classifier_lr != 1 else None
    parameters: Any = model.parameters()
    if out is not None:
        last = {id(p) for p in out.parameters()}
        parameters = [
            {"params": [p for p in model.parameters() if id(p) not in last]},
            {"params": list(out.parameters()), "lr_scale": config.classifier_lr},
        ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def output_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """A branch's last layer (fc); none for an ensemble, whose head trains at the schedule's
    rate."""
    return model.backbone.fc if isinstance(model, FERClassifier) else None
