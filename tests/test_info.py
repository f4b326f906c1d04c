"""fertool info (provenance from the file alone), eval's test-time augmentation,
the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clitools import _debug_off, copy_with_meta, invoke, json_of, one_line_error  # noqa: F401

from fertool.artifacts import load_artifact, save_tensors
from fertool.bundled import default_model_path
from fertool.runtime import resolve_precision


def test_info_of_a_branch_says_how_it_was_made(tiny_branch: Path) -> None:
    info = json_of(invoke("info", tiny_branch, "--json"))
    meta = load_artifact(tiny_branch).meta
    assert info["kind"] == "branch" and info["arch"] == "tiny"
    assert info["epochs"] == 2 and info["val_accuracy"] == meta["metrics"]["best_val_accuracy"]
    assert info["data_sha256"] == meta["dataset_sha256"]
    assert info["command"].startswith("fertool train-branch ") and info["command"].endswith(
        " --seed 1"
    )
    assert info["parameters"] == sum(
        t.numel() for k, t in load_artifact(tiny_branch).tensors.items()
    )
    assert info["weights_dtype"] == "float32"
    text = invoke("info", tiny_branch).stdout
    assert "val_accuracy" in text and "%" in text


def test_info_of_a_bfloat16_model_reads_it_through_torch(tiny_branch: Path, tmp_path: Path) -> None:
    """info reads files as numpy, which has no bfloat16: such a file goes through torch and
    reports the same parameters, with its own dtype."""
    branch = load_artifact(tiny_branch)
    bf16 = tmp_path / "bf16.safetensors"
    save_tensors(
        bf16,
        {k: t.bfloat16() if t.is_floating_point() else t for k, t in branch.tensors.items()},
        kind="branch",
        meta=branch.meta,
    )
    info, original = (
        json_of(invoke("info", bf16, "--json")),
        json_of(invoke("info", tiny_branch, "--json")),
    )
    assert info["weights_dtype"] == "bfloat16" and info["parameters"] == original["parameters"]


def test_the_recorded_command_runs_again_with_spaces_in_paths(
    small_synthetic_data: Path, tmp_path: Path
) -> None:
    """`info` shows the command that made a model; a path with a space must come back quoted."""
    import shlex
    import subprocess
    import sys

    folder = tmp_path / "my runs"
    folder.mkdir()
    out = folder / "branch 1.safetensors"
    args = [
        "train-branch",
        str(small_synthetic_data),
        "-o",
        str(out),
        "--arch",
        "tiny",
        "--epochs",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "fertool", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert shlex.split(load_artifact(out).meta["command"]) == ["fertool", *args]


def test_info_of_an_ensemble_lists_its_branches(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    ensemble = tmp_path / "e.safetensors"
    assert (
        invoke(
            "ensemble", synthetic_data, tiny_branch, tiny_branch, "-o", ensemble, "--epochs", 1
        ).exit_code
        == 0
    )
    info = json_of(invoke("info", ensemble, "--json"))
    assert info["kind"] == "ensemble" and len(info["branches"]) == 2
    assert info["branches"][0]["arch"] == "tiny"
    feature_dim = 2 * 32 * 9  # two tiny branches' penultimate features
    assert info["head"] == f"{feature_dim} -> 512 -> 256 -> 7, dropout 0.5"
    average = tmp_path / "a.safetensors"
    assert (
        invoke(
            "ensemble", synthetic_data, tiny_branch, tiny_branch, "-o", average, "--average"
        ).exit_code
        == 0
    )
    assert json_of(invoke("info", average, "--json"))["head"].startswith("none")


def test_info_shows_hand_made_fields_as_they_are(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    # Provenance fields only `info` reads, of another shape than fertool writes: shown raw, exit 0.
    odd = {"holdout": {"seed": 1}, "counts": {"train": 5}}
    dataset = copy_with_meta(synthetic_data, tmp_path / "d.safetensors", **odd)
    model = copy_with_meta(
        tiny_branch, tmp_path / "m.safetensors", packing={"accuracy_fp32": [0.5]}
    )
    for path, needles in (
        (dataset, ["{'seed': 1}", "{'train': 5}"]),
        (model, ["{'accuracy_fp32': [0.5]}"]),
    ):
        result = invoke("info", path)
        assert result.exit_code == 0 and result.exception is None, result.output
        assert all(needle in result.output for needle in needles), result.output


def test_info_of_a_dataset(synthetic_data: Path) -> None:
    info = json_of(invoke("info", synthetic_data, "--json"))
    assert (
        info["kind"] == "dataset"
        and info["counts"]["train"]["total"] > 0
        and len(info["sha256"]) == 64
    )


def test_info_and_eval_without_a_model_use_the_bundled_one(small_synthetic_data: Path) -> None:
    bundled = (
        Path(__file__).resolve().parents[1]
        / "src"
        / "fertool"
        / "default_model"
        / "default.safetensors"
    )
    if not bundled.exists():
        one_line_error(invoke("info"), "no default model")
        return
    assert default_model_path() == bundled
    info = json_of(invoke("info", "--json"))
    assert info["kind"] in ("branch", "ensemble") and info["val_accuracy"] > 0.5
    assert bundled.stat().st_size <= 10_000_000  # the package stays small: issue 5 allows 10 MB
    # Synthetic faces: any score, but it runs (42 val faces, not 182:
    # three wide branches x six views each).
    result = json_of(invoke("eval", small_synthetic_data, "--json"))
    assert result["model"] == str(bundled) and result["tta"] == info["tta"]


def test_filters_without_arguments_draw_the_bundled_model(tmp_path: Path) -> None:
    from fertool.bundled import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip("this source tree ships no default model")
    out = tmp_path / "filters.png"
    result = invoke(
        "filters", "--steps", 1, "--filters", "0-1", "-o", out
    )  # default --layer featex1
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


def test_eval_flip_tta_averages_the_image_and_its_mirror(
    synthetic_data: Path, tiny_branch: Path
) -> None:
    from fertool.evaluate import select_split, to_input
    from fertool.models import load_model

    flip = json_of(
        invoke(
            "eval", synthetic_data, tiny_branch, "--tta", "flip", "--json", "--precision", "fp32"
        )
    )  # as the reference below
    plain = json_of(invoke("eval", synthetic_data, tiny_branch, "--json"))
    assert (
        flip["tta"] == "flip" and plain["tta"] == "none"
    )  # auto: a file without `tta` asks for none
    model, _ = load_model(tiny_branch)
    images, labels, _ = select_split(load_artifact(synthetic_data), "val")
    x = to_input(images, torch.device("cpu"))
    with torch.no_grad():
        probabilities = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    expected = (probabilities.argmax(1) == labels).float().mean().item()
    assert flip["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_a_model_file_can_ask_for_its_tta(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    path = copy_with_meta(tiny_branch, tmp_path / "tta.safetensors", tta="flip")
    assert json_of(invoke("eval", synthetic_data, path, "--json"))["tta"] == "flip"
    assert json_of(invoke("eval", synthetic_data, path, "--tta", "none", "--json"))["tta"] == "none"
    one_line_error(invoke("eval", synthetic_data, path, "--tta", "tencrop"), "--tta")


def test_pack_script_halves_weights_when_accuracy_holds(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "packed.safetensors"
    script = Path(__file__).resolve().parents[1] / "scripts" / "pack_model.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_branch), str(out), "--data", str(synthetic_data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    packed = load_artifact(out)
    assert packed.meta["tta"] == report["tta"] and packed.meta["packing"]["from"] == str(
        tiny_branch
    )
    dtypes = {t.dtype for k, t in packed.tensors.items() if t.is_floating_point()}
    assert dtypes == ({torch.float16} if report["weights"] == "fp16" else {torch.float32})
    info = json_of(invoke("info", out, "--json"))
    assert info["tta"] == report["tta"]
    assert info["weights_dtype"] == ("float16" if report["weights"] == "fp16" else "float32")
    # In words: the accuracy `eval` reproduces with the file's own weights and TTA,
    # and each TTA tried.
    packed_line = next(
        line
        for line in invoke("info", out).output.splitlines()
        if line.strip().startswith("packed")
    )
    packing = packed.meta["packing"]
    if report["weights"] == "fp16":
        assert f"{packing['accuracy_fp16']:.2%} on val with its fp16 weights" in packed_line
    else:
        assert "fp32 weights kept" in packed_line
    assert all(f"{tta} {acc:.2%}" in packed_line for tta, acc in packing["accuracy_fp32"].items())
    assert str(tiny_branch) in packed_line
    # The figure from training is named as such, so it is not read as the packed file's.
    trained_line = next(
        line
        for line in invoke("info", out).output.splitlines()
        if line.strip().startswith("val_accuracy")
    )
    assert "as trained (packed: what eval gives with this file)" in trained_line
    assert "as trained" not in next(
        line
        for line in invoke("info", tiny_branch).output.splitlines()
        if line.strip().startswith("val_accuracy")
    )
    # The copied history keeps six significant digits (the file's size limit), nothing less.
    history = load_artifact(tiny_branch).meta["history"]
    assert len(packed.meta["history"]) == len(history) > 0
    for packed_epoch, epoch in zip(packed.meta["history"], history):
        assert packed_epoch.keys() == epoch.keys()
        for key, value in epoch.items():
            expected = float(f"{value:.6g}") if isinstance(value, float) else value
            assert packed_epoch[key] == expected, key


@pytest.fixture(scope="module")
def real_fer(fer2013_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh preparation of the real faces, for the bundled model (skipped where the tree ships
    none)."""
    from fertool.bundled import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip("this source tree ships no default model")
    data = tmp_path_factory.mktemp("fer") / "fer.safetensors"
    assert invoke("prepare", fer2013_root, "-o", data).exit_code == 0
    return data


def test_the_bundled_model_scores_on_real_fer2013_what_it_records_with_one_view(
    real_fer: Path,
) -> None:
    """The bundled model's file, fresh real faces and `eval` agree with the accuracies the file
    records.

    The file records (scripts/pack_model.py) its val accuracy under each --tta with fp32 weights;
    one view is six times cheaper than the file's own six (`crops`: ten minutes on one core of a
    2-GHz Xeon, so that check runs with --run-slow), and fails the same way if the weights, the
    preparation or eval's arithmetic drift. The file holds fp16 weights: within two faces.
    """
    packing = load_artifact(default_model_path()).meta["packing"]
    one_view = json_of(
        invoke("eval", real_fer, "--split", "val", "--tta", "none", "--precision", "fp32", "--json")
    )
    assert one_view["count"] == 3589 and one_view["tta"] == "none"
    assert one_view["accuracy"] == pytest.approx(packing["accuracy_fp32"]["none"], abs=0.0006)


@pytest.mark.slow  # 3,589 faces x 6 views x 3 wide branches: 5-10 minutes on the slowest CPU seen
def test_the_bundled_model_scores_on_real_fer2013_what_it_records(real_fer: Path) -> None:
    """The README's and RESULTS' accuracy of the default model, measured again on PublicTest.

    The file records the accuracy it was packed at (val split, its TTA, its fp16 weights);
    `fertool eval DATA --split val` on a fresh preparation of the real faces must give it back.
    """
    meta = load_artifact(default_model_path()).meta
    packing, tta = meta["packing"], meta["tta"]
    recorded = (
        packing["accuracy_fp16"] if packing["weights"] == "fp16" else packing["accuracy_fp32"][tta]
    )
    # pack_model measured in fp32 arithmetic: the same arithmetic gives it back within a face.
    # A temperature (fertool calibrate, after packing) reweights the views in their mean: it
    # moved none of the bundled model's faces in fp32 and 3 in bf16 (MODEL_CARD.md, "Calibration").
    moved = 4 / 3589 if meta.get("temperature", 1.0) != 1.0 else 0.0
    exact = json_of(invoke("eval", real_fer, "--split", "val", "--precision", "fp32", "--json"))
    assert exact["count"] == 3589 and exact["tta"] == tta
    assert recorded - 0.0003 <= exact["accuracy"] <= recorded + 0.0003 + moved
    # What a user runs: --precision auto is bf16 on CPUs with native bf16, a few faces apart
    # (bf16 rounding flips borderline faces: 1 of 3589 for this default, 6, 4 and 5 for the ones
    # before it). Elsewhere auto is the fp32 just measured.
    if resolve_precision("auto", torch.device("cpu")) is None:
        return
    report = json_of(invoke("eval", real_fer, "--split", "val", "--json"))
    assert report["precision"] == "bf16" and report["accuracy"] == pytest.approx(
        recorded, abs=0.003
    )  # eleven faces
