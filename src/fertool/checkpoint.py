"""Per-epoch checkpoints: everything a training run needs to continue exactly where it stopped.

    state = TrainingState(model, optimizer, seed=1)
    ...one epoch...; state.end_epoch(record, model)
    save_checkpoint(path, state, settings={...}, data_sha256=...)
    resume(state, path, settings={...}, data_sha256=..., defaults={...})

A checkpoint is an ordinary artifact (kind "checkpoint"): weights, the best weights so far,
optimizer state, every RNG, the history, and the settings it was made with. Learning-rate
schedules in fertool are functions of the step, so no scheduler state is needed; a resumed run
therefore ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fertool.artifacts import load_artifact, save_tensors
from fertool.errors import BadInputError

# Settings that may change between runs without changing what is computed (epochs stretches
# the schedule; it is how a run is lengthened or cut short).
RESUMABLE_CHANGES = {"epochs", "device", "precision"}


class TrainingState:
    """The trained module, its optimizer, the RNGs, the history and the best epoch so far."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, seed: int):
        self.module = module
        self.optimizer = optimizer
        self.shuffle_rng = torch.Generator().manual_seed(seed)
        self.augment_rng = torch.Generator().manual_seed(seed + 1_000_003)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_state = copy.deepcopy(module.state_dict())
        self.best_epoch = 0
        self.best_val_accuracy = -1.0

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Count a finished epoch; keep its weights if its validation accuracy is the best yet."""
        self.epoch += 1
        self.history.append(record)
        if record["val_accuracy"] > self.best_val_accuracy:
            self.best_val_accuracy, self.best_epoch = record["val_accuracy"], self.epoch
            self.best_state = copy.deepcopy(self.module.state_dict())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.module.state_dict().items()}
        out.update({f"best.{k}": v for k, v in self.best_state.items()})
        for index, state in self.optimizer.state_dict()["state"].items():
            out.update({f"optim.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
        out["rng.torch"] = torch.get_rng_state()
        out["rng.shuffle"] = self.shuffle_rng.get_state()
        out["rng.augment"] = self.augment_rng.get_state()
        return out

    def meta(self) -> dict[str, Any]:
        groups = [
            {k: v for k, v in g.items() if k != "params"}
            for g in self.optimizer.state_dict()["param_groups"]
        ]
        return {
            "epoch": self.epoch,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "param_groups": groups,
        }

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.module.load_state_dict(prefixed("model."))
        self.best_state = prefixed("best.")
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in prefixed("optim.").items():
            index, name = key.split(".", 1)
            optim_state.setdefault(int(index), {})[name] = value
        saved = self.optimizer.state_dict()
        groups = [
            {**group, "params": saved["param_groups"][i]["params"]}
            for i, group in enumerate(meta["param_groups"])
        ]
        self.optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        self.shuffle_rng.set_state(tensors["rng.shuffle"])
        self.augment_rng.set_state(tensors["rng.augment"])
        self.epoch, self.history = meta["epoch"], meta["history"]
        self.best_epoch, self.best_val_accuracy = meta["best_epoch"], meta["best_val_accuracy"]


def save_checkpoint(
    path: Path, state: TrainingState, settings: dict[str, Any], data_sha256: str
) -> None:
    """Write the state after a finished epoch (atomically: a kill mid-write keeps the previous
    one)."""
    save_tensors(
        path,
        state.tensors(),
        kind="checkpoint",
        meta={"train_config": settings, "dataset_sha256": data_sha256, **state.meta()},
    )


def resume(
    state: TrainingState,
    path: Path | None,
    settings: dict[str, Any],
    data_sha256: str,
    data_path: Path,
    defaults: dict[str, Any],
) -> None:
    """Load `path` into `state`, refusing a checkpoint made on other data or with other settings.

    `data_sha256` is what `save_checkpoint` was given (for an ensemble head: data and branches).
    `defaults` fills settings that an older fertool did not record: they had those values then.
    """
    if path is None or not path.exists():
        raise BadInputError(f"{path}: no checkpoint to resume from; run again without --resume")
    saved = load_artifact(path, expect="checkpoint")
    if saved.meta.get("dataset_sha256") != data_sha256:
        raise BadInputError(
            f"{path}: was made on other data than {data_path}; pass the same DATA or drop --resume"
        )
    old = {
        k: v
        for k, v in {**defaults, **saved.meta["train_config"]}.items()
        if k not in RESUMABLE_CHANGES
    }
    new = {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
    if old != new:
        changed = sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))
        raise BadInputError(
            f"{path}: was made with other settings ({', '.join(changed)}); "
            "use the same options or drop --resume"
        )
    try:
        state.restore(saved.tensors, saved.meta)
    except (KeyError, RuntimeError, ValueError, IndexError) as err:
        raise BadInputError(
            f"{path}: checkpoint does not fit this run ({str(err).splitlines()[0]}); drop --resume"
        ) from err


def checkpoint_path(output: Path) -> Path:
    """Where train-branch and ensemble keep their per-epoch checkpoint: beside the output,
    named after it."""
    return output.with_name(output.name + ".ckpt")


def run_checkpoint(output: Path, resume: bool) -> Path:
    """The checkpoint of a run about to start; one left by a stopped run needs --resume or deleting.

    A fresh run overwrites the checkpoint after its first epoch, so forgetting --resume would
    throw away every epoch the stopped run had finished: refused before any work instead.
    """
    checkpoint = checkpoint_path(output)
    if checkpoint.exists() and not resume:
        raise BadInputError(
            f"{checkpoint}: a stopped run's checkpoint; add --resume to continue it, or delete the "
            "file to start again"
        )
    return checkpoint
