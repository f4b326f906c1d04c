"""The scripts that make the published results: they run end to end on the synthetic faces.

scripts/train_default.sh makes the bundled model and scripts/ablation.sh the report's
ablation table; here each runs with one-epoch settings, through the installed `fertool`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fertool.artifacts import load_artifact
from fertool.evaluate import TTA_MODES

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    fertool = Path(sys.executable).parent / "fertool"
    full_env = {**os.environ, "FERTOOL": str(fertool), "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
    )


def test_train_default_trains_continues_ensembles_and_packs(
    small_synthetic_data: Path, tmp_path: Path
) -> None:
    out, packed = tmp_path / "runs", tmp_path / "default.safetensors"
    # ARCH=tiny: the stages' chaining is under test, not what they learn (test 2 runs another arch).
    env = {
        "SEEDS": "1 2",
        "ARCH": "tiny",
        "EPOCHS": "1",
        "MORE": "1 1",
        "MILD": "1",
        "HIDDEN": "48,24",
        "HEAD_EPOCHS": "3",
        "HEAD_DROPOUT": "0.3",
        "DEFAULT_OUT": str(packed),
    }
    done = run_script("train_default.sh", small_synthetic_data, out, env=env)
    assert done.returncode == 0, done.stderr
    for seed in (1, 2):
        # Each stage starts from the one before: branch -> more -> more2 -> mild.
        chain = [f"branch{seed}", f"branch{seed}-more", f"branch{seed}-more2", f"branch{seed}-mild"]
        for start, stage in zip(chain, chain[1:]):
            meta = load_artifact(out / f"{stage}.safetensors").meta
            assert meta["init"]["file"] == str(out / f"{start}.safetensors")
            assert meta["train_config"]["schedule"] == "cosine" and meta["arch"] == "tiny"
        mild = load_artifact(out / f"branch{seed}-mild.safetensors").meta["train_config"]
        assert (mild["augment_preset"], mild["lr"]) == ("report", 0.005)
    ensemble = load_artifact(out / "ensemble.safetensors").meta
    assert [b["init"]["file"] for b in ensemble["branches"]] == [
        str(out / f"branch{s}-more2.safetensors") for s in (1, 2)
    ]
    assert ensemble["arch_args"]["hidden"] == [48, 24] and len(ensemble["history"]) == 3
    assert ensemble["arch_args"]["dropout"] == 0.3
    model = load_artifact(packed)
    packing = model.meta["packing"]
    assert packing["split"] == "val" and set(packing["accuracy_fp32"]) == set(TTA_MODES)
    # The file's TTA is the cheapest within 0.1 point of the best (which one depends on the
    # float rounding of this machine's thread count, so the test checks the rule, not a mode).
    scores = packing["accuracy_fp32"]
    assert model.meta["tta"] == next(
        m for m in TTA_MODES if scores[m] >= max(scores.values()) - 0.001
    )
    # A second run finds everything done: it trains nothing and packs the same candidate again.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    again = run_script("train_default.sh", small_synthetic_data, out, env=env)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == stamps
    assert load_artifact(packed).meta["packing"]["from"] == model.meta["packing"]["from"]


def test_train_default_per_seed_arch_and_epochs_reach_every_stage_and_a_teacher_distils(
    small_synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    out, packed = tmp_path / "runs", tmp_path / "default.safetensors"
    # HEAD=average and TEACHER here, the trained head in the first test:
    # one run of the script covers both.
    env = {
        "SEEDS": "1@2 2:dexpression_bn@1",
        "ARCH": "tiny",
        "EPOCHS": "3",
        "MORE": "1",
        "HEAD": "average",
        "DEFAULT_OUT": str(packed),
        "TEACHER": str(tiny_branch),
        "TEACHER_WEIGHT": "0.3",
    }
    done = run_script("train_default.sh", small_synthetic_data, out, env=env)
    assert done.returncode == 0, done.stderr
    # The teacher's predictions are made once, on this data's train split with crops, and every
    # stage learns from them.
    teacher = load_artifact(out / "teacher.npz").meta
    assert (teacher["split"], teacher["tta"], teacher["model"]) == (
        "train",
        "crops",
        str(tiny_branch),
    )
    for name in ("branch1", "branch1-more", "branch2", "branch2-more"):
        meta = load_artifact(out / f"{name}.safetensors").meta
        assert meta["teacher"]["file"] == str(out / "teacher.npz"), name
        assert (meta["train_config"]["teacher_weight"], meta["train_config"]["temperature"]) == (
            0.3,
            1.0,
        )
    # ARCH for every seed, SEED:ARCH for one; the next stage keeps its start's architecture.
    archs = {
        n: load_artifact(out / f"{n}.safetensors").meta["arch"]
        for n in ("branch1", "branch1-more", "branch2", "branch2-more")
    }
    assert archs == {
        "branch1": "tiny",
        "branch1-more": "tiny",
        "branch2": "dexpression_bn",
        "branch2-more": "dexpression_bn",
    }
    # SEED@N and SEED:ARCH@N train that seed's first stage N epochs instead of EPOCHS (3 here).
    epochs = {
        n: json.loads((out / f"{n}.json").read_text())["epochs"] for n in ("branch1", "branch2")
    }
    assert epochs == {"branch1": 2, "branch2": 1}
    # The ensemble averages the last stages' probabilities: no head, nothing trained for it.
    ensemble = load_artifact(out / "ensemble.safetensors").meta
    assert [b["arch"] for b in ensemble["branches"]] == ["tiny", "dexpression_bn"]
    assert ensemble["arch_args"]["features"] == "average" and ensemble["history"] == []
    assert not (out / "ensemble.jsonl").exists()


def test_train_default_teacher_online_runs_the_model_beside_every_step(
    small_synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    out, packed = tmp_path / "runs", tmp_path / "default.safetensors"
    env = {
        "SEEDS": "1",
        "ARCH": "tiny",
        "EPOCHS": "1",
        "DEFAULT_OUT": str(packed),
        "TEACHER": str(tiny_branch),
        "TEACHER_ONLINE": "1",
        "TEACHER_WEIGHT": "0.3",
        "TEMPERATURE": "2",
    }
    done = run_script("train_default.sh", small_synthetic_data, out, env=env)
    assert done.returncode == 0, done.stderr
    assert not (out / "teacher.npz").exists()  # no predictions: the model is the teacher
    meta = load_artifact(out / "branch1.safetensors").meta
    assert meta["teacher"]["online"] is True and meta["teacher"]["file"] == str(tiny_branch)
    assert (meta["train_config"]["teacher_weight"], meta["train_config"]["temperature"]) == (
        0.3,
        2.0,
    )


def test_train_default_refuses_an_unknown_head_before_training(
    small_synthetic_data: Path, tmp_path: Path
) -> None:
    bad = run_script(
        "train_default.sh", small_synthetic_data, tmp_path / "bad", env={"HEAD": "mean"}
    )
    assert bad.returncode != 0 and "HEAD=mean" in bad.stderr
    missing = run_script(
        "train_default.sh",
        small_synthetic_data,
        tmp_path / "bad",
        env={"TEACHER": str(tmp_path / "wide.safetensors")},
    )
    assert (
        missing.returncode != 0
        and "TEACHER=" in missing.stderr
        and "train the teacher first" in missing.stderr
    )
    assert not (tmp_path / "bad").exists()


def test_ablation_trains_the_four_settings_side_by_side_and_prints_the_table(
    small_synthetic_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ablation"
    done = run_script("ablation.sh", small_synthetic_data, 1, out, env={"PARALLEL": "1"})
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split("|")[1].strip() for row in rows] == ["plain", "augment", "normalize", "both"]
    for (
        row
    ) in rows:  # best val, its epoch, the val curve and the last train accuracy come from the log
        name = row.split("|")[1].strip()
        log = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        assert cells[1] == "1 / 1" and cells[0] == f"{max(e['val_accuracy'] for e in log):.1%}"
        assert (
            cells[2] == f"{log[-1]['val_accuracy']:.1%} (epochs 1)"
            and cells[3] == f"{log[-1]['train_accuracy']:.1%}"
        )
    settings = {
        name: load_artifact(out / f"{name}.safetensors").meta["train_config"]
        for name in ("plain", "augment", "normalize", "both")
    }
    assert [(s["augment"], s["normalize"]) for s in settings.values()] == [
        (False, False),
        (True, False),
        (False, True),
        (True, True),
    ]
    assert all(
        s["arch"] == "dexpression" and s["optimizer"] == "adam" and s["seed"] == 1
        for s in settings.values()
    )
    assert all(json.loads((out / f"{name}.json").read_text())["epochs"] == 1 for name in settings)


def test_ablation_table_reads_each_log_by_quarters_and_its_latest_run(tmp_path: Path) -> None:
    """The table of a finished 8-epoch ablation: val at epochs 2, 4, 6, 8 and the last train
    accuracy from each log. A log can hold an older run first (an artifact deleted to train it
    again: `--log` appends), so an epoch counts by its last entry. The settings are finished, so
    the script trains nothing and only asks `fertool info` (a stand-in here)."""
    out = tmp_path / "out"
    out.mkdir()
    for k, name in enumerate(("plain", "augment", "normalize", "both")):
        (out / f"{name}.safetensors").write_bytes(b"")
        older = [{"epoch": e, "val_accuracy": 0.99, "train_accuracy": 0.99} for e in range(1, 9)]
        latest = [
            {"epoch": e, "val_accuracy": 0.1 * k + 0.01 * e, "train_accuracy": 0.5 + 0.01 * e}
            for e in range(1, 9)
        ]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older + latest))
    info = tmp_path / "fertool"
    info.write_text(
        "#!/bin/sh\n# fertool info FILE --json\n"
        'echo "{\\"file\\": \\"$2\\", \\"epochs\\": 8, \\"best_epoch\\": 8, '
        '\\"val_accuracy\\": 0.5, \\"train_seconds\\": 600}"\n'
    )
    info.chmod(0o755)
    done = run_script(
        "ablation.sh", tmp_path / "data.safetensors", 8, out, env={"FERTOOL": str(info)}
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert (
        rows[0]
        == "| plain | 50.0% | 8 / 8 | 2.0% / 4.0% / 6.0% / 8.0% (epochs 2, 4, 6, 8) | 58.0% "
        "| 10 min |"
    )
    assert (
        rows[3]
        == "| both | 50.0% | 8 / 8 | 32.0% / 34.0% / 36.0% / 38.0% (epochs 2, 4, 6, 8) | 58.0% "
        "| 10 min |"
    )


def test_a_stopped_ablation_says_to_rerun_and_keeps_the_stop_status(tmp_path: Path) -> None:
    """A time limit that stops the four side-by-side runs is not "a setting failed"."""
    stopped = tmp_path / "fertool"
    stopped.write_text(
        "#!/bin/sh\nexit 143\n"
    )  # what fertool exits with after SIGTERM, its epoch saved
    stopped.chmod(0o755)
    done = run_script(
        "ablation.sh",
        tmp_path / "data.safetensors",
        1,
        tmp_path / "out",
        env={"PARALLEL": "1", "FERTOOL": str(stopped)},
    )
    assert done.returncode == 143
    assert (
        "stopped; run the same command again to resume" in done.stderr
        and "failed" not in done.stderr
    )


def test_compare_tta_scores_crops_as_eval_does(synthetic_data: Path, tiny_branch: Path) -> None:
    from clitools import invoke, json_of

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare_tta.py"),
            str(synthetic_data),
            str(tiny_branch),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[2].strip(): line.split("|") for line in done.stdout.splitlines()[2:]}
    assert len(rows) == 10
    for script_name, mode, views in (
        ("none", "none", 1),
        ("flip", "flip", 2),
        ("flip + zoom in (= --tta crops)", "crops", 6),
    ):
        row = rows[script_name]
        assert int(row[3]) == views
        expected = json_of(
            invoke(
                "eval", synthetic_data, tiny_branch, "--tta", mode, "--json", "--precision", "fp32"
            )
        )["accuracy"]
        assert float(row[4].strip().rstrip("%")) == pytest.approx(100 * expected, abs=0.006)
    # The sets added later: each mirror, zoom and shift counted once.
    assert (
        int(rows["flip + zoom in, finer steps"][3]) == 8
        and int(rows["flip + shift 2 px at each crops zoom"][3]) == 30
    )

    # --precision bf16 computes as eval does in bf16 (within a face:
    # the script's views are resampled).
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare_tta.py"),
            str(synthetic_data),
            str(tiny_branch),
            "--precision",
            "bf16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    row = next(
        line.split("|")
        for line in done.stdout.splitlines()
        if line.split("|")[2].strip() == "flip + zoom in (= --tta crops)"
    )
    expected = json_of(
        invoke(
            "eval", synthetic_data, tiny_branch, "--tta", "crops", "--json", "--precision", "bf16"
        )
    )
    assert float(row[4].strip().rstrip("%")) == pytest.approx(
        100 * expected["accuracy"], abs=100 / expected["count"] + 0.006
    )


def test_average_weights_means_the_parameters_and_measures_batch_norm_again(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    from clitools import invoke, json_of, ok

    from fertool.evaluate import select_split, to_input
    from fertool.models import model_from_artifact

    # Two stages of one dexpression_bn run (it has batch norm to measure again), one epoch each.
    first, second, averaged = (
        tmp_path / "a.safetensors",
        tmp_path / "b.safetensors",
        tmp_path / "avg.safetensors",
    )
    common = ["--epochs", "1", "--batch-size", "64", "--seed", "1", "--precision", "fp32"]
    ok(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            first,
            "--arch",
            "dexpression_bn",
            "--lr",
            "1e-3",
            *common,
        )
    )
    ok(
        invoke(
            "train-branch", synthetic_data, "-o", second, "--init", first, "--lr", "1e-3", *common
        )
    )
    script = [sys.executable, str(ROOT / "scripts" / "average_weights.py")]
    done = subprocess.run(
        [*script, first, second, "-o", averaged, "--data", synthetic_data],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    a, b, avg = (load_artifact(p) for p in (first, second, averaged))
    parameters = [
        n
        for n in avg.tensors
        if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert any(not torch.equal(a.tensors[n], b.tensors[n]) for n in parameters)  # the stages differ
    for name in parameters:
        torch.testing.assert_close(avg.tensors[name], (a.tensors[name] + b.tensors[name]) / 2)
    # The first batch norm's statistics are those of the averaged stem conv over the train faces
    # (batches of 256, each weighing the same), not the mean of the stages' statistics.
    model = model_from_artifact(avg)
    images, _, _ = select_split(load_artifact(synthetic_data), "train")
    with torch.no_grad():
        conv = model.backbone.stem[0]
        batch_means = [
            conv(model.normalize(to_input(images[i : i + 256], torch.device("cpu")))).mean(
                (0, 2, 3)
            )
            for i in range(0, len(images), 256)
        ]
    measured = avg.tensors["backbone.stem.1.running_mean"]
    torch.testing.assert_close(measured, torch.stack(batch_means).mean(0), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(
        measured,
        (a.tensors["backbone.stem.1.running_mean"] + b.tensors["backbone.stem.1.running_mean"]) / 2,
        atol=1e-3,
    )
    # A branch like any other: eval scores what the script printed, and the file names its stages.
    scored = json_of(
        invoke("eval", synthetic_data, averaged, "--split", "val", "--precision", "fp32", "--json")
    )
    assert scored["accuracy"] == pytest.approx(report["val_accuracy"], abs=1e-6)
    assert (
        avg.meta["averaged"]["files"] == [str(first), str(second)]
        and avg.meta["arch"] == "dexpression_bn"
    )
    assert avg.meta["metrics"] == {"best_val_accuracy": report["val_accuracy"], "val_split": "val"}

    # Snapshots of two runs of different architectures are refused, and nothing is written.
    refused = tmp_path / "refused.safetensors"
    bad = subprocess.run(
        [*script, first, tiny_branch, "-o", refused, "--data", synthetic_data],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        bad.returncode != 0 and "stages of one run" in bad.stderr and str(tiny_branch) in bad.stderr
    )
    assert not refused.exists()


def test_compare_averages_scores_each_subset_as_an_average_ensemble_does(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    from clitools import invoke, json_of, ok

    other = tmp_path / "other.safetensors"
    ok(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            other,
            "--arch",
            "tiny",
            "--epochs",
            "1",
            "--lr",
            "3e-3",
            "--seed",
            "2",
        )
    )
    preds = {}
    for name, model in (("tiny", tiny_branch), ("other", other)):
        preds[name] = tmp_path / f"{name}.npz"
        ok(
            invoke(
                "eval",
                synthetic_data,
                model,
                "--tta",
                "crops",
                "--precision",
                "fp32",
                "-o",
                preds[name],
            )
        )
    script = [sys.executable, str(ROOT / "scripts" / "compare_averages.py")]
    done = subprocess.run(
        [*script, preds["tiny"], preds["other"]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): line.split("|") for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"tiny", "other", "tiny + other"}

    # The pair's row is what the `ensemble --average` file of the two scores under the same TTA.
    averaged = tmp_path / "avg.safetensors"
    ok(invoke("ensemble", synthetic_data, tiny_branch, other, "--average", "-o", averaged))
    for name, model in (("tiny", tiny_branch), ("other", other), ("tiny + other", averaged)):
        expected = json_of(
            invoke("eval", synthetic_data, model, "--tta", "crops", "--precision", "fp32", "--json")
        )
        assert float(rows[name][2].strip().rstrip("%")) == pytest.approx(
            100 * expected["accuracy"], abs=0.006
        )
    # Sizes: each model's tensors at two bytes an element; the pair is the sum.
    tiny_bytes = 2 * sum(
        t.numel() for t in load_artifact(tiny_branch).tensors.values() if t.is_floating_point()
    )
    assert float(rows["tiny"][3]) == pytest.approx(tiny_bytes / 2**20, abs=0.006)
    assert float(rows["tiny + other"][3]) == pytest.approx(2 * tiny_bytes / 2**20, abs=0.006)

    # --errors: each pair's shared mistakes and agreement, counted from the same predictions.
    done = subprocess.run(
        [*script, preds["tiny"], preds["other"], "--errors"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    first, second = (load_artifact(preds[name]) for name in ("tiny", "other"))
    labels = first.tensors["labels"]
    wrong = [a.tensors["logits"].argmax(1) != labels for a in (first, second)]
    errors_table = done.stdout.split("\n\n")[1].splitlines()  # after the averages' table
    pair = next(line.split("|") for line in errors_table if line.startswith("| tiny + other | "))
    shared = (wrong[0] & wrong[1]).sum() / max(int((wrong[0] | wrong[1]).sum()), 1)
    assert float(pair[2].strip().rstrip("%")) == pytest.approx(100 * shared, abs=0.06)
    same = (first.tensors["logits"].argmax(1) == second.tensors["logits"].argmax(1)).mean()
    assert float(pair[3].strip().rstrip("%")) == pytest.approx(100 * same, abs=0.06)
    assert f"at least one right: {(~(wrong[0] & wrong[1])).mean():.2%}" in done.stdout

    # --max-mib leaves out what would not fit: here only single models fit.
    limit = str(1.5 * tiny_bytes / 2**20)
    done = subprocess.run(
        [*script, preds["tiny"], preds["other"], "--max-mib", limit],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert {line.split("|")[1].strip() for line in done.stdout.splitlines()[2:]} == {
        "tiny",
        "other",
    }

    # Predictions under another TTA are refused in one line naming the file.
    flip = tmp_path / "flip.npz"
    ok(invoke("eval", synthetic_data, other, "--tta", "flip", "-o", flip))
    done = subprocess.run(
        [*script, preds["tiny"], flip], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and str(flip) in done.stderr and "--tta" in done.stderr
