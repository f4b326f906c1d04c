"""Settings that the command line reads without importing torch: `--help` and the defaults of
options stay quick. One place for each default.

    config = EnsembleConfig(features="logits", epochs=10)
    config.validate()      # BadInputError naming the option, before any work
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fertool.errors import BadInputError
from fertool.schemas import TTA_MODES

# The ensemble head's defaults, the report's: two hidden layers and the output, three dense layers.
HEAD_HIDDEN: tuple[int, ...] = (512, 256)
HEAD_DROPOUT = 0.5


def check_schedule(epochs: int, batch_size: int, lr: float) -> None:
    """The options every trainer shares (a branch's and an ensemble head's),
    refused before any work."""
    if epochs < 1:
        raise BadInputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: must be at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise BadInputError(f"--lr {lr}: must be a positive number")


@dataclass
class EnsembleConfig:
    features: str = "penultimate"  # or "logits"
    hidden: tuple[int, ...] = HEAD_HIDDEN
    dropout: float = HEAD_DROPOUT
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = False
    views: str = (
        "none"  # or "flip" | "crops": the test-time views the head trains and is selected on
    )
    val_split: str = "val"
    train_split: str = (
        "train"  # or "holdout": faces the branches never trained on (prepare --holdout)
    )
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        check_schedule(self.epochs, self.batch_size, self.lr)
        if self.train_split == self.val_split:
            raise BadInputError(
                f"--train-split {self.train_split} is also --val-split: the head would be picked "
                "on the faces it learnt from; choose two different splits"
            )
        if not 0 <= self.dropout < 1:
            raise BadInputError(f"--dropout {self.dropout}: must be in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise BadInputError(f"--weight-decay {self.weight_decay}: must be 0 or more")
        if self.views not in TTA_MODES:
            raise BadInputError(f"--views {self.views}: choose one of {', '.join(TTA_MODES)}")
        if self.augment and self.views != "none":
            raise BadInputError(
                f"--views {self.views} needs --no-augment: it picks among cached views, "
                "--augment computes fresh ones"
            )
