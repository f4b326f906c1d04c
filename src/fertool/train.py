"""Training a branch: the loop, best-on-validation selection, checkpoints and resume.

    config = TrainConfig(arch="dexpression", epochs=30, seed=1)
    result = train_branch(dataset_artifact, config)          # TrainResult
    result.model, result.history, result.best_val_accuracy

The data set lives on the training device as uint8 (FER2013 is 66 MB) and each batch is
indexed, scaled and augmented there, so there is no DataLoader, no worker process and no
per-image Python in the loop. Losses and hit counts accumulate on the device and are read once
per epoch: the loop never waits on the device mid-epoch.

With a checkpoint path, the full state (weights, best weights, optimizer, every RNG) is saved
after each epoch, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

from fertool.artifacts import Artifact
from fertool.augment import PRESETS, Augment
from fertool.checkpoint import TrainingState, save_checkpoint
from fertool.checkpoint import resume as resume_from
from fertool.distill import (
    blend_targets,
    teacher_network,
    teacher_probabilities,
    view_probabilities,
)
from fertool.distributed import Cluster
from fertool.errors import BadInputError, FertoolError
from fertool.evaluate import predict_logits, select_split, to_input
from fertool.models import (
    Classifier,
    EnsembleClassifier,
    build_classifier,
    model_from_artifact,
)
from fertool.recipes import TrainConfig, learning_rate, make_optimizer
from fertool.runtime import autocast, precision_name, resolve_device, resolve_precision


class Reporter(Protocol):
    """What the training loop tells its caller (the CLI draws progress bars from it)."""

    # A long step before epoch 1; batch_done counts its faces.
    def stage(self, text: str, images: int) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, images: int) -> None: ...
    def batch_done(self, images: int) -> None: ...
    def epoch_end(self, record: dict[str, Any]) -> None: ...


class SilentReporter:
    def stage(self, text: str, images: int) -> None:
        pass

    def epoch_start(self, epoch: int, epochs: int, images: int) -> None:
        pass

    def batch_done(self, images: int) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        pass


@dataclass
class TrainResult:
    model: Classifier
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    images_per_second: float
    device: str
    precision: str
    meta: dict[str, Any] = field(default_factory=dict)

    def metrics(self, val_split: str) -> dict[str, Any]:
        """What a model file records of its training run (`metrics` in its metadata)."""
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "val_split": val_split,
            "images_per_second": self.images_per_second,
            "seconds": self.seconds,
        }


def normalization_of(dataset: Artifact, enabled: bool) -> dict[str, float] | None:
    """The training split's mean/std in [0, 1] units, as the dataset artifact recorded them."""
    if not enabled:
        return None
    return {"mean": float(dataset.meta["train_mean"]), "std": float(dataset.meta["train_std"])}


def mixup(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each image with another of the batch (Zhang et al., 2018): one weight per batch from
    Beta(alpha, alpha), the targets blended by the same weight, as class probabilities.

    Drawn from `generator` (the run's augmentation stream, saved in checkpoints), so a resumed
    run blends the same pairs. Beta comes from numpy, seeded by the generator: torch samples
    Beta only from its global stream. `y` is class indices, or already class probabilities
    (a teacher's blend).
    """
    weight = float(
        np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator))).beta(
            alpha, alpha
        )
    )
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    targets = y.float() if y.is_floating_point() else F.one_hot(y, num_classes).float()
    return (
        weight * x + (1 - weight) * x[partner],
        weight * targets + (1 - weight) * targets[partner],
    )


def optimize_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batch_at: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    count: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    shuffle_rng: torch.Generator,
    device: torch.device,
    reporter: Reporter,
    lr_at: Callable[[int], float] | None = None,
    label_smoothing: float = 0.0,
    cluster: Cluster = Cluster(),
) -> tuple[float, float]:
    """One shuffled pass of `count` examples: `batch_at(index)` gives (inputs, labels),
    `forward` logits.

    Labels are class indices, or class probabilities (mixup); a probability target counts as a
    hit when the logits' top class is its largest share.

    `lr_at(batch)` sets the learning rate of each batch of the pass (times a group's
    `lr_scale`). With several ranks, each
    takes its slice of every global batch (see distributed.py). Returns (mean loss, accuracy)
    over all ranks. Sums stay on the device; they are read once, at the end.
    """
    order = torch.randperm(count, generator=shuffle_rng)
    loss_sum = torch.zeros((), device=device)
    hits = torch.zeros((), device=device, dtype=torch.long)
    seen = torch.zeros((), device=device, dtype=torch.long)
    for batch, start in enumerate(range(0, count, batch_size)):
        index = order[start : start + batch_size]
        if len(index) < cluster.world_size:
            break  # a last batch too small to give every rank an image (only with several ranks)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(batch) * group.get("lr_scale", 1.0)
        x, y = batch_at(cluster.shard(index).to(device))
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the ranks' gradients as equals; slices of an odd batch are not equal
        # (17 and 16 of 33), so each rank's mean counts by its share of the batch, which makes
        # the step the batch's mean, as one process takes it. One rank: a factor of 1.
        (loss * (len(y) * cluster.world_size / len(index))).backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        hits += (logits.detach().argmax(1) == (y.argmax(1) if y.is_floating_point() else y)).sum()
        seen += len(y)
        reporter.batch_done(len(y) * cluster.world_size)
    totals = cluster.sum(torch.stack([loss_sum, hits.float(), seen.float()]))
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


@dataclass
class Run:
    """One training run while it runs: its settings, state, data on the device, and helpers.

    `step_model` is what each step calls: `state.module` itself, or it wrapped for data
    parallelism. A teacher is `teacher`, class probabilities per training face, or
    `teacher_model`, run on each batch as the step sees it (distill.py).
    """

    config: TrainConfig
    state: TrainingState
    step_model: torch.nn.Module
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    device: torch.device
    dtype: torch.dtype | None
    augment: Augment | None = None
    reporter: Reporter = field(default_factory=SilentReporter)
    cluster: Cluster = field(default_factory=Cluster)
    checkpoint: Path | None = None
    dataset_sha256: str = ""
    teacher: torch.Tensor | None = None
    teacher_model: torch.nn.Module | None = None


def training_batch(run: Run, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and targets of one step: augmented faces; labels, blended with a teacher's
    probabilities and mixed up as the config says."""
    config = run.config
    x = to_input(run.train_images[index], run.device)
    if run.augment is not None:
        x = run.augment(x).contiguous(memory_format=torch.channels_last)
    y = run.train_labels[index]
    if run.teacher is not None:
        y = blend_targets(y, run.teacher[index], config.teacher_weight)
    if config.mixup > 0:
        x, y = mixup(x, y, run.num_classes, config.mixup, run.state.augment_rng)
        x = x.contiguous(memory_format=torch.channels_last)
    if run.teacher_model is not None:
        # After mixup: the teacher answers for the blended face, as the student sees it.
        said = view_probabilities(run.teacher_model, x, config.temperature, run.dtype)
        y = blend_targets(y, said, config.teacher_weight)
    return x, y


def train_one_epoch(run: Run) -> tuple[float, float]:
    """One pass over the training split; returns (mean loss, accuracy)."""
    config, model = run.config, run.step_model
    model.train()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(run.device, run.dtype):
            return model(x)

    steps_per_epoch = math.ceil(len(run.train_images) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    first_step = steps_per_epoch * run.state.epoch

    def lr_at(batch: int) -> float:
        return learning_rate(config, first_step + batch, total_steps)

    return optimize_epoch(
        forward,
        lambda index: training_batch(run, index),
        len(run.train_images),
        config.batch_size,
        run.state.optimizer,
        run.state.shuffle_rng,
        run.device,
        run.reporter,
        lr_at=lr_at,
        label_smoothing=config.label_smoothing,
        cluster=run.cluster,
    )


def check_finite(
    model: torch.nn.Module, val_loss: float, epoch: int, checkpoint: Path | None
) -> None:
    """Stop a diverged run before its NaN weights reach any file."""
    weights_ok = all(torch.isfinite(p).all() for p in model.parameters())
    if weights_ok and math.isfinite(val_loss):
        return
    if checkpoint is not None and checkpoint.exists():
        last_good = f"; epoch {epoch - 1}, the last good one, is in {checkpoint}"
    else:
        last_good = "; no epoch finished before it"
    raise FertoolError(
        f"training diverged in epoch {epoch} (non-finite loss or weights){last_good}; "
        "lower --lr and run again"
    )


def evaluate_split(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[float, float]:
    """(loss, accuracy) of the model on uint8 images already on `device`."""
    logits = predict_logits(model, images, device, dtype)
    labels = labels.cpu()
    return F.cross_entropy(logits, labels).item(), (
        logits.argmax(1) == labels
    ).float().mean().item()


def initial_model(
    dataset: Artifact, config: TrainConfig, init: Artifact | None
) -> tuple[Classifier, dict[str, Any], dict[str, float] | None]:
    """(model, arch_args, normalization) the run starts from: random weights, or `init`'s.

    A run started from a trained branch keeps that branch's architecture arguments and the
    normalisation its weights were learned with; the data set's own statistics would shift
    every input those weights expect.
    """
    if init is not None:
        if init.meta["arch"] != config.arch:
            what = (
                "an ensemble"
                if init.meta["kind"] == "ensemble"
                else f"a {init.meta['arch']} branch"
            )
            raise BadInputError(
                f"{init.path}: is {what}, but --arch is {config.arch}; "
                "drop --arch to train it further"
            )
        model = set_dropout(model_from_artifact(init), config.dropout)
        arch_args = {**init.meta["arch_args"], "dropout": config.dropout}
        if isinstance(model, EnsembleClassifier):
            # Each branch keeps the normalisation it carries inside; the ensemble has none.
            return model.unfreeze(), arch_args, None
        return model, arch_args, init.meta.get("normalization")
    arch_args = {"num_classes": len(dataset.meta["classes"]), "dropout": config.dropout}
    normalization = normalization_of(dataset, config.normalize)
    return build_classifier(config.arch, arch_args, normalization), arch_args, normalization


def set_dropout(model: Classifier, p: float) -> Classifier:
    """Give every dropout layer of `model` the probability `p`: a run from trained weights may
    train with another dropout than they were trained with (its arch_args then record `p`).
    An ensemble's branches stay in eval mode while its head trains, so there only the head's
    count."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    return model


def check_teacher(config: TrainConfig, teacher: Artifact | None, cluster: Cluster) -> None:
    """Refuse a teacher's weight without a teacher (or the reverse), and a batch smaller than
    the ranks."""
    if teacher is None and config.teacher_weight > 0:
        raise BadInputError(
            f"--teacher-weight {config.teacher_weight}: needs --teacher PREDS|MODEL, "
            "the teacher's predictions or the teacher"
        )
    if teacher is not None and config.teacher_weight == 0:
        raise BadInputError(
            "--teacher-weight 0: a teacher needs a share above 0; "
            "drop --teacher to train without one"
        )
    if config.batch_size < cluster.world_size:
        raise BadInputError(
            f"--batch-size {config.batch_size}: is the global batch, give at least one image "
            f"to each of the {cluster.world_size} processes"
        )


def teacher_targets(
    teacher: Artifact | None, dataset: Artifact, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor | None, torch.nn.Module | None]:
    """(probabilities per training face, or the teacher model run on each batch), or neither."""
    if teacher is None:
        return None, None
    if teacher.kind == "predictions":
        return teacher_probabilities(teacher, dataset, config.temperature).to(device), None
    return None, teacher_network(teacher, device)


def start_run(
    dataset: Artifact,
    config: TrainConfig,
    model: Classifier,
    device: torch.device,
    reporter: Reporter,
    cluster: Cluster,
    checkpoint: Path | None,
    resume: bool,
) -> Run:
    """The run's data and model on its device, its optimizer and RNGs, resumed if asked."""
    train_images, train_labels, _ = select_split(dataset, "train")
    val_images, val_labels, _ = select_split(dataset, config.val_split)
    model = model.train().to(device).to(memory_format=torch.channels_last)
    state = TrainingState(model, make_optimizer(model, config), config.seed)
    if resume:
        settings, defaults = asdict(config), asdict(TrainConfig())
        sha = dataset.meta["sha256"]
        resume_from(state, checkpoint, settings, sha, dataset.path, defaults=defaults)
    run = Run(
        config=config,
        state=state,
        step_model=cluster.wrap(model, device),
        train_images=train_images.to(device),
        train_labels=train_labels.to(device),
        val_images=val_images.to(device),
        val_labels=val_labels.to(device),
        num_classes=len(dataset.meta["classes"]),
        device=device,
        dtype=resolve_precision(config.precision, device),
        augment=Augment(PRESETS[config.augment_preset], state.augment_rng)
        if config.augment
        else None,
        reporter=reporter,
        cluster=cluster,
        checkpoint=checkpoint,
        dataset_sha256=dataset.meta["sha256"],
    )
    return run


def run_epoch(run: Run) -> dict[str, Any]:
    """Train one epoch, score it on the validation split, keep the best, checkpoint; its record."""
    config, state, cluster = run.config, run.state, run.cluster
    if cluster.active:
        # Each rank draws its own augmentation and dropout, seeded by (seed, rank, epoch) so
        # a resumed data-parallel run repeats them too; the shuffle is shared and saved.
        epoch_seed = (config.seed * 1_000_003 + cluster.rank) * 10_007 + state.epoch
        state.augment_rng.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
    if run.augment is not None:
        # Strong transforms are a regulariser that pays once the network fits the faces; in the
        # first epoch it cannot yet, and they cost it 3.6 points (39.4 against 43.1 % val after
        # one epoch on FER2013), so `augment_warmup` epochs use the report's milder ones.
        warm = state.epoch < config.augment_warmup
        run.augment.config = PRESETS["report" if warm else config.augment_preset]
    run.reporter.epoch_start(state.epoch + 1, config.epochs, len(run.train_images))
    started = time.perf_counter()
    loss, train_acc = train_one_epoch(run)
    train_seconds = time.perf_counter() - started
    # Every rank then scores rank 0's model and makes the same choices.
    cluster.sync_buffers(state.module)
    val_loss, val_acc = evaluate_split(
        state.module, run.val_images, run.val_labels, run.device, run.dtype
    )
    check_finite(state.module, val_loss, state.epoch + 1, run.checkpoint)
    record = {
        "epoch": state.epoch + 1,
        "loss": loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "images_per_second": len(run.train_images) / train_seconds,
        "seconds": time.perf_counter() - started,
    }
    state.end_epoch(record)
    if run.checkpoint is not None and cluster.is_main:
        save_checkpoint(run.checkpoint, state, asdict(config), run.dataset_sha256)
    run.reporter.epoch_end(record)
    return record


def finish_run(run: Run, meta: dict[str, Any]) -> TrainResult:
    """The best epoch's weights, in eval mode on the CPU, with the run's history and speed."""
    state, model = run.state, run.state.module
    model.load_state_dict(state.best_state)
    model.eval()
    images = len(run.train_images)
    train_seconds = sum(images / r["images_per_second"] for r in state.history)
    return TrainResult(
        model=cast(Classifier, model.cpu().to(memory_format=torch.contiguous_format)),
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_accuracy=state.best_val_accuracy,
        seconds=sum(r["seconds"] for r in state.history),
        images_per_second=images * len(state.history) / train_seconds,
        device=str(run.device),
        precision=precision_name(run.dtype),
        meta=meta,
    )


def train_branch(
    dataset: Artifact,
    config: TrainConfig,
    reporter: Reporter | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    cluster: Cluster = Cluster(),
    init: Artifact | None = None,
    teacher: Artifact | None = None,
) -> TrainResult:
    """Train one branch on the dataset's train split, keeping the best weights on
    `config.val_split`.

    With a `cluster` of several ranks (torchrun), every rank calls this; only rank 0 should pass
    a reporter and a checkpoint path. `init`, a branch artifact, gives the starting weights
    (continued training on a fresh schedule, or fine-tuning on other data); `config.init`
    should then hold its digest, so a checkpoint is only resumed with the same start. An
    ensemble artifact as `init` (with `config.arch` "ensemble") trains its branches and head
    together, end to end, and the result is an ensemble again. `teacher`, a predictions artifact
    of the train split or a model run on every step's faces, adds its probabilities to the
    targets (distillation; `config.teacher` should hold its digest and `config.teacher_weight`
    its share).
    """
    config.validate()
    check_teacher(config, teacher, cluster)
    device = cluster.device_for(resolve_device(config.device))
    # A teacher is predictions (a table of probabilities per face) or a model (run on each
    # batch); built before the seed, so it does not move the student's random stream.
    soft, teacher_model = teacher_targets(teacher, dataset, config, device)
    torch.manual_seed(config.seed)  # initial weights and dropout
    model, arch_args, normalization = initial_model(dataset, config, init)
    reporter = reporter or SilentReporter()
    run = start_run(dataset, config, model, device, reporter, cluster, checkpoint, resume)
    run.teacher, run.teacher_model = soft, teacher_model
    while run.state.epoch < config.epochs:
        run_epoch(run)
    meta = {"arch": config.arch, "arch_args": arch_args, "classes": dataset.meta["classes"]}
    # A model is an ensemble only when it started from one (--init).
    if init is not None and isinstance(model, EnsembleClassifier):
        meta.update(_ensemble_parts(init))
    else:
        meta["normalization"] = normalization
    return finish_run(run, meta)


def _ensemble_parts(init: Artifact) -> dict[str, Any]:
    """What a fine-tuned ensemble keeps of its start's metadata: the branches' shapes and
    provenance.

    Their weights have changed, so their metrics describe where they started. A start's `tta` is
    dropped: the epoch was chosen on plain faces, and that is how eval should score it.
    """
    return {key: init.meta[key] for key in ("branches", "branch_files") if key in init.meta}
