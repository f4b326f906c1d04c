"""The ensemble: frozen branches, a trained head, the averaging baseline, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clitools import one_line_error, stderr_of
from typer.testing import CliRunner

from fertool.artifacts import load_artifact, save_tensors
from fertool.cli import app
from fertool.ensemble import (
    EnsembleConfig,
    average_ensemble,
    branch_outputs,
    build_ensemble,
    train_ensemble,
)
from fertool.errors import BadInputError, WrongKindError
from fertool.evaluate import predict_logits, select_split
from fertool.models import branch_from_artifact, load_model
from fertool.train import SilentReporter, TrainConfig, train_branch

runner = CliRunner()


@pytest.fixture(scope="module")
def branches(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny branches with different seeds."""
    folder = tmp_path_factory.mktemp("branches")
    paths = []
    for seed in (1, 2, 3):
        path = folder / f"b{seed}.safetensors"
        result = runner.invoke(
            app,
            [
                "train-branch",
                str(synthetic_data),
                "-o",
                str(path),
                "--arch",
                "tiny",
                "--epochs",
                "2",
                "--lr",
                "3e-3",
                "--seed",
                str(seed),
            ],
        )
        assert result.exit_code == 0, result.output
        paths.append(path)
    return paths


@pytest.mark.parametrize("augment", [False, True])
def test_training_the_head_leaves_branch_weights_unchanged(synthetic_data, branches, augment):
    dataset = load_artifact(synthetic_data)
    arts = [load_artifact(p) for p in branches]
    before = [{k: v.clone() for k, v in a.tensors.items()} for a in arts]
    result = train_ensemble(dataset, arts, EnsembleConfig(epochs=3, seed=0, augment=augment))
    for i, weights in enumerate(before):
        trained = result.model.branches[i].state_dict()
        assert all(torch.equal(weights[k], trained[k]) for k in weights), f"branch {i} changed"
    assert len(result.history) == 3
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in result.history)


def train_head(data: Path, branches: list[Path], out: Path, *options: str) -> dict:
    """`fertool ensemble ... --json` with these options; its summary."""
    result = runner.invoke(
        app, ["ensemble", str(data), *map(str, branches), "-o", str(out), *options, "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ensemble_says_what_it_computes_before_its_first_epoch(synthetic_data, branches, tmp_path):
    """Caching the branches' outputs took 2 minutes for three wide FER2013 branches (4 with flip
    views), silent until epoch 1's line: off a terminal (`2> head.log`) a line per split says what
    is being computed."""
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "-o",
            str(tmp_path / "ens.safetensors"),
            "--epochs",
            "1",
            "--views",
            "flip",
        ],
    )
    assert result.exit_code == 0, result.output
    stderr = stderr_of(result)
    if stderr is None:
        pytest.skip("this click mixes stderr into stdout")
    counts = load_artifact(synthetic_data).meta["counts"]
    lines = stderr.splitlines()
    assert lines[0] == (
        f"computing the 3 frozen branches' outputs for the {counts['val']['total']:,} val faces "
        "(flip views), once"
    )
    assert lines[1] == (
        f"computing the 3 frozen branches' outputs for the {counts['train']['total']:,} train "
        "faces (flip views), once"
    )
    assert lines[2].startswith("epoch   1")


class CountingOutputs(SilentReporter):
    def __init__(self) -> None:
        self.stages: list[tuple[str, int]] = []
        self.counted: list[int] = []

    def stage(self, text: str, images: int) -> None:
        self.stages.append((text, images))
        self.counted.append(0)

    def epoch_start(self, epoch: int, epochs: int, images: int) -> None:
        self.counted.append(0)  # the epochs' faces go here, apart from the stages'

    def batch_done(self, images: int) -> None:
        self.counted[-1] += images


def test_the_cache_stages_count_every_face_once_whatever_the_views(synthetic_data, branches):
    dataset = load_artifact(synthetic_data)
    counts = dataset.meta["counts"]
    reporter = CountingOutputs()
    train_ensemble(
        dataset,
        [load_artifact(p) for p in branches],
        EnsembleConfig(epochs=1, views="crops"),
        reporter=reporter,
    )
    # What each stage announced is what batch_done then counted: faces, not views x faces.
    expected = [counts["val"]["total"], counts["train"]["total"]]
    assert [images for _, images in reporter.stages] == expected == reporter.counted[:2]
    assert reporter.counted[2:] == [counts["train"]["total"]]


@pytest.mark.parametrize("features", ["penultimate", "logits"])
def test_ensemble_file_is_self_contained_and_scores_as_trained(
    synthetic_data, branches, tmp_path, features
):
    out = tmp_path / "ens.safetensors"
    summary = train_head(synthetic_data, branches, out, "--features", features, "--epochs", "4")
    model, meta = load_model(out)  # no branch file needed any more
    assert meta["kind"] == "ensemble" and len(meta["branches"]) == 3
    assert meta["arch_args"]["features"] == features
    dataset = load_artifact(synthetic_data)
    images, labels, _ = select_split(dataset, "val")
    accuracy = (
        (predict_logits(model, images, torch.device("cpu")).argmax(1) == labels)
        .float()
        .mean()
        .item()
    )
    assert accuracy == pytest.approx(summary["best_val_accuracy"], abs=1e-6)
    evaluated = runner.invoke(
        app, ["eval", str(synthetic_data), str(out), "--json", "--precision", "fp32"]
    )  # the reference above is fp32; auto is bf16 on AMX/AVX512-BF16 CPUs
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("views", ["flip", "crops"])
def test_a_head_trained_on_views_asks_eval_for_them_and_scores_as_selected(
    synthetic_data, branches, tmp_path, views
):
    out = tmp_path / "ens.safetensors"
    summary = train_head(synthetic_data, branches, out, "--views", views, "--epochs", "3")
    assert load_model(out)[1]["tta"] == views
    evaluated = json.loads(
        runner.invoke(app, ["eval", str(synthetic_data), str(out), "--json"]).stdout
    )
    assert evaluated["tta"] == views  # --tta auto reads the file
    assert evaluated["accuracy"] == pytest.approx(summary["best_val_accuracy"], abs=1e-6)


def test_the_head_trains_on_the_other_views_too(synthetic_data, branches):
    # Same seed, so same shuffling and dropout: only the drawn views can change the training loss
    # (the best-epoch choice on val does not touch it). A head that read only the plain view would
    # tie.
    dataset, arts = load_artifact(synthetic_data), [load_artifact(p) for p in branches]
    plain, flipped = (
        train_ensemble(dataset, arts, EnsembleConfig(epochs=1, views=v)) for v in ("none", "flip")
    )
    assert plain.history[0]["loss"] != pytest.approx(flipped.history[0]["loss"], abs=1e-6)


def test_weight_decay_reaches_the_heads_optimizer(synthetic_data, branches):
    # Same seed, so the same steps: only AdamW's decay can make one head's weights smaller.
    dataset, arts = load_artifact(synthetic_data), [load_artifact(p) for p in branches]
    norms = [
        train_ensemble(dataset, arts, EnsembleConfig(epochs=1, weight_decay=wd))
        .model.head[1]
        .weight.norm()
        .item()
        for wd in (0.0, 20.0)
    ]
    assert norms[1] < 0.9 * norms[0]


def test_the_view_cache_holds_each_view_through_the_branches(synthetic_data, branches):
    model = build_ensemble([load_artifact(p) for p in branches], EnsembleConfig()).eval()
    images = select_split(load_artifact(synthetic_data), "val")[0][:10]
    cpu = torch.device("cpu")
    plain, crops = (
        branch_outputs(model, images, cpu, None),
        branch_outputs(model, images, cpu, None, views="crops"),
    )
    assert plain.shape == (1, 10, 3 * model.branches[0].backbone.feature_dim) and crops.shape == (
        6,
        *plain.shape[1:],
    )
    torch.testing.assert_close(crops[0], plain[0])
    torch.testing.assert_close(
        crops[1], branch_outputs(model, images.flip(-1), cpu, None)[0]
    )  # the mirror image


def test_head_has_three_dense_layers(branches):
    model = build_ensemble([load_artifact(p) for p in branches], EnsembleConfig())
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    assert linears[0].in_features == 3 * model.branches[0].backbone.feature_dim
    assert linears[-1].out_features == 7


@pytest.mark.parametrize(("hidden", "widths"), [("32", [32, 7]), ("none", [7])])
def test_hidden_and_dropout_shape_the_head_and_the_file_rebuilds_it(
    synthetic_data, branches, tmp_path, hidden, widths
):
    out = tmp_path / "ens.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "-o",
            str(out),
            "--hidden",
            hidden,
            "--dropout",
            "0.2",
            "--weight-decay",
            "0.05",
            "--epochs",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    model, meta = load_model(out)
    assert meta["arch_args"]["hidden"] == widths[:-1] and meta["arch_args"]["dropout"] == 0.2
    assert meta["train_config"]["weight_decay"] == 0.05
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == widths
    assert linears[0].in_features == 3 * model.branches[0].backbone.feature_dim
    assert [m.p for m in model.head if isinstance(m, torch.nn.Dropout)] == [0.2] * len(widths)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--hidden", "0"),
        ("--hidden", "512,x"),
        ("--hidden", ""),
        ("--dropout", "1.0"),
        ("--epochs", "0"),
        ("--lr", "-1.0"),
        ("--batch-size", "0"),
        ("--views", "mirror"),
        ("--weight-decay", "-1.0"),
    ],
)
def test_bad_head_options_are_refused_before_anything_is_written(
    synthetic_data, branches, tmp_path, option, value
):
    out = tmp_path / "ens.safetensors"
    result = runner.invoke(
        app, ["ensemble", str(synthetic_data), *map(str, branches), "-o", str(out), option, value]
    )
    one_line_error(result, option)  # fertool's line or Click's (a declared range or choice)
    assert not out.exists()


def test_views_with_augment_is_refused(synthetic_data, branches, tmp_path):
    out = tmp_path / "ens.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "-o",
            str(out),
            "--views",
            "flip",
            "--augment",
        ],
    )
    one_line_error(result, "--no-augment")
    assert not out.exists()


def test_average_baseline_is_the_mean_probability(branches):
    arts = [load_artifact(p) for p in branches]
    model = average_ensemble(arts)
    x = torch.rand(5, 1, 48, 48)
    models = [load_model(p)[0] for p in branches]
    expected = torch.stack([m(x).softmax(1) for m in models]).mean(0)
    torch.testing.assert_close(model(x).exp(), expected, rtol=1e-5, atol=1e-6)


def test_average_cli_writes_a_model_eval_accepts(synthetic_data, branches, tmp_path):
    out = tmp_path / "avg.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "--average",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    evaluated = json.loads(
        runner.invoke(app, ["eval", str(synthetic_data), str(out), "--json"]).stdout
    )
    assert evaluated["accuracy"] == pytest.approx(summary["best_val_accuracy"], abs=1e-6)
    # An ensemble is not a branch: building one from it is refused by kind, naming the file.
    with pytest.raises(WrongKindError, match="avg.safetensors: is an ensemble"):
        branch_from_artifact(load_artifact(out))


def test_average_records_the_accuracy_eval_gives_with_its_views(synthetic_data, branches, tmp_path):
    """--views with --average: the file asks eval for those views,
    and records its score under them."""
    out = tmp_path / "avg.safetensors"
    args = [
        "ensemble",
        str(synthetic_data),
        *map(str, branches),
        "--average",
        "--views",
        "crops",
        "--precision",
        "fp32",
    ]
    result = runner.invoke(app, [*args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert load_artifact(out).meta["tta"] == "crops"
    evaluated = json.loads(
        runner.invoke(
            app, ["eval", str(synthetic_data), str(out), "--precision", "fp32", "--json"]
        ).stdout
    )
    assert evaluated["tta"] == "crops"
    assert evaluated["accuracy"] == pytest.approx(
        json.loads(result.stdout)["best_val_accuracy"], abs=1e-6
    )


def test_a_log_in_a_missing_folder_fails_before_any_work(synthetic_data, branches, tmp_path):
    out, log = tmp_path / "e.safetensors", tmp_path / "no" / "such" / "log.jsonl"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "-o",
            str(out),
            "--log",
            str(log),
            "--epochs",
            "1",
        ],
    )
    one_line_error(result, str(log), code=3)
    assert not out.exists() and not (tmp_path / "e.safetensors.ckpt").exists()


def test_branches_of_other_classes_are_refused(branches, tmp_path):
    odd = load_artifact(branches[0])
    path = tmp_path / "odd.safetensors"
    meta = {k: v for k, v in odd.meta.items() if k not in ("kind", "schema", "fertool_version")}
    save_tensors(
        path, odd.tensors, kind="branch", meta={**meta, "classes": list(reversed(meta["classes"]))}
    )
    with pytest.raises(WrongKindError, match="odd.safetensors"):
        build_ensemble([load_artifact(branches[1]), load_artifact(path)], EnsembleConfig())
    with pytest.raises(BadInputError, match="at least two"):
        build_ensemble([load_artifact(branches[1])], EnsembleConfig())


def test_a_dataset_is_refused_where_a_branch_goes(synthetic_data, branches, tmp_path):
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            str(branches[0]),
            str(synthetic_data),
            "-o",
            str(tmp_path / "e.safetensors"),
        ],
    )
    assert result.exit_code != 0
    assert "is a dataset artifact" in result.output + (result.stderr or "")
    assert not (tmp_path / "e.safetensors").exists()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A synthetic data set with 20 % of train held out, and two tiny branches trained on it."""
    folder = tmp_path_factory.mktemp("holdout")
    data = folder / "held.safetensors"
    assert (
        runner.invoke(
            app, ["prepare", "--synthetic", "700", "--holdout", "0.2", "-o", str(data)]
        ).exit_code
        == 0
    )
    paths = []
    for seed in (1, 2):
        path = folder / f"b{seed}.safetensors"
        result = runner.invoke(
            app,
            [
                "train-branch",
                str(data),
                "-o",
                str(path),
                "--arch",
                "tiny",
                "--epochs",
                "1",
                "--lr",
                "3e-3",
                "--seed",
                str(seed),
            ],
        )
        assert result.exit_code == 0, result.output
        paths.append(path)
    return data, paths


class CountingReporter(SilentReporter):
    """Records how many faces each epoch goes through."""

    def __init__(self) -> None:
        self.images: list[int] = []

    def epoch_start(self, epoch: int, epochs: int, images: int) -> None:
        self.images.append(images)


def test_branches_never_train_on_the_holdout_and_a_head_trains_on_it_alone(held_out):
    data, paths = held_out
    dataset = load_artifact(data)
    counts = dataset.meta["counts"]
    branch_reporter = CountingReporter()
    train_branch(
        dataset, TrainConfig(arch="tiny", epochs=1, device="cpu"), reporter=branch_reporter
    )
    assert branch_reporter.images == [counts["train"]["total"]]

    head_reporter = CountingReporter()
    config = EnsembleConfig(epochs=2, train_split="holdout")
    train_ensemble(dataset, [load_artifact(p) for p in paths], config, reporter=head_reporter)
    assert head_reporter.images == [counts["holdout"]["total"]] * 2

    head = train_head(
        data, paths, data.parent / "head.safetensors", "--train-split", "holdout", "--epochs", "1"
    )
    assert (
        load_artifact(data.parent / "head.safetensors").meta["train_config"]["train_split"]
        == "holdout"
    )
    assert head["val_split"] == "val"


def test_a_holdout_head_over_a_branch_of_another_data_set_is_refused(held_out, branches, tmp_path):
    data, paths = held_out
    out = tmp_path / "head.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(data),
            str(paths[0]),
            str(branches[0]),
            "-o",
            str(out),
            "--train-split",
            "holdout",
        ],
    )
    one_line_error(result, branches[0].name, "trained on another data set", "holdout")
    assert not out.exists()
    # With the usual training split the same pair is allowed: nothing was held out of them.
    train_head(data, [paths[0], branches[0]], out, "--epochs", "1")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--val-split", "holdout"], "picked on the holdout"),
        (["--init", "OTHER"], "--init start"),  # started from weights trained on another data set
    ],
)
def test_a_holdout_head_over_a_branch_that_saw_the_holdout_is_refused(
    held_out, branches, tmp_path, options, needle
):
    data, paths = held_out
    suspect = tmp_path / "suspect.safetensors"
    options = [str(branches[0]) if option == "OTHER" else option for option in options]
    result = runner.invoke(
        app,
        [
            "train-branch",
            str(data),
            "-o",
            str(suspect),
            "--arch",
            "tiny",
            "--epochs",
            "1",
            "--lr",
            "3e-3",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "head.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(data),
            str(paths[0]),
            str(suspect),
            "-o",
            str(out),
            "--train-split",
            "holdout",
        ],
    )
    one_line_error(result, suspect.name, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("split", "needle"),
    [("holdout", "prepare SOURCE --holdout"), ("val", "--train-split val is also --val-split")],
)
def test_a_head_split_that_cannot_work_is_refused(
    synthetic_data, branches, tmp_path, split, needle
):
    out = tmp_path / "head.safetensors"
    result = runner.invoke(
        app,
        [
            "ensemble",
            str(synthetic_data),
            *map(str, branches),
            "-o",
            str(out),
            "--train-split",
            split,
        ],
    )
    one_line_error(result, needle)
    assert not out.exists()
