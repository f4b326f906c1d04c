"""The report's ensemble: frozen branches, their outputs concatenated, three dense layers on top.

    branches = [load_artifact(p, expect="branch") for p in paths]
    result = train_ensemble(dataset, branches, EnsembleConfig(features="penultimate"))
    average = average_ensemble(branches)        # the untrained baseline: mean probabilities

The branches never change: their parameters are frozen and they stay in eval mode. Without
augmentation the branch outputs of every image are computed once and the head trains on that
cache (seconds per epoch); with `augment=True` each batch is augmented and sent through the
branches, which costs about as much as training one branch.

With `views="flip"` or `"crops"` the cache holds the outputs of every test-time view of each
face (`evaluate.tta_views`: the mirror image, zoomed-in crops), each step reads one view of each
face at random, and the best epoch is chosen on the mean softmax over the views of each val face,
which is how `fertool eval` scores the saved head (its file asks for that `tta`). A head trained on
plain faces only loses accuracy under test-time augmentation, because each extra view gives it
features it never saw.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

from fertool.artifacts import Artifact
from fertool.augment import Augment, AugmentConfig
from fertool.checkpoint import TrainingState, save_checkpoint
from fertool.checkpoint import resume as resume_from
from fertool.configs import EnsembleConfig
from fertool.errors import BadInputError, WrongKindError
from fertool.evaluate import log_mean_softmax, select_split, to_input, tta_views
from fertool.models import EnsembleClassifier, branch_from_artifact
from fertool.provenance import init_chain
from fertool.runtime import autocast, precision_name, resolve_device, resolve_precision
from fertool.train import Reporter, SilentReporter, TrainResult, check_finite, optimize_epoch


def parse_hidden(text: str) -> tuple[int, ...]:
    """'512,256' -> (512, 256); 'none' -> () for a single linear layer over the branch outputs.

    The first hidden layer holds most of a penultimate head's weights (3 branches x 2448
    features x 512), so a head over more branches needs it narrower to stay small.
    """
    if text.strip().lower() == "none":
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise BadInputError(
            f"--hidden {text}: expected layer widths like 512,256 (or none for a single linear "
            "layer)"
        )
    return sizes


def check_compatible(branches: list[Artifact]) -> None:
    """Refuse branches that predict different classes or take different inputs."""
    if len(branches) < 2:
        raise BadInputError(
            "an ensemble needs at least two branches; pass two or more files made by train-branch"
        )
    first = branches[0]
    for other in branches[1:]:
        for key in ("classes", "input_size"):
            if other.meta.get(key) != first.meta.get(key):
                raise WrongKindError(
                    f"{other.path}: its {key} {other.meta.get(key)} differ from {first.path}'s "
                    f"{first.meta.get(key)}; ensemble branches trained on the same kind of data"
                )


def check_unseen(dataset: Artifact, branches: list[Artifact]) -> None:
    """Refuse a holdout head over a branch that may have trained on the holdout's faces.

    Branches train on split "train" only, so the holdout of the data set they were trained on is
    unseen; a branch trained on another data set (one without the holdout, or another draw of
    it), or started with --init from one that was, may have learnt those very faces, and the head
    would trust it there as it does on train. So would a branch whose epoch was picked on them.
    """
    fix = (
        f"train the branches on {dataset.path} (train-branch uses its train split only), "
        "or use --train-split train"
    )
    for branch in branches:
        if branch.meta.get("train_config", {}).get("val_split") == "holdout":
            raise BadInputError(
                f"{branch.path}: its best epoch was picked on the holdout (--val-split holdout), "
                f"so the head would learn where the branch looks best; {fix}"
            )
        chain = [(str(branch.path), branch.meta)]
        # each --init start records the data set it was trained on
        chain += [
            (f"{branch.path}'s --init start {start.get('file')}", start)
            for start in init_chain(branch.meta.get("init"))
        ]
        for name, record in chain:
            seen = record.get("dataset_sha256")
            if seen != dataset.meta["sha256"]:
                raise BadInputError(
                    f"{name}: trained on another data set (sha256 {str(seen)[:12]}..., not "
                    f"{dataset.meta['sha256'][:12]}...), so it may have seen {dataset.path}'s "
                    f"holdout faces; {fix}"
                )


def build_ensemble(
    branches: list[Artifact], config: EnsembleConfig, average: bool = False
) -> EnsembleClassifier:
    check_compatible(branches)
    torch.manual_seed(config.seed)
    models = [branch_from_artifact(b) for b in branches]
    for model in models:
        model.requires_grad_(False)
    features = "average" if average else config.features
    return EnsembleClassifier(
        models,
        features=features,
        hidden=config.hidden,
        dropout=config.dropout,
        num_classes=len(branches[0].meta["classes"]),
    )


def ensemble_meta(
    branches: list[Artifact], model: EnsembleClassifier, config: EnsembleConfig
) -> dict[str, Any]:
    """What an ensemble artifact records: its own shape plus every branch's metadata."""
    branch_meta = [
        {k: v for k, v in b.meta.items() if k not in ("kind", "schema", "fertool_version")}
        for b in branches
    ]
    return {
        "arch": "ensemble",
        "arch_args": {
            "features": model.mode,
            "hidden": list(config.hidden),
            "dropout": config.dropout,
        },
        "classes": branches[0].meta["classes"],
        "input_size": branches[0].meta["input_size"],
        "branches": branch_meta,
        "branch_files": [str(b.path) for b in branches],
        # A head trained on several views is scored on their mean: eval's `--tta auto` reads this.
        **({"tta": config.views} if config.views != "none" else {}),
    }


@torch.inference_mode()
def branch_outputs(
    model: EnsembleClassifier,
    images: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
    views: str = "none",
    batch_size: int = 100,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """The head's inputs for uint8 images, views x N x features, computed once (the branches are
    frozen).

    Filled in place: six views of FER2013's training faces through three branches are 5 GB.
    """
    outputs: torch.Tensor | None = None
    for start in range(0, len(images), batch_size):
        batch_views = tta_views(to_input(images[start : start + batch_size], device), views)
        for v, view in enumerate(batch_views):
            with autocast(device, dtype):
                features = model.branch_outputs(view).float()
            if outputs is None:
                outputs = torch.empty(
                    len(batch_views), len(images), features.shape[1], device=device
                )
            outputs[v, start : start + len(view)] = features
        if reporter is not None:
            reporter.batch_done(len(batch_views[0]))
    assert outputs is not None, "no images"  # select_split never returns an empty split
    return outputs


def view_mean_logits(head: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of views x N x features inputs: with several views,
    the log of their mean softmax (as `predict_logits`)."""
    if len(inputs) == 1:
        return head(inputs[0])
    return log_mean_softmax(torch.stack([head(view) for view in inputs]))


def train_ensemble(
    dataset: Artifact,
    branches: list[Artifact],
    config: EnsembleConfig,
    reporter: Reporter | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the head on `config.train_split`; keep the epoch that is best on `config.val_split`.

    With `checkpoint`, the head's state is saved after every epoch; `resume` continues from it.
    """
    config.validate()
    reporter = reporter or SilentReporter()
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    if config.train_split == "holdout":
        check_unseen(dataset, branches)
    model = build_ensemble(branches, config).to(device)
    train_images, train_labels, _ = select_split(dataset, config.train_split)
    val_images, val_labels, _ = select_split(dataset, config.val_split)
    train_labels, val_labels = train_labels.to(device), val_labels.to(device)
    head = model.head
    assert head is not None  # build_ensemble gives a head unless asked to average
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = TrainingState(head, optimizer, config.seed)
    data_sha256 = _fingerprint(dataset, branches)
    if resume:
        resume_from(
            state,
            checkpoint,
            _settings(config),
            data_sha256,
            dataset.path,
            defaults=_settings(EnsembleConfig()),
        )

    def cache(images: torch.Tensor, split: str) -> torch.Tensor:
        # Minutes for big branches before the first epoch line: say what is happening,
        # even in a log file.
        views = "" if config.views == "none" else f" ({config.views} views)"
        reporter.stage(
            f"computing the {len(branches)} frozen branches' outputs for the {len(images):,} "
            f"{split} faces{views}, once",
            len(images),
        )
        return branch_outputs(model, images, device, dtype, config.views, reporter=reporter)

    val_inputs = cache(val_images, config.val_split)
    cached = None if config.augment else cache(train_images, config.train_split)
    augment = Augment(AugmentConfig(), state.augment_rng) if config.augment else None

    def batch_at(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cached is not None:
            # One view of each face, drawn afresh every step (always view 0 when there is one).
            view = torch.randint(len(cached), (len(index),), generator=state.augment_rng).to(
                index.device
            )
            return cached[view, index], train_labels[index]
        assert augment is not None  # without a cache, config.augment is on
        return _augmented_outputs(
            model, train_images[index.cpu()], augment, device, dtype
        ), train_labels[index]

    while state.epoch < config.epochs:
        reporter.epoch_start(state.epoch + 1, config.epochs, len(train_images))
        started = time.perf_counter()
        model.train()
        # Cosine annealing over epochs (the closed form of CosineAnnealingLR, so no state to save).
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * state.epoch / config.epochs))
        loss, train_accuracy = optimize_epoch(
            head,
            batch_at,
            len(train_images),
            config.batch_size,
            optimizer,
            state.shuffle_rng,
            device,
            reporter,
            lr_at=lambda _: lr,
        )
        train_seconds = time.perf_counter() - started
        model.eval()
        with torch.inference_mode():
            val_logits = view_mean_logits(head, val_inputs)
        val_loss = F.cross_entropy(val_logits, val_labels).item()
        check_finite(head, val_loss, state.epoch + 1, checkpoint)
        record = {
            "epoch": state.epoch + 1,
            "loss": loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": (val_logits.argmax(1) == val_labels).float().mean().item(),
            "images_per_second": len(train_images) / train_seconds,
            "seconds": time.perf_counter() - started,
        }
        state.end_epoch(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, _settings(config), data_sha256)
        reporter.epoch_end(record)
    head.load_state_dict(state.best_state)
    seconds = sum(r["seconds"] for r in state.history)
    return TrainResult(
        model=model.cpu().eval(),
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_accuracy=state.best_val_accuracy,
        seconds=seconds,
        images_per_second=len(train_images) * len(state.history) / max(seconds, 1e-9),
        device=str(device),
        precision=precision_name(dtype),
        meta=ensemble_meta(branches, model, config),
    )


def _settings(config: EnsembleConfig) -> dict[str, Any]:
    return {**asdict(config), "hidden": list(config.hidden)}


def _fingerprint(dataset: Artifact, branches: list[Artifact]) -> str:
    """What a head was trained on: the data and the exact branch weights, in order."""
    digest = hashlib.sha256(dataset.meta["sha256"].encode())
    for branch in branches:
        for name in sorted(branch.tensors):
            digest.update(name.encode())
            digest.update(
                branch.tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
    return digest.hexdigest()


def _augmented_outputs(
    model: EnsembleClassifier,
    images: torch.Tensor,
    augment: Augment,
    device: torch.device,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    with torch.no_grad(), autocast(device, dtype):
        x = augment(to_input(images, device)).contiguous(memory_format=torch.channels_last)
        return model.branch_outputs(x).float()


def average_ensemble(branches: list[Artifact]) -> EnsembleClassifier:
    """The untrained baseline: the mean of the branches' probabilities."""
    return build_ensemble(branches, EnsembleConfig(), average=True)


def make_ensemble(
    dataset: Artifact,
    branches: list[Artifact],
    config: EnsembleConfig,
    average: bool = False,
    reporter: Reporter | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> tuple[EnsembleClassifier, dict[str, Any]]:
    """(model, metadata) of `fertool ensemble`: a head trained on frozen branches, or with
    `average` their mean probabilities, scored on `config.val_split` as `eval` will score the
    file."""
    from fertool.evaluate import predict_logits
    from fertool.models import check_model_fits

    config.validate()
    for branch in branches:
        check_model_fits(branch.meta, branch.path, dataset)
    if not average:
        result = train_ensemble(
            dataset, branches, config, reporter=reporter, checkpoint=checkpoint, resume=resume
        )
        metrics = result.metrics(config.val_split)
        meta = {
            **result.meta,
            "train_config": _settings(config),
            "metrics": metrics,
            "history": result.history,
        }
        return cast(EnsembleClassifier, result.model), {**meta, **_provenance(dataset, config)}
    model = average_ensemble(branches)
    images, labels, _ = select_split(dataset, config.val_split)
    # On the chosen device and precision, with the views it asks for (`views`), so the accuracy
    # it records is the one eval gives back.
    device = resolve_device(config.device)
    logits = predict_logits(
        model.to(device),
        images,
        device,
        resolve_precision(config.precision, device),
        tta=config.views,
    )
    model.cpu()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    meta = {
        **ensemble_meta(branches, model, config),
        "metrics": {"best_val_accuracy": accuracy, "val_split": config.val_split},
        "history": [],
    }
    return model, {**meta, **_provenance(dataset, config)}


def _provenance(dataset: Artifact, config: EnsembleConfig) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "dataset_sha256": dataset.meta["sha256"],
        "dataset_source": dataset.meta["source"],
        "normalization": None,
    }
