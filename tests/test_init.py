"""train-branch --init: a run that starts from a trained model's weights.

It is how a branch trains longer than one session allows (a fresh schedule from the best
weights so far), how a user fine-tunes on their own faces, and, from an ensemble, how its
branches and head train together end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clitools import assert_real_png, invoke, json_of, one_line_error
from trainhelpers import ctrl_c_in_epoch

from fertool import plots
from fertool.artifacts import load_artifact
from fertool.errors import BadInputError
from fertool.evaluate import predict_logits, select_split
from fertool.models import model_from_artifact
from fertool.provenance import run_history
from fertool.train import TrainConfig, train_branch


def val_accuracy(model: torch.nn.Module, dataset) -> float:
    images, labels, _ = select_split(dataset, "val")
    return (
        (predict_logits(model, images, torch.device("cpu")).argmax(1) == labels)
        .float()
        .mean()
        .item()
    )


def test_a_run_starts_from_the_init_weights_and_keeps_their_normalisation(
    synthetic_data: Path, tiny_branch: Path
) -> None:
    dataset, start = load_artifact(synthetic_data), load_artifact(tiny_branch)
    # With a learning rate of almost nothing the first epoch cannot move the weights, so the
    # run's model is the start's and scores what the start scores.
    config = TrainConfig(
        arch="tiny",
        epochs=1,
        lr=1e-12,
        optimizer="sgd",
        augment=False,
        seed=3,
        normalize=False,
        init="digest",
    )
    result = train_branch(dataset, config, init=start)
    for name, value in start.tensors.items():
        assert torch.allclose(result.model.state_dict()[name].float(), value.float(), atol=1e-6), (
            name
        )
    assert result.best_val_accuracy == pytest.approx(
        val_accuracy(model_from_artifact(start), dataset), abs=1e-6
    )
    # normalize=False is overridden: the weights were learned with the start's statistics.
    assert result.meta["normalization"] == start.meta["normalization"]
    assert float(result.model.mean) == pytest.approx(start.meta["normalization"]["mean"])


def test_train_branch_init_records_where_it_started(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "longer.safetensors"
    result = invoke(
        "train-branch",
        synthetic_data,
        "-o",
        out,
        "--init",
        tiny_branch,
        "--epochs",
        2,
        "--lr",
        "1e-3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    start, meta = load_artifact(tiny_branch).meta, load_artifact(out).meta
    # The architecture comes from the start, not from the recipe's default (dexpression).
    assert meta["arch"] == "tiny" and meta["train_config"]["arch"] == "tiny"
    assert meta["init"]["file"] == str(tiny_branch) and meta["init"]["epochs"] == len(
        start["history"]
    )
    assert meta["init"]["val_accuracy"] == start["metrics"]["best_val_accuracy"]
    assert (
        meta["init"]["history"] == start["history"]
    )  # so curves draws the whole run from this file
    assert (
        len(meta["init"]["sha256"]) == 64 and meta["train_config"]["init"] == meta["init"]["sha256"]
    )
    assert len(meta["history"]) == 2
    info = json_of(invoke("info", out, "--json"))
    assert (
        info["init"]["file"] == str(tiny_branch) and "history" not in info["init"]
    )  # provenance, not curves
    assert f"{tiny_branch} (2 epochs" in invoke("info", out).stdout
    ensemble = tmp_path / "e.safetensors"
    assert (
        invoke("ensemble", synthetic_data, out, out, "-o", ensemble, "--epochs", 1).exit_code == 0
    )
    assert [b["init_epochs"] for b in json_of(invoke("info", ensemble, "--json"))["branches"]] == [
        2,
        2,
    ]
    assert "2 epochs after 2 (--init)" in invoke("info", ensemble).stdout
    # A third stage counts every epoch before it, down the chain: 2 (tiny_branch) + 2 (out).
    third = tmp_path / "third.safetensors"
    assert (
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            third,
            "--init",
            out,
            "--epochs",
            1,
            "--lr",
            "1e-3",
        ).exit_code
        == 0
    )
    assert json_of(invoke("info", third, "--json"))["epochs_before"] == 4
    assert json_of(invoke("info", out, "--json"))["epochs_before"] == 2
    assert (
        json_of(invoke("info", tiny_branch, "--json"))["epochs_before"] is None
    )  # trained from scratch
    assert (
        invoke("ensemble", synthetic_data, third, out, "-o", ensemble, "--epochs", 1).exit_code == 0
    )
    assert "1 epochs after 4 (--init)" in invoke("info", ensemble).stdout


def test_a_run_from_a_branch_keeps_its_dropout_unless_given_another(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    assert load_artifact(tiny_branch).meta["arch_args"]["dropout"] == 0.5
    for given, expected in (([], 0.5), (["--dropout", 0.2], 0.2)):
        out = tmp_path / f"tuned{expected}.safetensors"
        json_of(
            invoke(
                "train-branch",
                synthetic_data,
                "-o",
                out,
                "--init",
                tiny_branch,
                "--epochs",
                1,
                "--lr",
                "1e-3",
                *given,
                "--json",
            )
        )
        tuned = load_artifact(out)
        assert (
            tuned.meta["train_config"]["dropout"] == tuned.meta["arch_args"]["dropout"] == expected
        )
        assert model_from_artifact(tuned).backbone.dropout.p == expected
    # An ensemble's dropout is its head's: fine-tuned end to end, it keeps the head's own 0.3.
    ensemble, tuned_ensemble = tmp_path / "e.safetensors", tmp_path / "e-tuned.safetensors"
    json_of(
        invoke(
            "ensemble",
            synthetic_data,
            tiny_branch,
            tiny_branch,
            "-o",
            ensemble,
            "--epochs",
            1,
            "--dropout",
            0.3,
            "--json",
        )
    )
    json_of(
        invoke(
            "train-branch",
            synthetic_data,
            "-o",
            tuned_ensemble,
            "--init",
            ensemble,
            "--epochs",
            1,
            "--lr",
            "1e-3",
            "--json",
        )
    )
    head = model_from_artifact(load_artifact(tuned_ensemble)).head
    assert load_artifact(tuned_ensemble).meta["arch_args"]["dropout"] == 0.3
    assert {m.p for m in head if isinstance(m, torch.nn.Dropout)} == {0.3}
    # The library applies it to the layers themselves, not only to the record.
    config = TrainConfig(arch="tiny", epochs=1, lr=1e-12, dropout=0.0, seed=3, init="digest")
    result = train_branch(load_artifact(synthetic_data), config, init=load_artifact(tiny_branch))
    assert result.model.backbone.dropout.p == 0.0 and result.meta["arch_args"]["dropout"] == 0.0


def test_another_arch_than_the_starts_is_refused(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    result = invoke(
        "train-branch",
        synthetic_data,
        "-o",
        tmp_path / "x.safetensors",
        "--init",
        tiny_branch,
        "--arch",
        "dexpression_bn",
        "--epochs",
        1,
    )
    line = one_line_error(result, tiny_branch.name)
    assert result.exit_code == 3 and "is a tiny branch, but --arch is dexpression_bn" in line
    assert not (tmp_path / "x.safetensors").exists()
    # The library refuses it too, whoever calls it.
    with pytest.raises(BadInputError, match="is a tiny branch, but --arch is dexpression"):
        train_branch(
            load_artifact(synthetic_data),
            TrainConfig(arch="dexpression", epochs=1),
            init=load_artifact(tiny_branch),
        )


@pytest.fixture(scope="module")
def tiny_ensemble(
    synthetic_data: Path, tiny_branch: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("ensemble") / "e.safetensors"
    assert (
        invoke(
            "ensemble", synthetic_data, tiny_branch, tiny_branch, "-o", path, "--epochs", 2
        ).exit_code
        == 0
    )
    return path


def test_an_ensemble_start_trains_branches_and_head_together(
    synthetic_data: Path, tiny_ensemble: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default output name lands here
    result = invoke(
        "train-branch",
        synthetic_data,
        "--init",
        tiny_ensemble,
        "--epochs",
        2,
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "e-tuned.safetensors"
    assert json_of(result)["output"] == "e-tuned.safetensors"
    start, tuned = load_artifact(tiny_ensemble), load_artifact(out, expect="ensemble")
    changed = {
        name for name, value in start.tensors.items() if not torch.equal(value, tuned.tensors[name])
    }
    # The head and every branch's convolutions moved; the branches' own classifiers, which a head
    # over penultimate features never reads, did not.
    assert {name.split(".")[0] for name in changed} == {"head", "branches"}
    for b in (0, 1):
        assert any(
            name.startswith(f"branches.{b}.backbone.") and name.endswith("weight")
            for name in changed
        )
        assert not any(name.startswith(f"branches.{b}.backbone.fc.") for name in changed)
    assert (
        tuned.meta["branches"] == start.meta["branches"]
        and tuned.meta["arch_args"] == start.meta["arch_args"]
    )
    assert tuned.meta["init"]["file"] == str(tiny_ensemble) and len(tuned.meta["history"]) == 2
    # The file is a complete ensemble: eval rebuilds it and scores what training selected.
    scored = json_of(invoke("eval", synthetic_data, out, "--json"))
    assert scored["accuracy"] == pytest.approx(tuned.meta["metrics"]["best_val_accuracy"], abs=1e-6)
    shown = invoke("info", out).stdout
    assert (
        f"{tiny_ensemble} (2 epochs" in shown and shown.count("(then fine-tuned with the head") == 2
    )
    assert "fine-tuned" not in invoke("info", tiny_ensemble).stdout


def test_an_ensemble_start_scores_as_the_ensemble_before_it_moves(
    synthetic_data: Path, tiny_ensemble: Path
) -> None:
    dataset, start = load_artifact(synthetic_data), load_artifact(tiny_ensemble)
    start.meta["tta"] = "flip"  # as a head trained with --views flip records
    # fp32 as val_accuracy scores it: auto would pick bf16 on a CPU with native bf16,
    # a few faces apart.
    config = TrainConfig(
        arch="ensemble",
        epochs=1,
        lr=1e-12,
        optimizer="sgd",
        augment=False,
        init="digest",
        precision="fp32",
    )
    result = train_branch(dataset, config, init=start)
    assert result.best_val_accuracy == pytest.approx(
        val_accuracy(model_from_artifact(start), dataset), abs=1e-6
    )
    assert "normalization" not in result.meta  # each branch carries its own
    # The epoch was chosen on plain faces, so eval's --tta auto must score it on them too.
    assert "tta" not in result.meta and result.meta["branches"] == start.meta["branches"]


def test_an_ensemble_start_refuses_an_arch(
    synthetic_data: Path, tiny_ensemble: Path, tmp_path: Path
) -> None:
    result = invoke(
        "train-branch",
        synthetic_data,
        "-o",
        tmp_path / "x.safetensors",
        "--init",
        tiny_ensemble,
        "--arch",
        "tiny",
        "--epochs",
        1,
    )
    assert result.exit_code == 3 and "is an ensemble, but --arch is tiny" in one_line_error(
        result, "e.safetensors"
    )
    assert not (tmp_path / "x.safetensors").exists()


def test_a_checkpoint_resumes_only_from_the_same_start(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path
) -> None:
    dataset, start = load_artifact(synthetic_data), load_artifact(tiny_branch)
    checkpoint = tmp_path / "run.ckpt"
    config = TrainConfig(arch="tiny", epochs=2, lr=1e-3, seed=3, init="digest-a")
    with ctrl_c_in_epoch(2):
        train_branch(dataset, config, checkpoint=checkpoint, init=start)
    with pytest.raises(BadInputError, match=r"other settings \(init\)"):
        train_branch(
            dataset,
            TrainConfig(arch="tiny", epochs=2, lr=1e-3, seed=3, init="digest-b"),
            checkpoint=checkpoint,
            resume=True,
            init=start,
        )
    whole = train_branch(dataset, config, init=start)
    resumed = train_branch(dataset, config, checkpoint=checkpoint, resume=True, init=start)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_curves_numbers_a_continued_run_after_its_start(
    synthetic_data: Path, tiny_branch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    for start, out in ((tiny_branch, once), (once, twice)):
        assert (
            invoke(
                "train-branch",
                synthetic_data,
                "-o",
                out,
                "--init",
                start,
                "--epochs",
                2,
                "--lr",
                "1e-3",
            ).exit_code
            == 0
        )
    first = len(load_artifact(tiny_branch).meta["history"])
    earlier, own = run_history(load_artifact(twice).meta)
    # Oldest first: the tiny branch's epochs, then once's, then twice's own, on one axis.
    assert [r["epoch"] for r in earlier] == list(range(1, first + 3))
    assert [r["epoch"] for r in own] == [first + 3, first + 4]
    assert earlier[:first] == [
        {**r, "epoch": i + 1} for i, r in enumerate(load_artifact(tiny_branch).meta["history"])
    ]
    # A file from before the start's history was recorded keeps the numbering,
    # without the earlier epochs.
    legacy = {"history": own, "init": {"epochs": 22, "init": None}}
    assert run_history(legacy)[0] == [] and [r["epoch"] for r in run_history(legacy)[1]] == [23, 24]
    # The command hands the figure exactly those epochs: the continued run's earlier ones, none
    # for the start itself.
    drawn = {}
    original = plots.curves_figure

    def spy(histories, labels, earlier=None):
        drawn.update(histories=histories, earlier=earlier)
        return original(histories, labels, earlier=earlier)

    monkeypatch.setattr(plots, "curves_figure", spy)
    png = tmp_path / "curves.png"
    result = invoke("curves", twice, tiny_branch, "-o", png)
    assert result.exit_code == 0, result.output
    assert drawn["earlier"] == [earlier, []] and drawn["histories"][0] == own
    assert_real_png(png)
