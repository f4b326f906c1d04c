"""What users get wrong, tried on every command: each ends in one line, a non-zero exit and no file.

The matrix: every place a command reads a file (a *slot*: `eval`'s DATA, `saliency`'s IMAGE, ...)
gets every bad file that makes sense there: missing, a directory, empty, truncated, random
bytes, a header that claims enormous shapes, a foreign safetensors, an npz with object arrays,
the wrong dtype, another kind of artifact, a model for other classes or another image size. Each
must end with exactly one line on stderr that names the file, exit code 3 (bad input) or 4
(wrong kind), no traceback, and nothing new in the output folder. docs/RELIABILITY.md lists the
cases; `test_the_matrix_is_as_documented` keeps its count honest.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from clitools import _debug_off, invoke, listing, one_line_error, runner  # noqa: F401
from PIL import Image
from safetensors.torch import save_file

from fertool.artifacts import load_artifact, save_npz, save_tensors
from fertool.cli import app
from fertool.models import build_classifier

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


# ---------------------------------------------------------------- good inputs to spoil


@pytest.fixture(scope="module")
def good(
    synthetic_data: Path, tiny_branch: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("good")
    preds = folder / "preds.npz"
    result = invoke("eval", synthetic_data, tiny_branch, "-o", preds)
    assert result.exit_code == 0, result.output
    face = folder / "face.png"
    images = load_artifact(synthetic_data).tensors["images"]
    Image.fromarray(images[0].numpy(), mode="L").save(face)
    return {"data": synthetic_data, "model": tiny_branch, "preds": preds, "image": face}


def tiny_model_file(path: Path, classes: list[str], size: int) -> Path:
    model = build_classifier("tiny", {"num_classes": len(classes)}, None)
    save_tensors(
        path,
        model.state_dict(),
        kind="branch",
        meta={
            "arch": "tiny",
            "arch_args": {"num_classes": len(classes)},
            "classes": classes,
            "input_size": [1, size, size],
            "normalization": None,
        },
    )
    return path


def enormous_header(path: Path) -> Path:
    """A safetensors header promising a 4 PiB tensor in a 16-byte file."""
    header = {
        "__metadata__": {"kind": '"dataset"', "schema": "1"},
        "images": {"dtype": "U8", "shape": [2**26, 2**26], "data_offsets": [0, 16]},
    }
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(16))
    return path


def object_npz(path: Path) -> Path:
    with open(
        path, "wb"
    ) as handle:  # numpy would pickle this on load if allowed: fertool never allows it
        np.savez(
            handle,
            __meta__=np.array('{"kind": "predictions", "schema": 1}'),
            logits=np.array([{"evil": 1}], dtype=object),
        )
    return path


def float_images_dataset(path: Path, good: dict[str, Path]) -> Path:
    data = load_artifact(good["data"])
    tensors = {**data.tensors, "images": data.tensors["images"].float()}
    save_tensors(path, tensors, kind="dataset", meta=data.meta)
    return path


def int_weights_model(path: Path, good: dict[str, Path]) -> Path:
    model = load_artifact(good["model"])
    save_tensors(
        path,
        {k: v.to(torch.int32) for k, v in model.tensors.items()},
        kind="branch",
        meta=model.meta,
    )
    return path


def nan_weights_model(path: Path, good: dict[str, Path]) -> Path:
    model = load_artifact(good["model"])
    tensors = {k: v.clone() for k, v in model.tensors.items()}
    next(t for t in tensors.values() if t.is_floating_point()).view(-1)[0] = float("nan")
    save_tensors(path, tensors, kind="branch", meta=model.meta)
    return path


def odd_meta_model(path: Path, good: dict[str, Path], **changes: object) -> Path:
    """The good model with hand-made metadata: fields only some commands read (tta, history)."""
    model = load_artifact(good["model"])
    save_tensors(path, model.tensors, kind="branch", meta={**model.meta, **changes})
    return path


def labels_out_of_range(path: Path, good: dict[str, Path]) -> Path:
    data = load_artifact(good["data"])
    labels = data.tensors["labels"].clone()
    labels[3] = 9
    save_tensors(path, {**data.tensors, "labels": labels}, kind="dataset", meta=data.meta)
    return path


def big_images_dataset(path: Path, good: dict[str, Path]) -> Path:
    data = load_artifact(good["data"])
    images = torch.nn.functional.interpolate(data.tensors["images"][:, None].float(), size=64)[
        :, 0
    ].to(torch.uint8)
    save_tensors(
        path,
        {**data.tensors, "images": images},
        kind="dataset",
        meta={**data.meta, "image_size": 64},
    )
    return path


def bad_preds(path: Path, good: dict[str, Path]) -> Path:
    preds = load_artifact(good["preds"])
    save_npz(
        path,
        {**preds.tensors, "logits": preds.tensors["logits"][:, :5]},
        kind="predictions",
        meta=preds.meta,
    )
    return path


# Each maker: (tmp folder, good inputs) -> the bad file; the file name is what the error must name.
Maker = Callable[[Path, dict[str, Path]], Path]

FILE_CASES: dict[str, Maker] = {
    "missing": lambda d, g: d / "missing.safetensors",
    "directory": lambda d, g: _mkdir(d / "folder.safetensors"),
    "empty": lambda d, g: _write(d / "empty.safetensors", b""),
    "truncated": lambda d, g: _write(d / "truncated.safetensors", g["data"].read_bytes()[:5000]),
    "random-bytes": lambda d, g: _write(d / "random.safetensors", random.Random(0).randbytes(4096)),
    "enormous-shape": lambda d, g: enormous_header(d / "enormous.safetensors"),
    "foreign-safetensors": lambda d, g: _foreign(d / "foreign.safetensors"),
    "object-npz": lambda d, g: object_npz(d / "object.npz"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _foreign(path: Path) -> Path:
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    return path


# Cases that only make sense in some slots, by slot kind.
KIND_CASES: dict[str, dict[str, Maker]] = {
    "data": {
        "model-instead": lambda d, g: g["model"],
        "predictions-instead": lambda d, g: g["preds"],
        "float-images": lambda d, g: float_images_dataset(d / "float.safetensors", g),
        "labels-out-of-range": lambda d, g: labels_out_of_range(d / "labels.safetensors", g),
    },
    "model": {
        "dataset-instead": lambda d, g: g["data"],
        "predictions-instead": lambda d, g: g["preds"],
        "int-weights": lambda d, g: int_weights_model(d / "int.safetensors", g),
        "nan-weights": lambda d, g: nan_weights_model(d / "nan.safetensors", g),
        "unknown-tta": lambda d, g: odd_meta_model(d / "tta.safetensors", g, tta="tencrop"),
        "history-without-loss": lambda d, g: odd_meta_model(
            d / "history.safetensors", g, history=[{"epoch": 1}]
        ),
    },
    # a model slot of a command that builds the network (curves only reads histories)
    "model-built": {
        "unknown-arch": lambda d, g: odd_meta_model(
            d / "arch.safetensors", g, arch="dexpression_v9"
        ),
    },
    "model-on-data": {  # a model slot in a command that also reads a data set
        "other-classes": lambda d, g: tiny_model_file(d / "five.safetensors", CLASSES[:5], 48),
        "other-size": lambda d, g: tiny_model_file(d / "big.safetensors", CLASSES, 64),
    },
    "data-for-model": {
        "other-size-data": lambda d, g: big_images_dataset(d / "big64.safetensors", g),
    },
    "preds": {
        "dataset-instead": lambda d, g: g["data"],
        "model-instead": lambda d, g: g["model"],
        "logits-for-other-classes": lambda d, g: bad_preds(d / "cut.npz", g),
    },
    # --teacher takes a model too: of predictions, only the damaged ones are wrong
    "teacher-preds": {
        "logits-for-other-classes": lambda d, g: bad_preds(d / "cut.npz", g),
    },
}

# Every slot of every command: (command line with BAD where the bad file goes, slot kinds).
SLOTS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "train-branch DATA": (
        ["train-branch", "BAD", "-o", "OUT/b.safetensors", "--arch", "tiny", "--epochs", "1"],
        ("data",),
    ),
    "train-branch --init": (
        ["train-branch", "{data}", "-o", "OUT/b.safetensors", "--init", "BAD", "--epochs", "1"],
        ("model", "model-built", "model-on-data"),
    ),
    "train-branch --teacher": (
        [
            "train-branch",
            "{data}",
            "-o",
            "OUT/b.safetensors",
            "--arch",
            "tiny",
            "--teacher",
            "BAD",
            "--epochs",
            "1",
        ],
        ("model", "model-built", "model-on-data", "teacher-preds"),
    ),
    "eval DATA": (["eval", "BAD", "{model}", "-o", "OUT/p.npz"], ("data", "data-for-model")),
    "eval MODEL": (
        ["eval", "{data}", "BAD", "-o", "OUT/p.npz"],
        ("model", "model-built", "model-on-data"),
    ),
    "ensemble DATA": (
        ["ensemble", "BAD", "{model}", "{model}", "-o", "OUT/e.safetensors"],
        ("data",),
    ),
    "ensemble BRANCH": (
        ["ensemble", "{data}", "{model}", "BAD", "-o", "OUT/e.safetensors"],
        ("model", "model-built", "model-on-data"),
    ),
    "confusion PREDS": (["confusion", "BAD", "-o", "OUT/c.png"], ("preds",)),
    "saliency MODEL": (["saliency", "BAD", "{image}", "-o", "OUT/s.png"], ("model", "model-built")),
    "saliency --data": (
        ["saliency", "{model}", "--data", "BAD", "--index", "0", "-o", "OUT/s.png"],
        ("data",),
    ),
    "filters MODEL": (
        ["filters", "BAD", "--layer", "body.2", "--steps", "2", "-o", "OUT/f.png"],
        ("model", "model-built"),
    ),
    "curves MODEL": (["curves", "BAD", "-o", "OUT/c.png"], ("model",)),
    "predict MODEL": (["predict", "BAD", "{image}"], ("model", "model-built")),
}


def matrix() -> list[tuple[str, str]]:
    cases = []
    for slot, (_, kinds) in SLOTS.items():
        cases += [(slot, case) for case in FILE_CASES]
        for kind in kinds:
            cases += [(slot, case) for case in KIND_CASES[kind]]
    return cases


MATRIX = matrix()


def command_line(slot: str, bad: Path, good: dict[str, Path], out: Path) -> list[str]:
    args = []
    for part in SLOTS[slot][0]:
        part = part.replace("BAD", str(bad)).replace("OUT", str(out))
        args.append(part.format(**{k: str(v) for k, v in good.items()}))
    return args


@pytest.mark.parametrize("slot, case", MATRIX, ids=[f"{s}:{c}" for s, c in MATRIX])
def test_bad_file_in_every_slot(
    slot: str, case: str, good: dict[str, Path], tmp_path: Path
) -> None:
    makers = {**FILE_CASES, **{k: v for kind in KIND_CASES.values() for k, v in kind.items()}}
    bad_dir, out = tmp_path / "in", tmp_path / "out"
    bad_dir.mkdir()
    out.mkdir()
    bad = makers[case](bad_dir, good)
    result = invoke(*command_line(slot, bad, good, out))
    line = one_line_error(result, bad.name)
    assert result.exit_code in (3, 4), (result.exit_code, line)
    assert listing(out) == [], "a failed command left a file behind"
    assert len(line) < 400


# ---------------------------------------------------------------- images


def write_image(path: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (60, 50), dtype=np.uint8)
    if kind == "cmyk.jpg":
        Image.fromarray(np.stack([gray] * 3, -1), "RGB").convert("CMYK").save(path)
    elif kind == "16bit.png":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    elif kind == "animated.gif":
        frames = [Image.fromarray(np.roll(gray, i, 0)) for i in range(3)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    elif kind == "rgba.png":
        Image.fromarray(np.stack([gray] * 4, -1), "RGBA").save(path)
    return path


@pytest.mark.parametrize("kind", ["cmyk.jpg", "16bit.png", "animated.gif", "rgba.png"])
@pytest.mark.parametrize("command", ["saliency", "filters", "predict"])
def test_unusual_but_valid_images_are_read(
    kind: str, command: str, good: dict[str, Path], tmp_path: Path
) -> None:
    image = write_image(tmp_path / kind, kind)
    out = tmp_path / "out.png"
    args = {
        "saliency": ["saliency", good["model"], image, "-o", out],
        "filters": ["filters", good["model"], "--image", image, "--layer", "body.2", "-o", out],
        "predict": ["predict", good["model"], image, "--no-detect", "--json"],
    }[command]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    if command != "predict":
        with Image.open(out) as figure:
            assert figure.size[0] > 100
    else:
        assert len(json.loads(result.stdout)["results"][0]["faces"]) == 1


BAD_IMAGES: dict[str, bytes] = {
    "zero.png": b"",
    "corrupt.png": b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(300),
    "truncated.jpg": b"\xff\xd8\xff\xe0" + random.Random(2).randbytes(40),
    "notes.png": b"these are my notes, not a picture\n",
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
@pytest.mark.parametrize("command", ["saliency", "filters"])
def test_bad_images_end_in_one_line(
    name: str, command: str, good: dict[str, Path], tmp_path: Path
) -> None:
    image = tmp_path / name
    image.write_bytes(BAD_IMAGES[name])
    out = tmp_path / "out"
    out.mkdir()
    args = {
        "saliency": ["saliency", good["model"], image, "-o", out / "s.png"],
        "filters": [
            "filters",
            good["model"],
            "--image",
            image,
            "--layer",
            "body.2",
            "-o",
            out / "f.png",
        ],
    }[command]
    one_line_error(invoke(*args), name, code=3)
    assert listing(out) == []


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_predict_reports_a_bad_photo_and_goes_on(
    name: str, good: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / name
    bad.write_bytes(BAD_IMAGES[name])
    result = invoke("predict", good["model"], bad, good["image"], "--json")
    assert result.exit_code == 3
    assert name in result.stderr and "Traceback" not in result.output
    paths = [r["path"] for r in json.loads(result.stdout)["results"]]
    assert paths == [str(good["image"])]


# ---------------------------------------------------------------- CSV rows, wrong in every way

HEADER = "emotion,pixels,Usage"
PIXELS = " ".join(["128"] * 2304)
BAD_ROWS = {
    "label-not-a-number": f"happy,{PIXELS},Training",
    "label-out-of-range": f"7,{PIXELS},Training",
    "negative-label": f"-1,{PIXELS},Training",
    "too-few-pixels": f"3,{' '.join(['1'] * 2303)},Training",
    "too-many-pixels": f"3,{PIXELS} 5,Training",
    "pixel-over-255": f"3,{PIXELS[:-3]}256,Training",
    "pixel-not-a-number": f"3,{PIXELS[:-3]}abc,Training",
    "float-pixel": f"3,{PIXELS[:-3]}1.5,Training",
    "unknown-usage": f"3,{PIXELS},Holdout",
    "missing-field": f"3,{PIXELS}",
    "extra-field": f"3,{PIXELS},Training,extra",
    "empty-row-fields": ",,",
}
BAD_CSV_FILES = {
    "empty-file": b"",
    "header-only": (HEADER + "\n").encode(),
    "wrong-header": ("label,image,split\n" + f"3,{PIXELS},Training\n").encode(),
    "binary": random.Random(3).randbytes(3000),
    "utf16": (HEADER + "\n" + f"3,{PIXELS},Training\n").encode("utf-16"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_csv_rows_name_the_line(case: str, tmp_path: Path) -> None:
    csv = tmp_path / "fer.csv"
    csv.write_text(f"{HEADER}\n0,{PIXELS},Training\n{BAD_ROWS[case]}\n")
    out = tmp_path / "out"
    out.mkdir()
    line = one_line_error(invoke("prepare", csv, "-o", out / "d.safetensors"), "fer.csv", code=3)
    assert "line 3" in line
    assert listing(out) == []


@pytest.mark.parametrize("case", list(BAD_CSV_FILES))
def test_bad_csv_files(case: str, tmp_path: Path) -> None:
    csv = tmp_path / "fer.csv"
    csv.write_bytes(BAD_CSV_FILES[case])
    out = tmp_path / "out"
    out.mkdir()
    one_line_error(invoke("prepare", csv, "-o", out / "d.safetensors"), "fer.csv", code=3)
    assert listing(out) == []


# ---------------------------------------------------------------- output paths

OUTPUT_COMMANDS = {
    "prepare": ["prepare", "--synthetic", "20", "-o", "OUTPUT"],
    "train-branch": ["train-branch", "{data}", "-o", "OUTPUT", "--arch", "tiny", "--epochs", "1"],
    "eval": ["eval", "{data}", "{model}", "-o", "OUTPUT"],
    "ensemble": ["ensemble", "{data}", "{model}", "{model}", "-o", "OUTPUT"],
    "confusion": ["confusion", "{preds}", "-o", "OUTPUT"],
    "saliency": ["saliency", "{model}", "{image}", "-o", "OUTPUT"],
    "filters": ["filters", "{model}", "--layer", "body.2", "--steps", "2", "-o", "OUTPUT"],
    "curves": ["curves", "{model}", "-o", "OUTPUT"],
    "predict": ["predict", "{model}", "{image}", "--annotate", "OUTPUT"],
}


def output_case(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if case == "missing-directory":
        return tmp_path / "no" / "such" / "dir" / "out.file"
    if case == "read-only-directory":
        locked = tmp_path / "locked"
        locked.mkdir()
        # Root ignores mode bits, so the refusal os.access would report is simulated for this
        # folder.
        import os

        real_access = os.access
        monkeypatch.setattr(
            os,
            "access",
            lambda p, mode, *a, **k: False if Path(p) == locked else real_access(p, mode, *a, **k),
        )
        return locked / "out.file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing-directory", "read-only-directory"])
@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_unwritable_outputs_fail_before_any_work(
    command: str, case: str, good: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = output_case(case, tmp_path, monkeypatch)
    if command == "predict":
        target = target.parent / "annotated"  # --annotate takes a folder
    args = [
        a.replace("OUTPUT", str(target)).format(**{k: str(v) for k, v in good.items()})
        for a in OUTPUT_COMMANDS[command]
    ]
    one_line_error(
        invoke(*args), target.parent.name if case == "read-only-directory" else "no", code=3
    )
    assert not target.exists()


# An output named like one of the command's inputs would replace it (a model overwritten by its
# own predictions, a data set by a branch): refused before any work, the input left as it was.
OUTPUT_OVER_INPUT = {
    "prepare": (["prepare", "{csv}", "-o", "{csv}"], "csv"),
    "train-branch": (
        ["train-branch", "{data}", "-o", "{data}", "--arch", "tiny", "--epochs", "1"],
        "data",
    ),
    "eval": (["eval", "{data}", "{model}", "-o", "{model}"], "model"),
    "ensemble": (["ensemble", "{data}", "{model}", "{model}", "-o", "{model}"], "model"),
    "confusion": (["confusion", "{preds}", "-o", "{preds}"], "preds"),
    "saliency": (["saliency", "{model}", "{image}", "-o", "{image}"], "image"),
    "filters": (
        ["filters", "{model}", "--layer", "body.2", "--steps", "2", "-o", "{model}"],
        "model",
    ),
    "curves": (["curves", "{model}", "-o", "{model}"], "model"),
}


@pytest.mark.parametrize("command", list(OUTPUT_OVER_INPUT))
def test_an_output_that_is_an_input_is_refused(
    command: str, good: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    csv = tmp_path / "faces.csv"
    csv.write_text("emotion,pixels,Usage\n3," + " ".join(["128"] * 48 * 48) + ",Training\n")
    files = {"csv": csv, **{k: shutil.copy(v, tmp_path / v.name) for k, v in good.items()}}
    args, victim = OUTPUT_OVER_INPUT[command]
    before = Path(files[victim]).read_bytes()
    result = invoke(*[a.format(**{k: str(v) for k, v in files.items()}) for a in args])
    one_line_error(result, str(files[victim]), code=3)
    assert "is also an input" in result.stderr
    assert Path(files[victim]).read_bytes() == before
    assert not list(tmp_path.glob(".*.part"))


# ---------------------------------------------------------------- --debug, and the count


def test_debug_shows_the_traceback_instead(good: dict[str, Path], tmp_path: Path) -> None:
    from fertool.errors import FertoolError

    bad = FILE_CASES["random-bytes"](tmp_path, good)
    result = runner.invoke(app, ["--debug", "eval", str(good["data"]), str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, FertoolError) and result.exc_info[2] is not None


def test_the_matrix_is_as_documented() -> None:
    """docs/RELIABILITY.md states how many cases this file tries; keep the two in step."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md").read_text()
    total = (
        len(MATRIX)
        + 4 * 3
        + len(BAD_IMAGES) * 2
        + len(BAD_IMAGES)
        + len(BAD_ROWS)
        + len(BAD_CSV_FILES)
        + 2 * len(OUTPUT_COMMANDS)
        + len(OUTPUT_OVER_INPUT)
        + 1
    )
    assert f"{total} cases" in doc, f"docs/RELIABILITY.md should say '{total} cases'"
    assert f"{len(MATRIX)} slot cases" in doc
