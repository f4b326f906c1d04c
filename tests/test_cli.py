"""The command line, end to end: prepare -> train-branch -> eval, through typer's CliRunner.

Asserts on numbers and files, not only exit codes: what --json prints matches what the artifact
holds, metadata says how a model was made, same seed -> same bytes, a resumed run ends where an
uninterrupted one does, and every user mistake ends in one line naming the file, no traceback,
no file left behind. Tiny model, small data, 1-3 epochs: the file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from clitools import _debug_off, invoke, json_of, listing, ok, one_line_error, runner, stderr_of  # noqa: F401
from PIL import Image

from fertool import __version__
from fertool.artifacts import load_artifact, save_tensors
from fertool.cli import app
from fertool.errors import BadInputError, ExitCode
from fertool.models import model_from_artifact

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "holdout": 3}
TRAIN = ["--arch", "tiny", "--device", "cpu", "--lr", "3e-3"]  # fast, comparable runs


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def write_gray(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def random_faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def csv_row(label: Any, pixels: Any, usage: str = "Training") -> str:
    if not isinstance(pixels, str):
        pixels = " ".join(str(int(v)) for v in np.asarray(pixels).ravel())
    return f"{label},{pixels},{usage}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def no_test_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset artifact with train and val splits only (84 + 28 random images)."""
    from fertool.data import RawDataset
    from fertool.prepare import dataset_artifact

    labels = np.tile(np.arange(7), 16).astype(np.int64)
    split = np.array([0] * 84 + [1] * 28, np.uint8)
    raw = RawDataset(random_faces(112, seed=5), labels, split, "test:no-test-split")
    tensors, meta = dataset_artifact(raw)
    path = tmp_path_factory.mktemp("notest") / "notest.safetensors"
    save_tensors(path, tensors, kind="dataset", meta=meta)
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """350 synthetic faces (~245 train): the session's 1200 would triple the cost of every epoch
    below."""
    path = tmp_path_factory.mktemp("small") / "small.safetensors"
    ok(invoke("prepare", "--synthetic", 350, "--seed", 2, "-o", path, "--json"))
    return path


@pytest.fixture(scope="module")
def trained(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 2-epoch run with --json and --log: its summary, artifact and log lines."""
    folder = tmp_path_factory.mktemp("trained")
    output, log = folder / "branch.safetensors", folder / "train.jsonl"
    result = invoke(
        "train-branch",
        small_data,
        "-o",
        output,
        "--seed",
        7,
        "--epochs",
        2,
        *TRAIN,
        "--normalize",
        "--log",
        log,
        "--json",
    )
    summary = json_of(result)
    return {
        "summary": summary,
        "output": output,
        "log": log,
        "folder": folder,
        "artifact": load_artifact(output),
        "stderr": stderr_of(result),
    }


# ---------------------------------------------------------------- prepare


def test_prepare_synthetic_json_matches_artifact(tmp_path: Path) -> None:
    output = tmp_path / "syn.safetensors"
    summary = json_of(invoke("prepare", "--synthetic", 70, "--seed", 3, "-o", output, "--json"))
    assert summary["images"] == 70
    assert sum(summary["counts"].values()) == 70
    assert summary["skipped"] == 0
    art = load_artifact(output, expect="dataset")
    images, labels, split = art.tensors["images"], art.tensors["labels"], art.tensors["split"]
    assert images.dtype == torch.uint8 and tuple(images.shape) == (70, 48, 48)
    assert labels.dtype == torch.int64 and split.dtype == torch.uint8
    assert int(labels.min()) >= 0 and int(labels.max()) <= 6
    assert art.meta["classes"] == CLASSES
    assert art.meta["image_size"] == 48
    for name, total in summary["counts"].items():
        in_split = labels[split == SPLIT_CODES[name]]
        assert total == len(in_split) == art.meta["counts"][name]["total"]
        per_class = np.bincount(in_split.numpy(), minlength=7)
        assert [art.meta["counts"][name][c] for c in CLASSES] == per_class.tolist()
        assert summary["per_class"][name] == art.meta["counts"][name]
    assert set(summary["counts"]) == {
        name for name, code in SPLIT_CODES.items() if (split == code).any()
    }
    train_pixels = images[split == 0].double() / 255
    assert art.meta["train_mean"] == pytest.approx(float(train_pixels.mean()), abs=1e-5)
    assert art.meta["train_std"] == pytest.approx(float(train_pixels.std()), abs=1e-5)
    assert summary["train_mean"] == art.meta["train_mean"]
    assert art.meta["source"] == summary["source"] and "synthetic" in summary["source"]

    # The seed decides the faces: same seed, same content hash; another seed, other faces.
    again, other = tmp_path / "again.safetensors", tmp_path / "other.safetensors"
    ok(invoke("prepare", "--synthetic", 70, "--seed", 3, "-o", again, "--json"))
    ok(invoke("prepare", "--synthetic", 70, "--seed", 4, "-o", other, "--json"))
    assert load_artifact(again).meta["sha256"] == art.meta["sha256"]
    assert load_artifact(other).meta["sha256"] != art.meta["sha256"]


def test_prepare_holdout_sets_aside_a_fraction_of_each_class_of_train(tmp_path: Path) -> None:
    plain, held = tmp_path / "plain.safetensors", tmp_path / "held.safetensors"
    ok(invoke("prepare", "--synthetic", 700, "-o", plain, "--json"))
    summary = json_of(invoke("prepare", "--synthetic", 700, "--holdout", 0.2, "-o", held, "--json"))
    before, after = load_artifact(plain), load_artifact(held)
    assert torch.equal(before.tensors["images"], after.tensors["images"])
    old, new = before.tensors["split"], after.tensors["split"]
    # Only training faces move, and only to the holdout; val and test stay as they were.
    assert torch.equal(new[old != 0], old[old != 0])
    assert set(new[old == 0].tolist()) == {0, 3}
    labels = after.tensors["labels"]
    for label, name in enumerate(CLASSES):
        in_train = int(((old == 0) & (labels == label)).sum())
        assert after.meta["counts"]["holdout"][name] == round(0.2 * in_train) > 0
    assert summary["counts"]["holdout"] == int((new == 3).sum())
    assert (
        summary["counts"]["train"] + summary["counts"]["holdout"]
        == before.meta["counts"]["train"]["total"]
    )
    assert after.meta["holdout"] == {"fraction": 0.2, "seed": 0}
    # Normalisation statistics come from the faces branches train on, not the holdout.
    train_pixels = after.tensors["images"][new == 0].double() / 255
    assert after.meta["train_mean"] == pytest.approx(float(train_pixels.mean()), abs=1e-5)
    assert "holdout 20 % of each class" in " ".join(invoke("info", held).stdout.split())

    # The holdout seed decides which faces: same seed, same file content; another, other faces.
    again, other = tmp_path / "again.safetensors", tmp_path / "other.safetensors"
    ok(invoke("prepare", "--synthetic", 700, "--holdout", 0.2, "-o", again, "--json"))
    ok(
        invoke(
            "prepare",
            "--synthetic",
            700,
            "--holdout",
            0.2,
            "--holdout-seed",
            1,
            "-o",
            other,
            "--json",
        )
    )
    assert load_artifact(again).meta["sha256"] == after.meta["sha256"]
    moved = load_artifact(other).tensors["split"]
    assert not torch.equal(moved, new) and int((moved == 3).sum()) == int((new == 3).sum())


@pytest.mark.parametrize("fraction", ["1", "1.5", "-0.1", "nan"])
def test_prepare_refuses_a_holdout_fraction_outside_0_1(fraction: str, tmp_path: Path) -> None:
    output = tmp_path / "d.safetensors"
    one_line_error(
        invoke("prepare", "--synthetic", 70, "--holdout", fraction, "-o", output),
        "--holdout",  # outside the declared range: Click's line; 1: fertool's, which says why
    )
    assert not output.exists()


def test_prepare_refuses_a_holdout_of_a_split_without_training_faces(tmp_path: Path) -> None:
    for label, name in enumerate(CLASSES):
        write_gray(tmp_path / "faces" / name / "a.png", random_faces(1, label)[0])
    output = tmp_path / "d.safetensors"
    result = invoke(
        "prepare", tmp_path / "faces", "--split", "test", "--holdout", 0.1, "-o", output
    )
    one_line_error(result, "sets aside no face of the 0 in train")
    assert not output.exists()


def test_prepare_table_output(tmp_path: Path) -> None:
    result = ok(invoke("prepare", "--synthetic", 30, "-o", tmp_path / "d.safetensors"))
    for name in CLASSES + ["train", "total"]:
        assert name in result.stdout
    assert "30 images" in result.stdout


def fer_files(root: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(CLASSES):
        names = sorted(os.listdir(root / split / name))[:per_class]
        files += [(root / split / name / f, label) for f in names]
    return files


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"))


def test_prepare_csv_built_from_real_fer2013(fer2013_root: Path, tmp_path: Path) -> None:
    rows = [(p, label, "Training") for p, label in fer_files(fer2013_root, "train", 3)]
    val = fer_files(fer2013_root, "val", 3)
    rows += [
        (p, label, "PrivateTest" if i % 3 == 2 else "PublicTest")
        for i, (p, label) in enumerate(val)
    ]
    order = np.random.default_rng(0).permutation(len(rows))  # rows of all splits interleaved
    rows = [rows[i] for i in order]
    pixels = [decode(p) for p, _, _ in rows]
    assert all(p.shape == (48, 48) for p in pixels)
    csv = tmp_path / "fer2013.csv"
    csv.write_text(
        "emotion,pixels,Usage\n"
        + "\n".join(csv_row(l, px, u) for (_, l, u), px in zip(rows, pixels))
        + "\n"
    )

    output = tmp_path / "fer.safetensors"
    summary = json_of(invoke("prepare", csv, "-o", output, "--json"))
    usage_code = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    expected_split = np.array([usage_code[u] for _, _, u in rows])
    assert summary["images"] == len(rows) == 42
    assert summary["counts"] == {
        "train": 21,
        "val": int((expected_split == 1).sum()),
        "test": int((expected_split == 2).sum()),
    }
    art = load_artifact(output, expect="dataset")
    assert art.tensors["labels"].tolist() == [label for _, label, _ in rows]
    assert art.tensors["split"].tolist() == expected_split.tolist()
    # Bit-exact: the stored pixels are the decoded JPEG pixels, row by row, in file order.
    assert np.array_equal(art.tensors["images"].numpy(), np.stack(pixels))
    assert art.meta["counts"]["train"] == {"total": 21, **{c: 3 for c in CLASSES}}


def copy_fer_subset(root: Path, dest: Path) -> list[Path]:
    copied = []
    for split, per_class in (("train", 40), ("val", 10)):
        for path, label in fer_files(root, split, per_class):
            target = dest / split / CLASSES[label] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(target)
    return copied


def test_real_fer2013_folders_prepare_train_eval(fer2013_root: Path, tmp_path: Path) -> None:
    """An end-to-end run on real faces: image folders -> dataset -> tiny branch -> predictions."""
    copied = copy_fer_subset(fer2013_root, tmp_path / "fer")
    data, model, preds = (
        tmp_path / "fer.safetensors",
        tmp_path / "branch.safetensors",
        tmp_path / "preds.npz",
    )

    summary = json_of(invoke("prepare", tmp_path / "fer", "-o", data, "--json"))
    assert summary["counts"] == {"train": 280, "val": 70}
    assert summary["per_class"]["train"] == {"total": 280, **{c: 40 for c in CLASSES}}
    assert summary["per_class"]["val"] == {"total": 70, **{c: 10 for c in CLASSES}}
    dataset = load_artifact(data, expect="dataset")
    # Stored in path order; each image equal to what PIL decodes from its JPEG.
    ordered = sorted(copied)
    assert np.array_equal(dataset.tensors["images"].numpy(), np.stack([decode(p) for p in ordered]))
    assert dataset.tensors["labels"].tolist() == [CLASSES.index(p.parent.name) for p in ordered]
    assert dataset.tensors["split"].tolist() == [SPLIT_CODES[p.parent.parent.name] for p in ordered]

    trained = json_of(invoke("train-branch", data, "-o", model, "--epochs", 2, *TRAIN, "--json"))
    assert trained["epochs"] == 2 and 0.0 <= trained["best_val_accuracy"] <= 1.0

    report = json_of(invoke("eval", data, model, "--json", "-o", preds, "--device", "cpu"))
    predictions = load_artifact(preds, expect="predictions")
    logits, labels, indices = (predictions.tensors[k] for k in ("logits", "labels", "indices"))
    val = dataset.tensors["split"].numpy() == 1
    assert logits.shape == (70, 7) and np.isfinite(logits).all()
    assert labels.tolist() == dataset.tensors["labels"].numpy()[val].tolist()
    assert indices.tolist() == np.flatnonzero(val).tolist()
    assert report["count"] == 70
    assert report["accuracy"] == pytest.approx(
        float((logits.argmax(1) == labels).mean()), abs=1e-12
    )
    # The model was kept at its best validation epoch, so eval reproduces that number.
    assert report["accuracy"] == pytest.approx(trained["best_val_accuracy"], abs=1e-6)


# ---------------------------------------------------------------- train-branch


def test_train_branch_json_summary(trained: dict[str, Any]) -> None:
    summary, meta = trained["summary"], trained["artifact"].meta
    assert summary["epochs"] == 2
    assert 0.0 <= summary["best_val_accuracy"] <= 1.0
    assert summary["images_per_second"] > 0 and summary["seconds"] > 0
    assert summary["output"] == str(trained["output"])
    assert summary["best_val_accuracy"] == meta["metrics"]["best_val_accuracy"]
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in meta["history"])


def test_train_branch_metadata(trained: dict[str, Any], small_data: Path) -> None:
    art, dataset = trained["artifact"], load_artifact(small_data)
    meta = art.meta
    assert art.kind == "branch"
    assert meta["arch"] == "tiny"
    assert meta["arch_args"]["num_classes"] == 7
    assert meta["classes"] == CLASSES
    assert meta["input_size"] == [1, 48, 48]
    assert meta["normalization"] == {
        "mean": dataset.meta["train_mean"],
        "std": dataset.meta["train_std"],
    }
    config = meta["train_config"]
    assert (config["arch"], config["epochs"], config["seed"], config["lr"]) == ("tiny", 2, 7, 3e-3)
    assert (
        config["augment"] is True and config["normalize"] is True and config["val_split"] == "val"
    )
    assert config["mixup"] == 0.0  # off unless asked for
    assert config["dropout"] == meta["arch_args"]["dropout"] == 0.5  # the recipe's
    assert meta["seed"] == 7
    assert meta["dataset_sha256"] == dataset.meta["sha256"]
    metrics = meta["metrics"]
    assert {"best_val_accuracy", "best_epoch", "images_per_second", "seconds"} <= set(metrics)
    history = meta["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert {"loss", "train_accuracy", "val_accuracy", "images_per_second", "seconds"} <= set(
            record
        )
        assert np.isfinite(record["loss"]) and record["loss"] > 0
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["val_accuracy"] <= 1
        assert record["images_per_second"] > 0 and record["seconds"] > 0
    best = max(range(2), key=lambda i: history[i]["val_accuracy"])
    assert metrics["best_epoch"] == history[best]["epoch"]
    # The model's normalisation buffers carry the same numbers: the file alone is enough.
    assert float(art.tensors["mean"]) == pytest.approx(dataset.meta["train_mean"], rel=1e-6)
    assert float(art.tensors["std"]) == pytest.approx(dataset.meta["train_std"], rel=1e-6)


def test_train_branch_log_and_no_checkpoint_left(trained: dict[str, Any]) -> None:
    lines = trained["log"].read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert records == trained["artifact"].meta["history"]
    assert sorted(p.name for p in trained["folder"].iterdir()) == [
        "branch.safetensors",
        "train.jsonl",
    ]
    assert not Path(str(trained["output"]) + ".ckpt").exists()


def test_train_branch_reports_each_epoch_on_stderr_off_a_terminal(trained: dict[str, Any]) -> None:
    """A run in the background (`2> train.log`) shows its progress there, one line per epoch,
    with the numbers the log has; stdout stays the one JSON object (json_of checked that)."""
    stderr = trained["stderr"]
    if stderr is None:
        pytest.skip("this click mixes stderr into stdout")
    lines = [line for line in stderr.splitlines() if line.startswith("epoch")]
    records = trained["artifact"].meta["history"]
    assert len(lines) == len(records) == 2
    for line, record in zip(lines, records):
        assert line.split()[:2] == ["epoch", str(record["epoch"])]
        assert f"val {record['val_accuracy']:.2%}" in line


def test_train_branch_without_normalization(small_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "plain.safetensors"
    ok(
        invoke(
            "train-branch",
            small_data,
            "-o",
            output,
            "--epochs",
            1,
            *TRAIN,
            "--no-normalize",
            "--json",
        )
    )
    art = load_artifact(output, expect="branch")
    assert art.meta["normalization"] is None
    assert art.meta["train_config"]["normalize"] is False
    assert float(art.tensors["mean"]) == 0.0 and float(art.tensors["std"]) == 1.0


def test_same_seed_same_bytes_other_seed_other_weights(
    trained: dict[str, Any], small_data: Path, tmp_path: Path
) -> None:
    again, other = tmp_path / "again.safetensors", tmp_path / "other.safetensors"
    ok(
        invoke("train-branch", small_data, "-o", again, "--seed", 7, "--epochs", 2, *TRAIN)
    )  # no --log, no --json
    ok(invoke("train-branch", small_data, "-o", other, "--seed", 8, "--epochs", 2, *TRAIN))
    first, second = trained["artifact"], load_artifact(again)
    assert same_weights(first.tensors, second.tensors)
    losses = lambda art: [
        (r["loss"], r["train_accuracy"], r["val_accuracy"]) for r in art.meta["history"]
    ]  # noqa: E731
    assert losses(first) == losses(second)
    different = load_artifact(other).tensors
    weights = [
        k
        for k in first.tensors
        if first.tensors[k].is_floating_point() and first.tensors[k].dim() > 1
    ]
    assert weights and all(not torch.equal(first.tensors[k], different[k]) for k in weights)


# ---------------------------------------------------------------- resume

RESUME = ["--seed", 5, *TRAIN]


@pytest.fixture(scope="module")
def interrupted(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-epoch run stopped by Ctrl-C during epoch 3: its result and a copy of its checkpoint."""
    import fertool.train

    folder = tmp_path_factory.mktemp("interrupted")
    output = folder / "branch.safetensors"
    real = fertool.train.train_one_epoch
    calls = []

    def stop_on_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fertool.train, "train_one_epoch", stop_on_third)
        result = invoke("train-branch", small_data, "-o", output, "--epochs", 3, *RESUME)
    checkpoint = folder / "branch.safetensors.ckpt"
    pristine = folder / "pristine.ckpt"
    if checkpoint.exists():
        shutil.copyfile(checkpoint, pristine)
    return {"result": result, "output": output, "checkpoint": checkpoint, "pristine": pristine}


def place_checkpoint(interrupted: dict[str, Any], folder: Path) -> Path:
    """Put a fresh copy of the interrupted run's checkpoint beside folder/branch.safetensors."""
    output = folder / "branch.safetensors"
    shutil.copyfile(interrupted["pristine"], folder / "branch.safetensors.ckpt")
    return output


def test_interrupt_keeps_checkpoint_and_says_resume(interrupted: dict[str, Any]) -> None:
    result = interrupted["result"]
    assert result.exit_code == ExitCode.INTERRUPTED == 130
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    assert "--resume" in flat
    assert interrupted["checkpoint"].name in flat.replace(" ", "")
    assert interrupted["checkpoint"].exists()
    assert not interrupted["output"].exists()
    folder = interrupted["output"].parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "branch.safetensors.ckpt",
        "pristine.ckpt",
    ]  # no .part files
    checkpoint = load_artifact(interrupted["checkpoint"], expect="checkpoint")
    assert checkpoint.meta["epoch"] == 2 and len(checkpoint.meta["history"]) == 2


def test_interrupt_hint_is_one_line_with_the_checkpoint_path(interrupted: dict[str, Any]) -> None:
    text = stderr_of(interrupted["result"]) or interrupted["result"].output
    hint = next(line for line in text.splitlines() if "stopped;" in line)
    assert str(interrupted["checkpoint"]) in hint and "--resume" in hint


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(
    interrupted: dict[str, Any], small_data: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference.safetensors"
    ok(invoke("train-branch", small_data, "-o", reference, "--epochs", 3, *RESUME))
    output = place_checkpoint(interrupted, tmp_path)
    ok(
        invoke(
            "train-branch", small_data, "-o", output, "--epochs", 3, *RESUME, "--resume", "--json"
        )
    )
    resumed, uninterrupted = load_artifact(output), load_artifact(reference)
    assert same_weights(resumed.tensors, uninterrupted.tensors)
    drop_time = lambda art: [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}  # noqa: E731
        for r in art.meta["history"]
    ]
    assert drop_time(resumed) == drop_time(uninterrupted)
    assert len(resumed.meta["history"]) == 3
    assert resumed.meta["metrics"]["best_epoch"] == uninterrupted.meta["metrics"]["best_epoch"]
    assert not (tmp_path / "branch.safetensors.ckpt").exists()


def test_resume_without_checkpoint(small_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "branch.safetensors"
    result = invoke("train-branch", small_data, "-o", output, "--epochs", 1, *RESUME, "--resume")
    one_line_error(result, "branch.safetensors.ckpt", "without --resume")
    assert listing(tmp_path) == []


def test_resume_with_other_settings_is_refused(
    interrupted: dict[str, Any], small_data: Path, tmp_path: Path
) -> None:
    output = place_checkpoint(interrupted, tmp_path)
    args = [
        "train-branch",
        small_data,
        "-o",
        output,
        "--epochs",
        3,
        "--seed",
        5,
        "--arch",
        "tiny",
        "--device",
        "cpu",
    ]
    line = one_line_error(
        invoke(*args, "--lr", "1e-2", "--resume"), "branch.safetensors.ckpt", "lr"
    )
    assert "seed" not in line  # names only what changed
    one_line_error(invoke(*args, "--lr", "3e-3", "--seed", 6, "--resume"), "seed")
    assert listing(tmp_path) == ["branch.safetensors.ckpt"]  # the checkpoint survives a refusal


def test_resume_on_other_data_is_refused(interrupted: dict[str, Any], tmp_path: Path) -> None:
    other_data = tmp_path / "other.safetensors"
    ok(invoke("prepare", "--synthetic", 140, "--seed", 11, "-o", other_data))
    output = place_checkpoint(interrupted, tmp_path)
    result = invoke("train-branch", other_data, "-o", output, "--epochs", 3, *RESUME, "--resume")
    one_line_error(result, "branch.safetensors.ckpt")
    assert not output.exists()


# ---------------------------------------------------------------- eval


def test_eval_table(synthetic_data: Path, tiny_branch: Path) -> None:
    table = ok(invoke("eval", synthetic_data, tiny_branch)).stdout
    report = json_of(invoke("eval", synthetic_data, tiny_branch, "--json"))
    for name in CLASSES:
        assert name in table
    assert "accuracy" in table
    assert f"{report['accuracy']:.2%}" in table
    assert f"({report['count']} images)" in table
    assert "[val]" in table  # the split, in the title: Rich markup must not swallow it


def test_eval_json(synthetic_data: Path, tiny_branch: Path) -> None:
    report = json_of(invoke("eval", synthetic_data, tiny_branch, "--json"))
    dataset = load_artifact(synthetic_data)
    val_labels = dataset.tensors["labels"][dataset.tensors["split"] == 1].numpy()
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["split"] == "val" and report["count"] == len(val_labels)
    assert list(report["per_class"]) == CLASSES
    for index, name in enumerate(CLASSES):
        row = report["per_class"][name]
        assert set(row) >= {"precision", "recall", "f1", "support"}
        assert all(0.0 <= row[k] <= 1.0 for k in ("precision", "recall", "f1"))
        assert row["support"] == int((val_labels == index).sum())
    # accuracy = sum over classes of recall * support / count
    hits = sum(row["recall"] * row["support"] for row in report["per_class"].values())
    assert report["accuracy"] == pytest.approx(hits / report["count"], abs=1e-9)
    # The branch's own record of its best validation accuracy agrees with eval (exactly on CPU fp32;
    # the tolerance of one image allows for reduced-precision autocast where `auto` picks a GPU).
    recorded = load_artifact(tiny_branch).meta["metrics"]["best_val_accuracy"]
    assert report["accuracy"] == pytest.approx(recorded, abs=1.01 / report["count"])


def test_eval_writes_predictions(synthetic_data: Path, tiny_branch: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds.npz"
    report = json_of(
        invoke("eval", synthetic_data, tiny_branch, "--split", "test", "--json", "-o", preds)
    )
    art = load_artifact(preds, expect="predictions")
    dataset = load_artifact(synthetic_data)
    logits, labels, indices = (art.tensors[k] for k in ("logits", "labels", "indices"))
    test = dataset.tensors["split"].numpy() == 2
    assert logits.dtype == np.float32 and logits.shape == (int(test.sum()), 7)
    assert indices.tolist() == np.flatnonzero(test).tolist()
    assert labels.tolist() == dataset.tensors["labels"].numpy()[indices].tolist()
    assert report["accuracy"] == pytest.approx(
        float((logits.argmax(1) == labels).mean()), abs=1e-12
    )
    assert art.meta["split"] == "test"
    assert art.meta["dataset_sha256"] == dataset.meta["sha256"]
    assert art.meta["classes"] == CLASSES
    assert report["output"] == str(preds)


# ---------------------------------------------------------------- bad inputs


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A folder of files that are not what a command wants."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.safetensors").touch()
    (folder / "noise.safetensors").write_bytes(
        np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    )
    (folder / "adir.safetensors").mkdir()
    return {
        "empty": folder / "empty.safetensors",
        "noise": folder / "noise.safetensors",
        "dir": folder / "adir.safetensors",
        "missing": folder / "missing.safetensors",
    }


@pytest.mark.parametrize(
    "which, words",
    [
        ("missing", ["no such file"]),
        ("dir", ["directory"]),
        ("empty", ["empty"]),
        ("noise", ["not a fertool artifact"]),
    ],
)
def test_bad_data_file(
    which: str, words: list[str], bad_files: dict[str, Path], tiny_branch: Path, tmp_path: Path
) -> None:
    bad = bad_files[which]
    before = listing(tmp_path)
    one_line_error(
        invoke("train-branch", bad, "-o", tmp_path / "b.safetensors", *TRAIN, "--epochs", 1),
        bad.name,
        *words,
        code=ExitCode.BAD_INPUT,
    )
    one_line_error(
        invoke("eval", bad, tiny_branch, "-o", tmp_path / "p.npz"),
        bad.name,
        *words,
        code=ExitCode.BAD_INPUT,
    )
    assert listing(tmp_path) == before


@pytest.mark.parametrize("which", ["missing", "dir", "empty", "noise"])
def test_bad_model_file(
    which: str, bad_files: dict[str, Path], synthetic_data: Path, tmp_path: Path
) -> None:
    bad = bad_files[which]
    before = listing(tmp_path)
    one_line_error(
        invoke("eval", synthetic_data, bad, "-o", tmp_path / "p.npz"),
        bad.name,
        code=ExitCode.BAD_INPUT,
    )
    assert listing(tmp_path) == before


def test_model_where_data_goes(tiny_branch: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke("train-branch", tiny_branch, "-o", tmp_path / "b.safetensors", *TRAIN),
        tiny_branch.name,
        "branch",
        "fertool prepare",
        code=ExitCode.WRONG_KIND,
    )
    one_line_error(
        invoke("eval", tiny_branch, tiny_branch),
        tiny_branch.name,
        "branch",
        "fertool prepare",
        code=ExitCode.WRONG_KIND,
    )
    assert listing(tmp_path) == []


def test_data_where_model_goes(synthetic_data: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke("eval", synthetic_data, synthetic_data, "-o", tmp_path / "p.npz"),
        synthetic_data.name,
        "dataset",
        "fertool train-branch",
        code=ExitCode.WRONG_KIND,
    )
    assert listing(tmp_path) == []


def test_predictions_where_model_goes(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    preds = tmp_path / "preds.npz"
    ok(invoke("eval", synthetic_data, tiny_branch, "-o", preds, "--json"))
    one_line_error(
        invoke("eval", synthetic_data, preds),
        "preds.npz",
        "predictions",
        "train-branch",
        code=ExitCode.WRONG_KIND,
    )


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["cannot read"]),  # missing
        (b"", ["empty"]),
        (bytes(range(256)) * 8, ["binary"]),
        (b"1,2,3\n4,5,6\n", ["line 1"]),  # no header
    ],
)
def test_prepare_bad_csv_file(content: bytes | None, words: list[str], tmp_path: Path) -> None:
    csv = tmp_path / "fer2013.csv"
    if content is not None:
        csv.write_bytes(content)
    before = listing(tmp_path)
    one_line_error(
        invoke("prepare", csv, "-o", tmp_path / "d.safetensors"),
        "fer2013.csv",
        *words,
        code=ExitCode.BAD_INPUT,
    )
    assert listing(tmp_path) == before


GOOD = " ".join(["128"] * 2304)


@pytest.mark.parametrize(
    "bad_row, words",
    [
        (csv_row(3, " ".join(["1"] * 2303)), ["2304", "2303"]),
        (csv_row(3, " ".join(["1"] * 100 + ["x7"] + ["1"] * 2203)), ["pixel 101", "x7"]),
        (csv_row(3, " ".join(["1"] * 5 + ["300"] + ["1"] * 2298)), ["pixel 6", "300"]),
        (csv_row(9, GOOD), ["emotion", "'9'"]),
        (csv_row(3, GOOD, "Foo"), ["Usage", "Foo"]),
        ("3," + GOOD, ["fields"]),
    ],
)
def test_prepare_malformed_csv_row(bad_row: str, words: list[str], tmp_path: Path) -> None:
    csv = tmp_path / "fer2013.csv"
    csv.write_text(
        "\n".join(
            [
                "emotion,pixels,Usage",
                csv_row(0, GOOD),
                csv_row(6, GOOD, "PublicTest"),
                bad_row,
                csv_row(1, GOOD),
            ]
        )
        + "\n"
    )
    one_line_error(
        invoke("prepare", csv, "-o", tmp_path / "d.safetensors"),
        "fer2013.csv",
        "line 4",
        *words,
        code=ExitCode.BAD_INPUT,
    )
    assert listing(tmp_path) == ["fer2013.csv"]


def make_folder(root: Path, classes: dict[str, int], split: str = "train", seed: int = 0) -> None:
    faces = random_faces(sum(classes.values()), seed)
    index = 0
    for name, count in classes.items():
        for i in range(count):
            write_gray(root / split / name / f"img{i}.png", faces[index])
            index += 1


def test_prepare_unknown_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "faces", {"happy": 2, "joyful": 2})
    line = one_line_error(
        invoke("prepare", tmp_path / "faces", "-o", tmp_path / "d.safetensors"),
        "joyful",
        code=ExitCode.BAD_INPUT,
    )
    for name in CLASSES:
        assert name in line
    assert not (tmp_path / "d.safetensors").exists()


def test_prepare_unreadable_image_and_skip_bad(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    make_folder(root, {"happy": 3, "sad": 2}, split="train")
    make_folder(root, {"happy": 1, "sad": 1}, split="val", seed=1)
    broken = root / "train" / "sad" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    output = tmp_path / "d.safetensors"
    one_line_error(
        invoke("prepare", root, "-o", output), "broken.jpg", "--skip-bad", code=ExitCode.BAD_INPUT
    )
    assert not output.exists()

    result = invoke("prepare", root, "-o", output, "--skip-bad", "--json")
    summary = json_of(result)
    assert summary["skipped"] == 1 and summary["images"] == 7
    assert summary["counts"] == {"train": 5, "val": 2}
    stderr = stderr_of(result)
    if stderr is not None:
        assert "broken.jpg" in stderr
    art = load_artifact(output, expect="dataset")
    assert art.meta["skipped"] == 1 and len(art.tensors["labels"]) == 7


def test_error_names_a_file_with_brackets(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    make_folder(root, {"happy": 2})
    (root / "train" / "happy" / "face [copy].jpg").write_bytes(b"not an image")
    one_line_error(invoke("prepare", root, "-o", tmp_path / "d.safetensors"), "face [copy].jpg")


def test_prepare_needs_a_source_or_synthetic_not_both(tmp_path: Path) -> None:
    one_line_error(invoke("prepare", "-o", tmp_path / "d.safetensors"), "--synthetic")
    csv = tmp_path / "x.csv"
    csv.write_text("emotion,pixels\n0," + GOOD + "\n")
    one_line_error(
        invoke("prepare", csv, "--synthetic", 5, "-o", tmp_path / "d.safetensors"), "x.csv"
    )
    assert listing(tmp_path) == ["x.csv"]


def test_output_into_missing_directory(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    one_line_error(
        invoke("prepare", "--synthetic", 10, "-o", missing / "d.safetensors"), "nope", "mkdir"
    )
    one_line_error(
        invoke("train-branch", synthetic_data, "-o", missing / "b.safetensors", *TRAIN),
        "nope",
        "mkdir",
    )
    one_line_error(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            tmp_path / "b.safetensors",
            *TRAIN,
            "--log",
            missing / "log.jsonl",
        ),
        "nope",
        "mkdir",
    )
    one_line_error(
        invoke("eval", synthetic_data, tiny_branch, "-o", missing / "p.npz"), "nope", "mkdir"
    )
    assert listing(tmp_path) == []


def test_fp16_on_cpu(synthetic_data: Path, tiny_branch: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            tmp_path / "b.safetensors",
            *TRAIN,
            "--precision",
            "fp16",
        ),
        "fp16",
        "CPU",
    )
    one_line_error(
        invoke(
            "eval",
            synthetic_data,
            tiny_branch,
            "--device",
            "cpu",
            "--precision",
            "fp16",
            "-o",
            tmp_path / "p.npz",
        ),
        "fp16",
        "CPU",
    )
    one_line_error(invoke("eval", synthetic_data, tiny_branch, "--precision", "fp64"), "fp64")
    assert listing(tmp_path) == []


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is present here: --device cuda is valid"
)
def test_cuda_without_cuda(synthetic_data: Path, tiny_branch: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            tmp_path / "b.safetensors",
            "--arch",
            "tiny",
            "--device",
            "cuda",
        ),
        "--device cuda",
        "cpu",
    )
    one_line_error(
        invoke("eval", synthetic_data, tiny_branch, "--device", "cuda:1"), "--device cuda:1"
    )
    one_line_error(invoke("eval", synthetic_data, tiny_branch, "--device", "gpu"), "--device gpu")
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("--epochs", 0),
        ("--epochs", -1),
        ("--batch-size", 0),
        ("--lr", 0),
        ("--lr", "-1e-3"),
        ("--lr", "nan"),
        ("--lr", "inf"),  # several batches an epoch: caught as divergence ("lower --lr")
        ("--mixup", "-0.2"),
        ("--mixup", "nan"),
        ("--dropout", 1),
        ("--dropout", "-0.1"),
        ("--dropout", "nan"),
    ],
)
def test_bad_training_numbers(option: str, value: Any, small_data: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke(
            "train-branch",
            small_data,
            "-o",
            tmp_path / "b.safetensors",
            "--arch",
            "tiny",
            "--device",
            "cpu",
            option,
            value,
        ),
        option,
    )
    assert listing(tmp_path) == []


def one_epoch_per_value(
    data: Path, folder: Path, option: str, values: tuple[str, ...]
) -> dict[str, Any]:
    """The artifacts of one-epoch tiny runs from the same seed, one per value of `option`."""
    runs = {}
    for value in values:
        output = folder / f"{option.strip('-')}{value}.safetensors"
        json_of(
            invoke(
                "train-branch",
                data,
                "-o",
                output,
                "--epochs",
                1,
                "--seed",
                3,
                *TRAIN,
                option,
                value,
                "--json",
            )
        )
        runs[value] = load_artifact(output)
    return runs


def test_mixup_is_recorded_and_changes_the_run(small_data: Path, tmp_path: Path) -> None:
    runs = {
        value: art.meta
        for value, art in one_epoch_per_value(small_data, tmp_path, "--mixup", ("0", "0.4")).items()
    }
    assert runs["0.4"]["train_config"]["mixup"] == 0.4 and runs["0"]["train_config"]["mixup"] == 0.0
    # Blended targets make a different loss from the same seed's plain run, and a finite one.
    plain, blended = runs["0"]["history"][0], runs["0.4"]["history"][0]
    assert np.isfinite(blended["loss"]) and blended["loss"] != plain["loss"]
    assert 0 <= blended["train_accuracy"] <= 1


def test_dropout_is_recorded_and_changes_the_run(small_data: Path, tmp_path: Path) -> None:
    runs = one_epoch_per_value(small_data, tmp_path, "--dropout", ("0", "0.5"))
    assert (
        runs["0"].meta["train_config"]["dropout"] == runs["0"].meta["arch_args"]["dropout"] == 0.0
    )
    # The same seed with dropout off takes other steps: the weights differ, and the model the
    # file rebuilds has no dropout left to apply.
    assert not same_weights(runs["0"].tensors, runs["0.5"].tensors)
    assert model_from_artifact(runs["0"]).backbone.dropout.p == 0.0


@pytest.mark.parametrize("size", [0, -3])
def test_eval_bad_batch_size(
    size: int, synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    one_line_error(
        invoke("eval", synthetic_data, tiny_branch, "--batch-size", size, "-o", tmp_path / "p.npz"),
        "--batch-size",
    )
    assert listing(tmp_path) == []


def test_prepare_negative_synthetic(tmp_path: Path) -> None:
    one_line_error(
        invoke("prepare", "--synthetic", -5, "-o", tmp_path / "d.safetensors"), "--synthetic"
    )
    assert listing(tmp_path) == []


def test_divergence_in_the_last_step_saves_no_model(small_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "b.safetensors"
    result = invoke(
        "train-branch",
        small_data,
        "-o",
        output,
        "--epochs",
        1,
        "--arch",
        "tiny",
        "--device",
        "cpu",
        "--lr",
        "inf",
        "--batch-size",
        1000,
    )
    one_line_error(result, "--lr")
    assert not output.exists()


def test_split_that_the_data_lacks(no_test_data: Path, tiny_branch: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke(
            "train-branch",
            no_test_data,
            "-o",
            tmp_path / "b.safetensors",
            *TRAIN,
            "--val-split",
            "test",
        ),
        no_test_data.name,
        "test",
    )
    one_line_error(
        invoke("eval", no_test_data, tiny_branch, "--split", "test", "-o", tmp_path / "p.npz"),
        no_test_data.name,
        "test",
    )
    one_line_error(invoke("eval", no_test_data, tiny_branch, "--split", "holdout"), "holdout")
    assert listing(tmp_path) == []


def test_unknown_arch(synthetic_data: Path, tmp_path: Path) -> None:
    one_line_error(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            tmp_path / "b.safetensors",
            "--arch",
            "resnet9000",
            "--device",
            "cpu",
        ),
        "resnet9000",
        "tiny",
    )
    assert listing(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    result = invoke("--debug", "prepare", missing, "-o", tmp_path / "d.safetensors")
    assert result.exit_code != 0
    assert isinstance(result.exception, BadInputError)  # propagated, not turned into one line
    assert "missing.csv" in str(result.exception)
    assert result.exc_info is not None and result.exc_info[2] is not None


def test_debug_does_not_leak_into_the_next_invocation(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    invoke("--debug", "prepare", missing, "-o", tmp_path / "d.safetensors")
    one_line_error(invoke("prepare", missing, "-o", tmp_path / "d.safetensors"), "missing.csv")


# ---------------------------------------------------------------- real processes


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("FERTOOL_DEBUG", None)
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, env=env)


def test_python_m_fertool_help() -> None:
    result = run(sys.executable, "-m", "fertool", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("prepare", "train-branch", "eval"):
        assert command in result.stdout


def test_commands_that_only_read_files_never_import_torch(
    small_data: Path, trained: dict[str, Any], tmp_path: Path
) -> None:
    """info, confusion and curves read metadata and numpy arrays. Importing torch would cost
    them seconds of start-up for nothing (4-5 s on a 2-GHz Xeon: `fertool info` took 5.4 s)."""
    preds = tmp_path / "preds.npz"
    ok(invoke("eval", small_data, trained["output"], "-o", preds))
    code = (
        "import sys\n"
        "sys.argv = ['fertool', *sys.argv[1:]]\n"
        "from fertool.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
    )
    for args in (
        ["info", trained["output"]],
        ["info", small_data, "--json"],
        ["info"],
        ["confusion", preds, "-o", tmp_path / "confusion.png"],
        ["curves", trained["output"], "-o", tmp_path / "curves.png"],
    ):
        done = run(sys.executable, "-c", code, *map(str, args))
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "torch imported: False", (args, done.stderr)


def test_console_script_help_and_version() -> None:
    script = Path(sys.executable).parent / "fertool"
    if not script.exists():
        found = shutil.which("fertool")
        if found is None:
            pytest.skip("the fertool console script is not installed (pip install -e .)")
        script = Path(found)
    result = run(str(script), "--help")
    assert result.returncode == 0, result.stderr
    assert "train-branch" in result.stdout
    version = run(str(script), "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"fertool {__version__}"


def test_version_in_process() -> None:
    result = ok(invoke("--version"))
    assert result.stdout.strip() == f"fertool {__version__}"


@pytest.mark.slow  # a fresh process imports torch: ~5 s on 2 busy cores
def test_debug_traceback_in_a_real_process(tmp_path: Path) -> None:
    """Without --debug the same error is one line (tested in process above); with it,
    a real traceback."""
    missing = tmp_path / "missing.csv"
    debug = run(
        sys.executable,
        "-m",
        "fertool",
        "--debug",
        "prepare",
        str(missing),
        "-o",
        str(tmp_path / "d.safetensors"),
    )
    assert debug.returncode != 0
    assert (
        "Traceback" in debug.stderr
        and "BadInputError" in debug.stderr
        and "missing.csv" in debug.stderr
    )
    assert not (tmp_path / "d.safetensors").exists()


@pytest.mark.parametrize(
    "command, text",
    [
        ("train-branch", "[recipe's]"),
        ("eval", "[default: the bundled model]"),
        ("filters", "[default: the first 64]"),
    ],
)
def test_bracketed_help_text_survives_rich_markup(command: str, text: str) -> None:
    # typer renders help as Rich markup, where "[...]" is a style tag and vanishes unless escaped.
    help_text = " ".join(
        ok(runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})).stdout.split()
    )
    assert text in help_text


def test_bracketed_paths_print_as_written(
    tiny_branch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rich reads "[v2]" as a style tag and drops it unless markup is off for paths.
    monkeypatch.chdir(tmp_path)  # short relative paths, so no table wraps them
    folder = Path("runs[v2]")
    folder.mkdir()
    data = folder / "faces[v2].safetensors"
    assert f"{data}  (synthetic" in ok(invoke("prepare", "--synthetic", 70, "-o", data)).stdout
    assert f"{data} [val]" in " ".join(
        ok(invoke("eval", data, tiny_branch, "--split", "val")).stdout.split()
    )
    assert f"file {data}" in " ".join(ok(invoke("info", data)).stdout.split())
    one_line_error(
        invoke("eval", folder / "gone[v2].safetensors", tiny_branch),
        f"{folder / 'gone[v2].safetensors'}: no such file",
    )
    photo = Path("f[v2].png")
    write_gray(photo, np.full((60, 60), 128))
    assert str(photo) in "".join(
        ok(invoke("predict", tiny_branch, photo, "--no-detect")).stdout.split()
    )


def test_each_option_enum_lists_what_the_library_knows_by_that_name() -> None:
    # The Enums are written out by hand (the CLI imports no torch until a command runs); where the
    # library keys things by name (a registry, a dict of recipes), this keeps the two from
    # drifting. The plain value sets (splits, views, precisions, optimizers) are the Enums'.
    from fertool import options
    from fertool.augment import PRESETS
    from fertool.models import EnsembleClassifier, list_models
    from fertool.recipes import RECIPES
    from fertool.saliency import METHODS

    pairs = {
        options.Arch: list_models(),
        options.Recipe: RECIPES,
        options.AugmentPreset: PRESETS,
        options.SaliencyMethod: METHODS,
        options.Features: [f for f in EnsembleClassifier.FEATURES if f != "average"],
        options.Tta: ["auto", *options.Views.values()],
    }
    for enum, known in pairs.items():
        assert sorted(enum.values()) == sorted(known), enum.__name__
