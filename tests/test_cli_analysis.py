"""confusion, saliency, filters and curves through the CLI: real PNGs, decoded and checked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_real_png, copy_with_meta, invoke, one_line_error
from PIL import Image
from typer.testing import CliRunner

from fertool.artifacts import load_artifact
from fertool.cli import app

runner = CliRunner()


def run(*args: str) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


@pytest.fixture(scope="module")
def predictions(
    synthetic_data: Path, tiny_branch: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("preds") / "preds.npz"
    run("eval", synthetic_data, tiny_branch, "--split", "val", "-o", path)
    return path


def test_confusion_writes_figure_csv_and_names_the_worst(predictions, tmp_path):
    png, table = tmp_path / "c.png", tmp_path / "c.csv"
    result = run("confusion", predictions, "-o", png, "--csv", table, "--json")
    summary = json.loads(result.stdout)
    assert_real_png(png)
    preds = load_artifact(predictions)
    labels, predicted = preds.tensors["labels"], preds.tensors["logits"].argmax(1)
    with open(table, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == summary["classes"]
    matrix = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert matrix.sum() == len(labels)
    assert np.trace(matrix) == (labels == predicted).sum()
    assert summary["accuracy"] == pytest.approx((labels == predicted).mean())
    recalls = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    assert summary["worst_class"]["recall"] == pytest.approx(recalls[matrix.sum(1) > 0].min())
    top = summary["most_confused"][0]
    i, j = summary["classes"].index(top["true"]), summary["classes"].index(top["predicted"])
    assert top["count"] == matrix[i, j] and i != j


def test_confusion_counts_mode_and_table_output(predictions, tmp_path, monkeypatch):
    import fertool.plots

    drawn = {}
    real_save = fertool.plots.save_figure

    def keep(figure, path):  # the figure as drawn, then saved for real
        drawn[Path(path).name] = figure.axes[0].images[0].get_array()
        real_save(figure, path)

    monkeypatch.setattr(fertool.plots, "save_figure", keep)
    result = run("confusion", predictions, "-o", tmp_path / "c.png", "--counts")
    assert "worst class" in result.stdout
    assert_real_png(tmp_path / "c.png")
    run("confusion", predictions, "-o", tmp_path / "rates.png")
    # --counts colours the cells by count; without it, by the share of each true class (rows sum to
    # 1).
    labels = load_artifact(predictions).tensors["labels"]
    assert drawn["c.png"].sum() == len(labels)
    rates = np.asarray(drawn["rates.png"])
    assert np.allclose(rates.sum(1)[rates.sum(1) > 0], 1.0)


def test_confusion_refuses_a_model(tiny_branch, tmp_path):
    result = runner.invoke(app, ["confusion", str(tiny_branch), "-o", str(tmp_path / "c.png")])
    assert result.exit_code != 0
    assert "predictions" in result.output + result.stderr
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "gradcam", "integrated"])
def test_saliency_on_dataset_images(synthetic_data, tiny_branch, tmp_path, method):
    png, raw = tmp_path / "s.png", tmp_path / "s.npz"
    result = run(
        "saliency",
        tiny_branch,
        "--data",
        synthetic_data,
        "--index",
        "0,5,9",
        "--method",
        method,
        "--target",
        "true",
        "--npz",
        raw,
        "-o",
        png,
        "--json",
    )
    summary = json.loads(result.stdout)
    assert [row["image"] for row in summary["images"]] == ["#0", "#5", "#9"]
    labels = load_artifact(synthetic_data).tensors["labels"][[0, 5, 9]].tolist()
    classes = load_artifact(tiny_branch).meta["classes"]
    assert [row["target"] for row in summary["images"]] == [classes[i] for i in labels]
    written = load_artifact(raw, expect="saliency").tensors
    maps = written["maps"]
    assert maps.shape == (3, 48, 48) and maps.max() > 0
    # Integrated gradients keep their signs too; the other methods have none to keep.
    assert ("signed" in written) == (method == "integrated")
    if method == "integrated":
        np.testing.assert_array_equal(np.abs(written["signed"]), maps)
    assert_real_png(png)


def test_integrated_saliency_reports_how_close_its_sum_is_and_more_steps_close_it(
    synthetic_data, tiny_branch, tmp_path
):
    gaps = {}
    for steps in (2, 128):
        result = run(
            "saliency",
            tiny_branch,
            "--data",
            synthetic_data,
            "--index",
            "0-5",
            "--method",
            "integrated",
            "--steps",
            steps,
            "-o",
            tmp_path / f"s{steps}.png",
            "--json",
        )
        rows = json.loads(result.stdout)["images"]
        assert all(np.isfinite([r["attribution_sum"], r["logit_rise"]]).all() for r in rows)
        gaps[steps] = max(abs(r["attribution_sum"] - r["logit_rise"]) for r in rows)
    # The rise is the same whatever the steps; only the sum's path approximation changes.
    assert gaps[128] < gaps[2] / 4, gaps
    table = run(
        "saliency",
        tiny_branch,
        "--data",
        synthetic_data,
        "--index",
        "0",
        "--method",
        "integrated",
        "-o",
        tmp_path / "t.png",
    ).stdout
    assert "attributions sum to" in table and "of the logit's" in table
    assert (
        "attribution_sum"
        not in run(
            "saliency",
            tiny_branch,
            "--data",
            synthetic_data,
            "--index",
            "0",
            "-o",
            tmp_path / "g.png",
            "--json",
        ).stdout
    )


def test_saliency_predicts_what_eval_does_with_the_views_the_model_asks_for(
    synthetic_data, tiny_branch, predictions, tmp_path
):
    crops = copy_with_meta(tiny_branch, tmp_path / "crops.safetensors", tta="crops")
    preds = tmp_path / "p.npz"
    run(
        "eval", synthetic_data, crops, "--split", "val", "-o", preds, "--precision", "fp32"
    )  # saliency is fp32
    evaluated = load_artifact(preds).tensors
    index = evaluated["indices"][:6].tolist()
    summary = json.loads(
        run(
            "saliency",
            crops,
            "--data",
            synthetic_data,
            "--index",
            ",".join(map(str, index)),
            "-o",
            tmp_path / "s.png",
            "--json",
        ).stdout
    )
    assert summary["tta"] == "crops"
    expected = np.exp(evaluated["logits"][:6])  # eval's logits with views: log mean probabilities
    classes = load_artifact(tiny_branch).meta["classes"]
    assert [row["predicted"] for row in summary["images"]] == [
        classes[i] for i in expected.argmax(1)
    ]
    # rtol 1e-3 (here and for --tta none): fp32 sums of a batch of 6 and of 100 differed by 1.5e-4
    # with oneDNN on an AMX Xeon; the labels above are compared exactly.
    np.testing.assert_allclose(
        [row["probability"] for row in summary["images"]], expected.max(1), rtol=1e-3
    )
    # --tta none: the face alone, as the file without its request (the module's predictions) scores
    # it.
    alone = json.loads(
        run(
            "saliency",
            crops,
            "--data",
            synthetic_data,
            "--index",
            ",".join(map(str, index)),
            "-o",
            tmp_path / "n.png",
            "--json",
            "--tta",
            "none",
        ).stdout
    )
    logits = load_artifact(predictions).tensors["logits"][:6]
    single = np.exp(logits - logits.max(1, keepdims=True))
    single /= single.sum(1, keepdims=True)
    assert alone["tta"] == "none"
    np.testing.assert_allclose(
        [row["probability"] for row in alone["images"]], single.max(1), rtol=1e-3
    )
    assert not np.allclose(single.max(1), expected.max(1), rtol=1e-3)  # the views made a difference


def test_saliency_option_mistakes_are_named_before_any_file_is_read(tmp_path):
    # The images do not exist either: the option is the first thing wrong, and it is named.
    one_line_error(
        invoke("saliency", tmp_path / "missing.png", "--method", "lime", "-o", tmp_path / "s.png"),
        "'lime'",
        "'gradient', 'smoothgrad', 'gradcam', 'integrated'",
        code=2,
    )
    one_line_error(
        invoke(
            "saliency",
            tmp_path / "missing.png",
            "--method",
            "integrated",
            "--layer",
            "featex1",
            "-o",
            tmp_path / "s.png",
        ),
        "--layer applies to the gradcam method only",
        code=3,
    )
    one_line_error(
        invoke("saliency", tmp_path / "missing.png", "--steps", 64, "-o", tmp_path / "s.png"),
        "--steps applies to the integrated method only",
        code=3,
    )
    one_line_error(
        invoke(
            "saliency",
            tmp_path / "missing.png",
            "--method",
            "integrated",
            "--steps",
            0,
            "-o",
            tmp_path / "s.png",
        ),
        "'--steps'",
        code=2,
    )
    one_line_error(
        invoke("saliency", tmp_path / "missing.png", "--tta", "tencrop", "-o", tmp_path / "s.png"),
        "'tencrop'",
        "'auto', 'none', 'flip', 'crops'",
        code=2,
    )
    one_line_error(
        invoke(
            "saliency",
            "--data",
            tmp_path / "missing.safetensors",
            "--detect",
            "-o",
            tmp_path / "s.png",
        ),
        "--detect finds faces in photo files",
        code=3,
    )
    assert list(tmp_path.iterdir()) == []


def test_saliency_on_image_files_of_any_size_and_colour(tiny_branch, tmp_path):
    rng = np.random.default_rng(0)
    big = tmp_path / "big colour.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(big)
    small = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(small)
    result = run(
        "saliency", tiny_branch, big, small, "-o", tmp_path / "s.png", "--target", "happy", "--json"
    )
    rows = json.loads(result.stdout)["images"]
    assert [r["image"] for r in rows] == ["big colour.jpg", "face.png"]
    assert all(r["target"] == "happy" for r in rows)
    assert_real_png(tmp_path / "s.png")


def test_saliency_errors_name_the_problem(tiny_branch, synthetic_data, tmp_path):
    cases = [
        ([str(tiny_branch), str(tmp_path / "missing.png")], "missing.png"),
        ([str(tiny_branch), "--data", str(synthetic_data), "--index", "999999"], "out of range"),
        ([str(tiny_branch), "--data", str(synthetic_data), "--index", "x"], "--index"),
        ([str(tiny_branch), "--data", str(synthetic_data), "--index", "5-3"], "low-high"),
        ([str(tiny_branch), "--data", str(synthetic_data), "--index", ","], "names no image"),
        ([str(tiny_branch), "--data", str(synthetic_data), "--target", "bored"], "bored"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, ["saliency", *args, "-o", str(tmp_path / "s.png")])
        text = result.output + result.stderr
        assert result.exit_code != 0 and needle in text and "Traceback" not in text, text
        assert not (tmp_path / "s.png").exists()


def test_saliency_without_a_model_uses_the_bundled_one(tmp_path, monkeypatch):
    import fertool.bundled

    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    result = runner.invoke(app, ["saliency", str(face), "-o", str(tmp_path / "s.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"].endswith("default.safetensors")
    # Where no model ships (a source tree without it), the error says to pass one.
    monkeypatch.setattr(fertool.bundled, "DEFAULT_MODEL", tmp_path / "no-model-here.safetensors")
    result = runner.invoke(app, ["saliency", str(face), "-o", str(tmp_path / "t.png")])
    assert result.exit_code != 0
    assert "pass a model file" in result.stderr


def test_filters_list_layers_one_per_line_name_first(tiny_branch):
    result = run("filters", tiny_branch, "--list-layers")
    names = [line.split()[0] for line in result.stdout.strip().splitlines()]
    assert "body.0" in names and "body.2" in names


def test_filters_gradient_ascent_figure(tiny_branch, tmp_path):
    png = tmp_path / "f.png"
    result = run(
        "filters",
        tiny_branch,
        "--layer",
        "body.2",
        "--filters",
        "0-7",
        "--steps",
        "12",
        "-o",
        png,
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["filters"] == list(range(8))
    gains = np.array(summary["objective_end"]) - np.array(summary["objective_start"])
    assert (gains > 0).mean() >= 0.75
    assert_real_png(png)


def test_filters_activation_maps_for_an_image(tiny_branch, tmp_path):
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(face)
    result = run(
        "filters",
        tiny_branch,
        "--layer",
        "body.0",
        "--image",
        face,
        "-o",
        tmp_path / "a.png",
        "--json",
    )
    assert json.loads(result.stdout)["maps"] == [16, 24, 24]
    assert_real_png(tmp_path / "a.png")


def test_filters_unknown_layer_lists_the_names(tiny_branch, tmp_path):
    result = runner.invoke(
        app, ["filters", str(tiny_branch), "--layer", "nope", "-o", str(tmp_path / "f.png")]
    )
    assert result.exit_code != 0
    assert "body.0" in result.stderr and "--list-layers" in result.stderr


def test_curves_one_line_per_model(tiny_branch, tmp_path, monkeypatch):
    import fertool.plots

    legends = []
    real_save = fertool.plots.save_figure

    def keep(figure, path):
        legends.extend(
            t.get_text()
            for ax in figure.axes
            if ax.get_legend()
            for t in ax.get_legend().get_texts()
        )
        real_save(figure, path)

    monkeypatch.setattr(fertool.plots, "save_figure", keep)
    png = tmp_path / "curves.png"
    run("curves", tiny_branch, tiny_branch, "--labels", "first,second", "-o", png)
    assert_real_png(png)
    assert {"first", "second"} <= set(legends)
    result = runner.invoke(
        app, ["curves", str(tiny_branch), "--labels", "a,b", "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code != 0 and "--labels" in result.stderr
