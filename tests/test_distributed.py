"""Data-parallel training with torchrun: two real CPU ranks talking gloo on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from trainhelpers import next_class_teacher

from fertool.artifacts import load_artifact
from fertool.distributed import Cluster
from fertool.errors import BadInputError
from fertool.train import TrainConfig, train_branch

# One thread per process: two ranks on two cores, and no oversubscription with pytest itself.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = [
    "--recipe",
    "report",
    "--arch",
    "dexpression_bn",
    "--epochs",
    2,
    "--lr",
    "1e-3",
    "--batch-size",
    32,
    "--no-augment",
    "--seed",
    1,
    "--device",
    "cpu",
    "--json",
]


def fertool_run(prefix: list[str], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*prefix, "-m", "fertool", *map(str, args)],
        env=ENV,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


# Exactly the single-process step: no dropout or augmentation (each rank draws its own), no
# batch norm (each rank normalises by its own slice), fp32. Batches of 33 split 17 + 16 (and the
# last of the 1120 squares, 31, 16 + 15): unequal slices, which DDP's plain average of the ranks'
# mean gradients would weigh wrong (1e-3 off here before train.py weighted each by its share).
# Half of each target comes from a teacher naming the next class, so a rank that took other
# faces' teacher rows than its labels' would step elsewhere too.
EXACT = TrainConfig(
    arch="tiny",
    epochs=1,
    batch_size=33,
    lr=0.01,
    optimizer="sgd",
    dropout=0.0,
    augment=False,
    precision="fp32",
    seed=1,
    device="cpu",
    teacher_weight=0.5,
)
EXACT_FLAGS = [
    "--recipe",
    "report",  # TrainConfig's own defaults, which EXACT starts from
    "--arch",
    "tiny",
    "--epochs",
    1,
    "--batch-size",
    33,
    "--lr",
    0.01,
    "--optimizer",
    "sgd",
    "--dropout",
    0,
    "--no-augment",
    "--precision",
    "fp32",
    "--seed",
    1,
    "--device",
    "cpu",
    "--json",
    "--teacher-weight",
    0.5,
]


@pytest.fixture(scope="module")
def runs(easy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    # The brightness-coded squares: a batch-norm branch learns them in two epochs, so the run
    # can be held to a high bar without the minute that four epochs of faces took.
    folder = tmp_path_factory.mktemp("ddp")
    teacher = next_class_teacher(load_artifact(easy_data), tmp_path_factory.mktemp("teacher"))
    ddp = fertool_run(
        TORCHRUN, "train-branch", easy_data, "-o", "ddp.safetensors", *TRAIN, cwd=folder
    )
    exact = fertool_run(
        TORCHRUN,
        "train-branch",
        easy_data,
        "-o",
        "exact.safetensors",
        *EXACT_FLAGS,
        "--teacher",
        teacher,
        cwd=folder,
    )
    return {"folder": folder, "ddp": ddp, "exact": exact, "teacher": teacher}


def test_torchrun_writes_one_artifact_and_one_summary(runs: dict) -> None:
    folder = runs["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "ddp.safetensors",
        "exact.safetensors",
    ]  # no checkpoints left
    lines = [line for line in runs["ddp"].stdout.splitlines() if line.strip()]
    assert len(lines) == 1, runs["ddp"].stdout  # rank 1 printed nothing
    summary = json.loads(lines[0])
    assert summary["output"] == "ddp.safetensors" and summary["epochs"] == 2
    artifact = load_artifact(folder / "ddp.safetensors", expect="branch")
    assert artifact.meta["metrics"]["processes"] == 2
    assert len(artifact.meta["history"]) == 2
    assert all(torch.isfinite(t).all() for t in artifact.tensors.values() if t.is_floating_point())


def test_two_batch_norm_ranks_learn_the_squares(runs: dict) -> None:
    # Each rank normalises by its own slice, so this run is not the single-process one step for
    # step; it must still learn (chance is 1/7; measured 98 %, one process 100 %).
    assert json.loads(runs["ddp"].stdout)["best_val_accuracy"] > 0.8


def test_two_ranks_take_exactly_the_single_process_steps(runs: dict, easy_data: Path) -> None:
    # Two ranks of 17 and 16 faces whose gradients DDP averages are one step of 33. Measured: the
    # weights agree to 1e-7 (the order of float sums); one process at batch 16 instead, i.e. ranks
    # that never averaged, lands 0.04-0.24 away, so the tolerance tells the two apart by 5 orders.
    dataset, teacher = (
        load_artifact(easy_data),
        load_artifact(runs["teacher"], expect="predictions"),
    )
    ddp = load_artifact(runs["folder"] / "exact.safetensors", expect="branch")
    assert ddp.meta["arch_args"]["dropout"] == 0.0 and ddp.meta["metrics"]["processes"] == 2
    assert ddp.meta["teacher"]["file"] == str(runs["teacher"])
    exact = replace(EXACT, teacher=ddp.meta["train_config"]["teacher"])
    single = train_branch(dataset, exact, teacher=teacher).model.state_dict()
    halves = train_branch(
        dataset, replace(exact, batch_size=16), teacher=teacher
    ).model.state_dict()
    for name, weights in ddp.tensors.items():
        assert torch.allclose(weights, single[name], rtol=0, atol=1e-5), (
            name,
            (weights - single[name]).abs().max(),
        )
    farthest = max((halves[name] - single[name]).abs().max().item() for name in single)
    assert farthest > 1e-2, farthest


def test_ranks_take_disjoint_slices_that_cover_each_global_batch() -> None:
    batch = torch.randperm(37)
    slices = [Cluster(rank=r, world_size=3).shard(batch) for r in range(3)]
    assert sorted(torch.cat(slices).tolist()) == sorted(batch.tolist())
    assert {len(s) for s in slices} <= {12, 13}
    assert torch.equal(Cluster().shard(batch), batch)


def test_a_global_batch_smaller_than_the_ranks_is_refused(synthetic_data: Path) -> None:
    dataset = load_artifact(synthetic_data)
    with pytest.raises(BadInputError, match="--batch-size 1"):
        train_branch(
            dataset, TrainConfig(arch="tiny", batch_size=1), cluster=Cluster(rank=0, world_size=2)
        )


def test_two_ranks_fine_tune_an_ensemble_end_to_end(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    # The branches' own classifiers get no gradient under a head over penultimate features; if
    # they were left trainable, DistributedDataParallel would stop at the second step waiting for
    # them.
    from clitools import invoke, ok

    ok(
        invoke(
            "ensemble",
            synthetic_data,
            tiny_branch,
            tiny_branch,
            "-o",
            tmp_path / "e.safetensors",
            "--epochs",
            1,
        )
    )
    result = fertool_run(
        TORCHRUN,
        "train-branch",
        synthetic_data,
        "--init",
        "e.safetensors",
        "-o",
        "t.safetensors",
        "--epochs",
        2,
        "--batch-size",
        32,
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--json",
        cwd=tmp_path,
    )
    assert json.loads(result.stdout)["processes"] == 2
    start, tuned = (
        load_artifact(tmp_path / "e.safetensors"),
        load_artifact(tmp_path / "t.safetensors", expect="ensemble"),
    )
    conv = "branches.0.backbone.body.0.weight"
    assert not torch.equal(start.tensors[conv], tuned.tensors[conv])  # the branches trained too


@pytest.mark.parametrize("rank", [0, 1])
def test_commands_that_do_not_split_their_work_refuse_torchrun(
    rank: int,
    synthetic_data: Path,
    tiny_branch: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torchrun's environment, as each rank sees it: `ensemble` or `eval` would run once per
    # process and every rank would write the same file. Rank 0 says so in one line; the others
    # leave quietly with the same code, so the error is printed once.
    from clitools import invoke, one_line_error, stderr_of

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    for args in (
        ["ensemble", synthetic_data, tiny_branch, tiny_branch, "-o", tmp_path / "e.safetensors"],
        ["eval", synthetic_data, tiny_branch, "-o", tmp_path / "p.npz"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        if rank == 0:
            one_line_error(
                result, f"fertool {args[0]} does not run data-parallel", "without torchrun"
            )
        else:
            assert (stderr_of(result) or result.output).strip() == ""
    assert list(tmp_path.iterdir()) == []
