"""Interrupted training in real processes: SIGTERM or Ctrl-C mid-epoch, then --resume.

Each test starts `python -m fertool` as a child, waits for the checkpoint of epoch 1 to appear,
signals the child while it is inside epoch 2, and checks what a user would: the exit code, the
one-line hint, the previous artifact at the output path untouched, the checkpoint holding epoch
1 only, the same command without `--resume` refused, and `--resume` ending with the weights of a
run that was never stopped. The refusals run in this process: they need no signal, and every
child spends seconds importing torch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import _debug_off, invoke, one_line_error  # noqa: F401

from fertool.artifacts import load_artifact

# One thread per child: the same arithmetic in every run (bit-identical weights) and no fight
# over the two cores with the test process. fp32 everywhere: on a CPU with native bf16, `auto`
# would make the epochs of these 300 faces (about 1.6 s each on a 2-GHz Xeon) too short to stop
# the run inside one for sure.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
BRANCH = [
    "--arch",
    "dexpression_bn",
    "--lr",
    "1e-3",
    "--batch-size",
    "32",
    "--no-augment",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--precision",
    "fp32",
]


def fertool(*args: object) -> list[str]:
    return [sys.executable, "-m", "fertool", *map(str, args)]


def run(*args: object) -> subprocess.CompletedProcess:
    result = subprocess.run(fertool(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def as_from_a_terminal() -> None:
    """Give the child Ctrl-C's default meaning. A suite started in the background by a
    non-interactive shell (`make test &`) inherits SIGINT ignored, and Python keeps it ignored,
    as it should for a background job: the run would then finish instead of stopping."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_in_second_epoch(
    args: list[object], checkpoint: Path, signum: int
) -> subprocess.CompletedProcess:
    """Run fertool, and send `signum` shortly after the checkpoint of epoch 1 is written."""
    child = subprocess.Popen(
        fertool(*args),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert child.poll() is None, f"finished before its first checkpoint: {child.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.05)
    time.sleep(0.1)  # into epoch 2: a few batches of a second or more
    assert child.poll() is None, "the run ended before it could be stopped; make its epochs longer"
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_artifact(a).tensors, load_artifact(b).tensors
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def uninterrupted(small_synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "branch.safetensors"
    run("train-branch", small_synthetic_data, "-o", path, "--epochs", 2, *BRANCH)
    return path


@pytest.mark.parametrize(
    "signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_train_branch_stopped_mid_epoch_resumes_to_the_same_weights(
    small_synthetic_data: Path,
    uninterrupted: Path,
    tmp_path: Path,
    signum: int,
    code: int,
    word: str,
):
    output, checkpoint, log = (
        tmp_path / "branch.safetensors",
        tmp_path / "branch.safetensors.ckpt",
        tmp_path / "log.jsonl",
    )
    shutil.copyfile(uninterrupted, output)  # an earlier run's artifact, which must survive
    before = output.read_bytes()
    stopped = stop_in_second_epoch(
        ["train-branch", small_synthetic_data, "-o", output, "--epochs", 2, *BRANCH, "--log", log],
        checkpoint,
        signum,
    )
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr
    hint = next(line for line in stopped.stderr.splitlines() if "--resume" in line)
    assert str(checkpoint) in hint
    assert word in stopped.stderr
    assert output.read_bytes() == before
    saved = load_artifact(checkpoint, expect="checkpoint")
    assert (
        saved.meta["epoch"] == 1 and len(log.read_text().splitlines()) == 1
    )  # epoch 2 was cut off
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "branch.safetensors",
        "branch.safetensors.ckpt",
        "log.jsonl",
    ]

    # The same command without --resume would start over and overwrite the finished epoch: refused
    # (in this process: a refusal needs no signals, and a child costs seconds of importing torch).
    kept = checkpoint.read_bytes()
    forgot = invoke(
        "train-branch", small_synthetic_data, "-o", output, "--epochs", 2, *BRANCH, "--log", log
    )
    one_line_error(forgot, str(checkpoint), "--resume", code=3)
    assert checkpoint.read_bytes() == kept and output.read_bytes() == before

    run(
        "train-branch",
        small_synthetic_data,
        "-o",
        output,
        "--epochs",
        2,
        *BRANCH,
        "--log",
        log,
        "--resume",
    )
    assert same_weights(output, uninterrupted)
    assert not checkpoint.exists()
    assert len(log.read_text().splitlines()) == 2


def test_ensemble_stopped_mid_epoch_resumes_to_the_same_weights(
    small_synthetic_data: Path, uninterrupted: Path, tiny_branch: Path, tmp_path: Path
):
    # --augment sends every batch through the frozen branches, so an epoch lasts long enough to
    # be stopped inside it.
    args = [
        "ensemble",
        small_synthetic_data,
        uninterrupted,
        tiny_branch,
        "--epochs",
        2,
        "--augment",
        "--batch-size",
        16,
        "--seed",
        2,
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    reference = tmp_path / "reference.safetensors"
    run(*args, "-o", reference)
    output, checkpoint = tmp_path / "ensemble.safetensors", tmp_path / "ensemble.safetensors.ckpt"
    stopped = stop_in_second_epoch([*args, "-o", output], checkpoint, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    assert "--resume" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not output.exists()
    assert load_artifact(checkpoint, expect="checkpoint").meta["epoch"] == 1
    one_line_error(invoke(*args, "-o", output), str(checkpoint), "--resume", code=3)
    assert not output.exists()
    run(*args, "-o", output, "--resume")
    assert same_weights(output, reference)
    assert not checkpoint.exists()


def test_resuming_an_ensemble_with_other_branches_is_refused(
    small_synthetic_data: Path, uninterrupted: Path, tiny_branch: Path, tmp_path: Path
):
    from fertool.ensemble import EnsembleConfig, train_ensemble

    output, checkpoint = tmp_path / "ensemble.safetensors", tmp_path / "ensemble.safetensors.ckpt"
    # The checkpoint a stopped `ensemble DATA uninterrupted tiny` run leaves after epoch 1.
    branches = [load_artifact(uninterrupted), load_artifact(tiny_branch)]
    train_ensemble(
        load_artifact(small_synthetic_data),
        branches,
        EnsembleConfig(epochs=2, device="cpu"),
        checkpoint=checkpoint,
    )
    swapped = invoke(
        "ensemble",
        small_synthetic_data,
        tiny_branch,
        uninterrupted,
        "-o",
        output,
        "--device",
        "cpu",
        "--epochs",
        2,
        "--resume",
    )
    one_line_error(swapped, "other data", str(checkpoint), code=3)
    assert checkpoint.exists()


def test_divergence_names_the_epoch_and_the_last_good_checkpoint_and_writes_no_nan(
    synthetic_data: Path, tmp_path: Path
):
    # Fault injection: epoch 2 turns a weight into NaN, as an exploding step would.
    from typer.testing import CliRunner

    import fertool.train
    from fertool.cli import app

    real, calls = fertool.train.train_one_epoch, []

    def poisoned(run):
        result = real(run)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(run.state.module.parameters()).view(-1)[0] = float("nan")
        return result

    output = tmp_path / "branch.safetensors"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fertool.train, "train_one_epoch", poisoned)
        result = CliRunner().invoke(
            app,
            [
                "train-branch",
                str(synthetic_data),
                "-o",
                str(output),
                "--arch",
                "tiny",
                "--epochs",
                "3",
                "--device",
                "cpu",
            ],
        )
    assert result.exit_code == 3
    line = result.output.strip().splitlines()[-1]
    assert (
        "epoch 2" in line
        and "epoch 1, the last good one" in line
        and "branch.safetensors.ckpt" in line
    )
    assert not output.exists()
    saved = load_artifact(tmp_path / "branch.safetensors.ckpt", expect="checkpoint")
    assert saved.meta["epoch"] == 1
    assert all(torch.isfinite(t).all() for k, t in saved.tensors.items() if t.is_floating_point())


def test_sigterm_while_a_file_is_written_leaves_nothing_half_written(tmp_path: Path):
    """Any command, not only training: SIGTERM mid-write unwinds, and the atomic writer removes its
    part file.

    The child's safetensors writer is replaced by one that writes a few bytes, then receives
    SIGTERM and would take 30 s to finish: the one moment a killed process would leave a `.part`.
    """
    code = (
        "import os, signal, sys, time\n"
        "import safetensors.torch\n"
        "def stopped_midway(tensors, path, metadata=None):\n"
        "    open(path, 'wb').write(b'half a file')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        # fertool.artifacts imports it when it writes
        "safetensors.torch.save_file = stopped_midway\n"
        "from fertool.cli import app\n"
        "sys.argv = ['fertool', 'prepare', '--synthetic', '50', '-o', sys.argv[1]]\n"
        "app()\n"
    )
    output = tmp_path / "data.safetensors"
    done = subprocess.run(
        [sys.executable, "-c", code, str(output)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 143, (done.returncode, done.stderr)
    assert "terminated" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
