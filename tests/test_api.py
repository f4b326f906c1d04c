"""The Python API (`fertool.load_model`, `predict`, `predict_proba`): the numbers of the command
line, on real photos, and the examples of docs/API.md as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import invoke, json_of, load_script
from PIL import Image

import fertool
from fertool.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_import_fertool_loads_no_torch_no_onnxruntime_no_command_line() -> None:
    code = (
        "import sys, fertool; print(fertool.__all__); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnxruntime', 'typer', 'numpy') or m == 'fertool.cli'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, loaded = done.stdout.strip().splitlines()
    assert "predict" in names and "load_model" in names and "FacePrediction" in names
    assert loaded == "[]"


def test_the_bundled_model_is_loaded_once() -> None:
    model = fertool.load_model()
    assert fertool.load_model() is model and fertool.load_model(None) is model
    assert model.runtime == "torch" and model.tta == "crops" and len(model.classes) == 7


def test_predict_gives_the_command_lines_faces_for_a_path_an_image_and_pixels(
    astronaut: Path,
) -> None:
    faces = fertool.predict(astronaut)
    cli = json_of(invoke("predict", astronaut, "--json"))["results"][0]["faces"]
    assert [f.to_dict() for f in faces] == cli  # the same numbers, to the last digit
    (face,) = faces
    assert face.label == "happy" and face.probabilities["happy"] > 0.5
    assert abs(sum(face.probabilities.values()) - 1) < 1e-9
    json.dumps(face.to_dict())  # JSON-ready
    image = Image.open(astronaut)
    for other in (fertool.predict(image), fertool.predict(np.asarray(image))):
        assert [f.to_dict() for f in other] == cli
    # Gray pixels: YuNet reads them as three equal channels, so the box moves by a pixel or two.
    (from_gray,) = fertool.predict(np.asarray(image.convert("L")))
    assert all(abs(a - b) <= 3 for a, b in zip(from_gray.box, face.box)), from_gray.box
    assert from_gray.label == "happy"


def test_a_pil_image_is_read_as_its_file_is(astronaut: Path, tmp_path: Path) -> None:
    """Transparency on white and 16-bit scaled, as `fertool predict` reads the file."""
    photo = np.asarray(Image.open(astronaut).convert("RGB"))
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0  # a transparent strip: white when read
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([photo, alpha])).save(rgba)
    deep = tmp_path / "gray16.png"
    gray = np.asarray(Image.open(astronaut).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(deep)
    for path in (rgba, deep):
        by_path = [f.to_dict() for f in fertool.predict(path)]
        assert by_path and by_path[0]["label"] == "happy"
        assert [f.to_dict() for f in fertool.predict(Image.open(path))] == by_path


def test_detection_options_reach_the_finder_as_on_the_command_line(astronaut: Path) -> None:
    from fertool.detect import DetectConfig

    cli = json_of(invoke("predict", astronaut, "--detector", "haar", "--margin", "0.4", "--json"))
    config = DetectConfig(detector="haar", margin=0.4)
    faces = [f.to_dict() for f in fertool.predict(astronaut, config=config)]
    assert faces == cli["results"][0]["faces"] and faces[0]["landmarks"] is None
    assert fertool.predict(astronaut, config=config, margin=0.2)[0].to_dict() != faces[0]


def test_predict_without_detection_and_without_a_face() -> None:
    blank = np.full((120, 160), 90, np.uint8)
    assert fertool.predict(blank) == []
    (whole,) = fertool.predict(blank, detect=False)
    assert whole.box == (20, 0, 120, 120)  # the centred square, in the image's pixels


def test_predict_proba_equals_predict_on_the_same_crop(astronaut: Path) -> None:
    from fertool.detect import photo_faces, read_photo

    _, crops = photo_faces(read_photo(astronaut))
    probabilities = fertool.predict_proba(crops)
    face = fertool.predict(astronaut)[0]
    model = fertool.load_model()
    assert probabilities.shape == (1, 7)
    assert np.allclose(probabilities[0], [face.probabilities[c] for c in model.classes])
    flip = fertool.predict_proba(crops, model, tta="flip")
    assert not np.allclose(flip, probabilities)  # the views asked for are used


def test_bad_input_raises_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="expected uint8 N x 48 x 48"):
        fertool.predict_proba(np.zeros((3, 48, 48), np.float32))
    with pytest.raises(BadInputError, match="a path, a PIL image or a numpy uint8 array"):
        fertool.predict(42)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="cannot read image"):
        (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
        fertool.predict(tmp_path / "bad.jpg")
    with pytest.raises(BadInputError, match="expected uint8 pixels"):
        fertool.predict(np.zeros((10, 10, 4), np.uint8))


def api_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), flags=re.S)


def test_the_api_guide_examples_run(
    astronaut: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX example needs the onnx extra")
    blocks = api_blocks()
    assert len(blocks) == 6
    (tmp_path / "astronaut.png").write_bytes(astronaut.read_bytes())
    load_script("demo_video").main(tmp_path / "clip.mp4")  # the video example's clip
    capsys.readouterr()  # what the script printed
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/API.md", "exec"), {"__name__": "api_md"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("True torch crops ['angry'")
    assert printed[1].startswith("happy (")
    video = printed[printed.index("0 0.0 1 happy") :]  # the astronaut's track, from frame 0
    # two faces from the first frame, each keeping its track; a sample every 0.5 s by timestamp
    assert [line.split()[:3] for line in video[:4]] == [
        ["0", "0.0", "1"],
        ["0", "0.0", "2"],
        ["13", "0.5", "1"],
        ["13", "0.5", "2"],
    ], video
    record = next(line for line in video if line.startswith("['box'"))
    assert "'landmarks'" in record and "'smoothed'" in record and "'track'" in record
    assert printed[-2] == "onnxruntime True"
    assert printed[-1].startswith("faces: expected uint8 N x 48 x 48")
