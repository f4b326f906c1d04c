"""ONNX export and ONNX Runtime: the export's probabilities are torch's, for each branch kind, an
ensemble and each set of views, on real FER2013 faces; and files that are not a fertool export
are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import invoke, json_of, ok, one_line_error
from PIL import Image

from fertool.artifacts import save_tensors
from fertool.bundled import load_face_model
from fertool.errors import BadInputError, WrongKindError
from fertool.evaluate import to_input, tta_views
from fertool.export import export_onnx, zoom_matrix
from fertool.models import EnsembleClassifier, build_classifier

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="the onnx extra is not installed")

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def real_faces(fer2013_root: Path) -> np.ndarray:
    """Four val faces of each class from the real FER2013 folders: uint8 28 x 48 x 48."""
    faces = []
    for name in CLASSES:
        for path in sorted((fer2013_root / "val" / name).glob("*.jpg"))[:4]:
            with Image.open(path) as image:
                faces.append(np.asarray(image.convert("L")))
    stacked = np.stack(faces)
    assert stacked.shape == (28, 48, 48) and stacked.std() > 20  # decoded, not blank
    return stacked


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random batch-norm statistics, so normalisation inside the graph is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            mean, var = module.running_mean, module.running_var
            assert mean is not None and var is not None
            mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def branch_file(path: Path, arch: str, seed: int = 0, **meta: object) -> Path:
    torch.manual_seed(seed)
    norm = {"mean": 0.51, "std": 0.25}
    model = perturbed(build_classifier(arch, {"num_classes": 7}, norm), seed)
    save_tensors(
        path,
        model.state_dict(),
        kind="branch",
        meta={
            "arch": arch,
            "arch_args": {"num_classes": 7},
            "classes": CLASSES,
            "input_size": [1, 48, 48],
            "normalization": norm,
            **meta,
        },
    )
    return path


def ensemble_file(path: Path) -> Path:
    """Two tiny branches with different normalisations under a trained-shape head."""
    torch.manual_seed(3)
    norms = [{"mean": 0.5, "std": 0.25}, {"mean": 0.4, "std": 0.3}]
    branches = [build_classifier("tiny", {"num_classes": 7}, n) for n in norms]
    model = perturbed(EnsembleClassifier(branches, "penultimate", hidden=(16,)), 3)
    meta = {
        "arch": "ensemble",
        "arch_args": {"features": "penultimate", "hidden": [16], "dropout": 0.5},
        "classes": CLASSES,
        "input_size": [1, 48, 48],
        "normalization": None,
        "branches": [
            {"arch": "tiny", "arch_args": {"num_classes": 7}, "normalization": n} for n in norms
        ],
    }
    save_tensors(path, model.state_dict(), kind="ensemble", meta=meta)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx-models")
    return {
        "tiny": branch_file(folder / "tiny.safetensors", "tiny"),
        "dexpression_bn": branch_file(folder / "bn.safetensors", "dexpression_bn", seed=1),
        "ensemble": ensemble_file(folder / "ensemble.safetensors"),
    }


@pytest.mark.parametrize("kind", ["tiny", "dexpression_bn", "ensemble"])
@pytest.mark.parametrize("tta", ["none", "flip", "crops"])
def test_the_export_gives_torchs_probabilities_on_real_faces(
    models: dict[str, Path], real_faces: np.ndarray, tmp_path: Path, kind: str, tta: str
) -> None:
    target = tmp_path / f"{kind}-{tta}.onnx"
    properties = export_onnx(models[kind], target, tta=tta)
    assert properties["tta"] == tta and json.loads(properties["classes"]) == CLASSES
    torch_probs = load_face_model(models[kind]).probabilities(real_faces, tta=tta)
    onnx_model = load_face_model(target)
    assert onnx_model.runtime == "onnxruntime" and onnx_model.tta == tta
    onnx_probs = onnx_model.probabilities(real_faces)
    assert onnx_probs.shape == (28, 7)
    assert np.abs(onnx_probs - torch_probs).max() < TOLERANCE
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    # Not a constant model: the faces get different answers.
    assert np.ptp(torch_probs, axis=0).max() > 1e-3


def test_the_temperature_divides_the_logits_of_every_view_in_the_graph(
    real_faces: np.ndarray, tmp_path: Path
) -> None:
    # The file's temperature T: probabilities are the mean over views of softmax(logits / T),
    # computed here from the torch model's raw logits, not through fertool's eval path.
    source = branch_file(tmp_path / "hot.safetensors", "tiny", seed=5, temperature=2.5)
    export_onnx(source, tmp_path / "hot.onnx", tta="flip")
    module = load_face_model(source).module  # type: ignore[attr-defined]
    with torch.no_grad():
        views = tta_views(to_input(torch.from_numpy(real_faces), torch.device("cpu")), "flip")
        expected = torch.stack([(module(v) / 2.5).softmax(1) for v in views]).mean(0).numpy()
        plain = torch.stack([module(v).softmax(1) for v in views]).mean(0).numpy()
    onnx_model = load_face_model(tmp_path / "hot.onnx")
    assert onnx_model.meta["temperature"] == 2.5
    got = onnx_model.probabilities(real_faces)
    assert np.abs(got - expected).max() < TOLERANCE
    assert np.abs(got - plain).max() > 1e-2  # T = 2.5 really changed them


def test_zoom_matrices_are_the_training_zoom() -> None:
    from fertool.augment import zoom_about_centre

    images = torch.rand(3, 1, 48, 48)
    for zoom in (1.08, 1.16):
        matrix = zoom_matrix(zoom)
        assert torch.allclose(
            matrix @ images @ matrix.T, zoom_about_centre(images, zoom), atol=1e-5
        )


def test_the_bundled_model_exports_with_its_own_views_and_metadata(
    tmp_path: Path, real_faces: np.ndarray
) -> None:
    target = tmp_path / "default.onnx"
    summary = json_of(invoke("export", "-o", target, "--json"))
    assert summary["tta"] == "crops" and summary["source_model"] == "default.safetensors"
    import onnx

    proto = onnx.load(str(target))
    onnx.checker.check_model(proto)
    properties = {p.key: p.value for p in proto.metadata_props}
    assert properties["input_format"].startswith("faces: uint8 N x 48 x 48")
    assert properties["label_order"].startswith("0 angry, 1 disgust")
    assert len(properties["source_sha256"]) == 64
    bundled, exported = load_face_model(None), load_face_model(target)
    difference = np.abs(bundled.probabilities(real_faces) - exported.probabilities(real_faces))
    assert difference.max() < TOLERANCE


def test_eval_scores_an_export_as_it_scores_the_torch_model(
    models: dict[str, Path], flip_export: Path, small_synthetic_data: Path, tmp_path: Path
) -> None:
    preds = tmp_path / "preds.npz"
    result = json_of(invoke("eval", small_synthetic_data, flip_export, "--json", "-o", preds))
    assert result["tta"] == "flip" and result["device"] == "cpu (ONNX Runtime)"
    torch_result = json_of(
        invoke("eval", small_synthetic_data, models["tiny"], "--json", "--tta", "flip")
    )
    assert result["accuracy"] == torch_result["accuracy"]
    assert result["macro_f1"] == pytest.approx(torch_result["macro_f1"], abs=1e-9)
    ok(invoke("confusion", preds, "-o", tmp_path / "confusion.png"))  # its predictions are usable


def test_predict_runs_an_onnx_model_like_the_torch_one(tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    branch = branch_file(tmp_path / "b.safetensors", "tiny", seed=2)
    invoke("export", branch, "-o", tmp_path / "b.onnx", "--tta", "flip", "--input", "float32")
    assert load_face_model(tmp_path / "b.onnx").input_dtype == np.float32  # type: ignore[attr-defined]
    from_onnx = json_of(invoke("predict", tmp_path / "b.onnx", photo, "--json"))
    from_torch = json_of(invoke("predict", branch, photo, "--json", "--tta", "flip"))
    (onnx_row,), (torch_row,) = from_onnx["results"], from_torch["results"]
    assert len(onnx_row["faces"]) == len(torch_row["faces"]) == 1
    onnx_face, torch_face = onnx_row["faces"][0], torch_row["faces"][0]
    assert onnx_face["box"] == torch_face["box"] and onnx_face["label"] == torch_face["label"]
    for name in CLASSES:
        assert abs(onnx_face["probabilities"][name] - torch_face["probabilities"][name]) < 1e-4


# ---------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def flip_export(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("flip") / "tiny.onnx"
    export_onnx(models["tiny"], target, tta="flip")
    return target


def face_png(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 120, np.uint8)).save(path)
    return path


def test_views_devices_and_precisions_an_export_cannot_honour_are_refused(
    flip_export: Path, small_synthetic_data: Path, tmp_path: Path
) -> None:
    face = face_png(tmp_path)
    one_line_error(invoke("predict", flip_export, face, "--tta", "crops"), "built into", "--tta")
    one_line_error(invoke("eval", small_synthetic_data, flip_export, "--tta", "none"), "(flip)")
    one_line_error(invoke("eval", small_synthetic_data, flip_export, "--device", "cuda"), "CPU")
    one_line_error(invoke("eval", small_synthetic_data, flip_export, "--precision", "bf16"), "fp32")
    ok(invoke("predict", flip_export, face, "--tta", "flip", "--device", "cpu"))


def foreign_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 7])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_broken_or_foreign_onnx_file_is_refused_in_one_line(
    tmp_path: Path, small_synthetic_data: Path
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    face = face_png(tmp_path)
    one_line_error(invoke("predict", broken, face), "broken.onnx", "not a readable ONNX model")
    one_line_error(invoke("eval", small_synthetic_data, broken), "fertool export")
    foreign = foreign_onnx(tmp_path / "foreign.onnx")
    one_line_error(invoke("predict", foreign, face), "not one fertool exported", code=4)
    with pytest.raises(WrongKindError):
        load_face_model(foreign)
    # Commands that need the torch model say so instead of failing to parse the file.
    one_line_error(invoke("saliency", foreign, face, "-o", tmp_path / "s.png"), ".safetensors")
    one_line_error(invoke("info", foreign), "not one fertool exported", code=4)
    one_line_error(invoke("info", tmp_path / "none.onnx"), "no such file")


def test_info_shows_what_an_export_takes_gives_and_came_from(flip_export: Path) -> None:
    summary = json_of(invoke("info", flip_export, "--json"))
    assert summary["kind"] == "onnx export" and summary["tta"] == "flip"
    assert summary["input"] == "faces: tensor(uint8) N x 48 x 48"
    assert summary["output"] == "probabilities: tensor(float) N x 7"  # the class axis named
    assert summary["classes"][3] == "happy" and len(summary["source_sha256"]) == 64
    assert "source_model" in ok(invoke("info", flip_export)).stdout


def test_a_missing_onnx_runtime_names_the_extra(
    flip_export: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    one_line_error(
        invoke("predict", flip_export, face_png(tmp_path)), "pip install 'fertool[onnx]'"
    )
    monkeypatch.setitem(sys.modules, "onnx", None)
    target = tmp_path / "t.onnx"
    one_line_error(invoke("export", models["tiny"], "-o", target), "pip install 'fertool[onnx]'")
    assert not target.exists()


def test_export_leaves_nothing_behind_when_it_cannot_write(
    models: dict[str, Path], tmp_path: Path
) -> None:
    one_line_error(invoke("export", models["tiny"], "-o", tmp_path / "no" / "t.onnx"), "mkdir")
    with pytest.raises(BadInputError, match="temperature"):
        export_onnx(
            branch_file(tmp_path / "cold.safetensors", "tiny", temperature=-1.0),
            tmp_path / "cold.onnx",
        )
    one_line_error(invoke("export", models["tiny"], "-o", tmp_path / "t.safetensors"), ".onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold.safetensors"]


def test_running_an_export_from_python_imports_no_torch(flip_export: Path) -> None:
    # A web service that runs an export starts in a fraction of the time `import torch` takes.
    code = (
        "import sys, numpy as np, fertool\n"
        f"model = fertool.load_model({str(flip_export)!r})\n"
        "faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)\n"
        "print(fertool.predict_proba(faces, model).shape, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "(3, 7) False"
