"""Train a branch from files, as `fertool train-branch` does, and say how it was made.

    job = BranchJob(config=branch_config("best", {"epochs": 5}, seed=1), command="notebook")
    made = train_branch_job(load_artifact("fer.safetensors", expect="dataset"), job)
    save_tensors("branch1.safetensors", made.tensors, kind=made.kind, meta=made.meta)

`train.train_branch` trains on tensors; this module adds what a file needs around it: the
recipe's settings under the options given, the start model (`init`) and teacher loaded and
checked against the data, and the metadata that lets `info`, `curves` and a resumed run read
the file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fertool.artifacts import MODEL_KINDS, Artifact
from fertool.distill import teacher_provenance
from fertool.distributed import Cluster
from fertool.errors import BadInputError
from fertool.models import check_model_fits
from fertool.provenance import init_provenance, load_with_digest
from fertool.recipes import RECIPES, TrainConfig
from fertool.train import Reporter, TrainResult, train_branch

# A teacher's share of each target when none is given: as much teacher as label.
DEFAULT_TEACHER_WEIGHT = 0.5


@dataclass
class BranchJob:
    """Everything a branch run needs beyond the data: its settings and the files it learns from."""

    config: TrainConfig
    init: Path | None = (
        None  # start from this model's weights (a branch, or an ensemble to fine-tune)
    )
    teacher: Path | None = (
        None  # distil from these predictions, or from this model run on every step
    )
    checkpoint: Path | None = None  # per-epoch state, kept for a resumed run
    resume: bool = False
    command: str = ""  # how the run was started, recorded in the artifact (`info` shows it)


@dataclass
class BranchArtifact:
    """A trained branch (or fine-tuned ensemble), ready to be written with `save_tensors`."""

    kind: str
    tensors: dict[str, Any]
    meta: dict[str, Any]
    result: TrainResult
    summary: dict[str, Any] = field(default_factory=dict)


def branch_config(
    recipe: str,
    options: dict[str, Any],
    start: Artifact | None = None,
    has_teacher: bool = False,
    **fixed: Any,
) -> TrainConfig:
    """The recipe's settings, overridden by the `options` given (None: the recipe's), then `fixed`.

    A start model decides the architecture (train_branch refuses an `arch` that disagrees), the
    dropout it was trained with unless one is given, and the normalisation its weights expect.
    """
    if recipe not in RECIPES:
        raise BadInputError(f"--recipe {recipe}: choose one of {', '.join(RECIPES)}")
    settings = {**RECIPES[recipe], **{k: v for k, v in options.items() if v is not None}, **fixed}
    if settings.get("teacher_weight") is None:
        settings["teacher_weight"] = DEFAULT_TEACHER_WEIGHT if has_teacher else 0.0
    if start is not None:
        settings["arch"] = options.get("arch") or start.meta["arch"]
        if options.get("dropout") is None:
            settings["dropout"] = start.meta.get("arch_args", {}).get("dropout", 0.5)
        settings["normalize"] = (
            start.meta.get("normalization") is not None or start.meta["kind"] == "ensemble"
        )
    return TrainConfig(**settings)


def load_start(path: Path, dataset: Artifact) -> tuple[Artifact, str]:
    """(artifact, sha256) of the model `--init` names, checked: a branch or an ensemble for
    this data."""
    start, digest = load_with_digest(path, ("branch", "ensemble"))
    check_model_fits(start.meta, path, dataset)
    return start, digest


def load_teacher(path: Path, dataset: Artifact) -> tuple[Artifact, str]:
    """(artifact, sha256) of `--teacher`: predictions (distill.py checks they fit) or a model
    for this data."""
    teacher, digest = load_with_digest(path, ("predictions", *MODEL_KINDS))
    if teacher.kind != "predictions":
        check_model_fits(teacher.meta, path, dataset)
    return teacher, digest


def default_output(seed: int, start: Artifact | None) -> Path:
    """branch<SEED>.safetensors; <INIT>-tuned.safetensors when fine-tuning an ensemble."""
    if start is not None and start.kind == "ensemble":
        return Path(f"{start.path.stem}-tuned.safetensors")
    return Path(f"branch{seed}.safetensors")


def train_branch_job(
    dataset: Artifact,
    job: BranchJob,
    reporter: Reporter | None = None,
    cluster: Cluster = Cluster(),
    start: Artifact | None = None,
    teacher: Artifact | None = None,
) -> BranchArtifact:
    """Train as `job` says and return the artifact to write, with its provenance.

    `start` and `teacher` are `job.init` and `job.teacher` already loaded (the command loads them
    first to choose an output name and refuse bad files before any work); they are loaded here
    when not given.
    """
    config = job.config
    if job.init is not None and start is None:
        start, config.init = load_start(job.init, dataset)
    if job.teacher is not None and teacher is None:
        teacher, config.teacher = load_teacher(job.teacher, dataset)
    config.validate()
    result = train_branch(
        dataset,
        config,
        reporter=reporter,
        checkpoint=job.checkpoint,
        resume=job.resume,
        cluster=cluster,
        init=start,
        teacher=teacher,
    )
    metrics = {**result.metrics(config.val_split), "processes": cluster.world_size}
    side = dataset.meta["image_size"]
    meta = {
        **result.meta,
        "input_size": [1, side, side],
        "train_config": asdict(config),
        "seed": config.seed,
        "metrics": metrics,
        "history": result.history,
        "dataset_sha256": dataset.meta["sha256"],
        "dataset_source": dataset.meta["source"],
        "device": result.device,
        "precision": result.precision,
        "command": job.command,
    }
    if start is not None:
        meta["init"] = init_provenance(start.path, config.init, start.meta)
    if teacher is not None:
        meta["teacher"] = teacher_provenance(teacher, config.teacher)
    summary = {
        "epochs": len(result.history),
        **metrics,
        "final_val_accuracy": result.history[-1]["val_accuracy"],
        "device": result.device,
        "precision": result.precision,
    }
    kind = start.meta["kind"] if start is not None else "branch"
    return BranchArtifact(
        kind=kind, tensors=result.model.state_dict(), meta=meta, result=result, summary=summary
    )
