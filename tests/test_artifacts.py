"""Artifacts: save/load round trips, kinds, atomic writes, and every way a file can be bad.

Every bad file must end in `BadInputError` (or `WrongKindError`) whose one-line message names
the file: never a traceback from safetensors/numpy, never a pickle load, never a huge allocation.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

import fertool
from fertool import artifacts
from fertool.artifacts import (
    MODEL_KINDS,
    SCHEMA_VERSION,
    load_artifact,
    save_npz,
    save_tensors,
)
from fertool.errors import BadInputError, ExitCode, FertoolError, WrongKindError

META = {
    "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "counts": {"train": {"total": 3, "angry": 1}, "val": {"total": 0}},
    "train_mean": 0.123456789012345678,
    "normalization": None,
    "history": [{"epoch": 1, "loss": 1.5e-7}, {"epoch": 2, "loss": float(2.0 / 3.0)}],
    "note": 'unicode: é ✓ 😀, quotes " and \\ backslash',
    "flag": True,
}


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    floats = torch.randn(4, 5, generator=generator)
    floats[0, 0], floats[0, 1], floats[0, 2] = float("nan"), -0.0, float("inf")
    return {
        "images": torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8, generator=generator),
        "labels": torch.tensor([0, 6, 3], dtype=torch.int64),
        "weights": floats,
        "half": floats.half(),
        "bf16": floats.bfloat16(),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
    }


def load_file_layer(*args: object, **kwargs: object):
    """load_artifact without the per-kind content checks: these tests are about the file layer."""
    return load_artifact(*args, contents=False, **kwargs)  # type: ignore[arg-type]


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 7)).astype(np.float32)
    logits[0, 0], logits[0, 1] = np.nan, -0.0
    return {
        "logits": logits,
        "labels": np.array([0, 1, 2, 3, 6], dtype=np.int64),
        "indices": np.arange(5, dtype=np.int64),
        "f64": rng.standard_normal(3),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    }


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes: NaN == NaN and -0.0 != 0.0, unlike torch.equal."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def dir_listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ---------------------------------------------------------------- round trips


def test_safetensors_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    tensors = sample_tensors()
    save_tensors(path, tensors, kind="branch", meta=META)
    art = load_file_layer(path)
    assert art.path == path
    assert art.kind == "branch"
    assert art.meta["kind"] == "branch"
    assert art.meta["schema"] == SCHEMA_VERSION
    assert art.meta["fertool_version"] == fertool.__version__
    assert {
        k: v for k, v in art.meta.items() if k not in ("kind", "schema", "fertool_version")
    } == META
    assert art.meta["train_mean"] == META["train_mean"]  # float survives JSON exactly
    assert set(art.tensors) == set(tensors)
    for name, tensor in tensors.items():
        assert isinstance(art.tensors[name], torch.Tensor)
        assert same_bits(art.tensors[name], tensor), name
    assert dir_listing(tmp_path) == ["a.safetensors"]  # no temp file left beside it


def test_as_numpy_reads_the_same_values_and_keeps_bfloat16_files_in_torch(tmp_path: Path) -> None:
    """info, confusion and curves read files as numpy arrays, so they never import torch; numpy
    has no bfloat16, so a file holding one is read as torch tensors all the same."""
    path, with_bf16 = tmp_path / "plain.safetensors", tmp_path / "bf16.safetensors"
    tensors = {name: t for name, t in sample_tensors().items() if name != "bf16"}
    save_tensors(path, tensors, kind="branch", meta=META)
    save_tensors(with_bf16, sample_tensors(), kind="branch", meta=META)
    as_torch, as_numpy = load_file_layer(path), load_file_layer(path, as_numpy=True)
    assert as_numpy.meta == as_torch.meta and as_numpy.tensors.keys() == as_torch.tensors.keys()
    for name, array in as_numpy.tensors.items():
        assert isinstance(array, np.ndarray) and str(array.dtype) == str(
            tensors[name].dtype
        ).removeprefix("torch.")
        assert same_bits(torch.from_numpy(array), tensors[name])
    kept = load_file_layer(with_bf16, as_numpy=True)
    assert all(isinstance(t, torch.Tensor) for t in kept.tensors.values())
    assert same_bits(kept.tensors["bf16"], sample_tensors()["bf16"])


def test_npz_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "preds.npz"
    arrays = sample_arrays()
    save_npz(path, arrays, kind="predictions", meta=META)
    art = load_file_layer(path, expect="predictions")
    assert art.kind == "predictions"
    assert art.meta["schema"] == SCHEMA_VERSION
    assert art.meta["fertool_version"] == fertool.__version__
    assert {
        k: v for k, v in art.meta.items() if k not in ("kind", "schema", "fertool_version")
    } == META
    assert set(art.tensors) == set(arrays)  # __meta__ is not one of the arrays
    for name, array in arrays.items():
        loaded = art.tensors[name]
        assert isinstance(loaded, np.ndarray)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape, name
        assert loaded.tobytes() == array.tobytes(), name
    assert dir_listing(tmp_path) == ["preds.npz"]  # and no "preds.npz.npz"


def test_npz_written_under_a_name_without_npz_suffix(tmp_path: Path) -> None:
    path = tmp_path / "predictions.out"
    save_npz(path, {"x": np.arange(3)}, kind="predictions", meta={})
    assert dir_listing(tmp_path) == ["predictions.out"]
    assert load_file_layer(path).tensors["x"].tolist() == [0, 1, 2]


def test_save_overwrites_an_existing_artifact(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    save_tensors(path, {"x": torch.zeros(3)}, kind="dataset", meta={"n": 1})
    save_tensors(path, {"y": torch.ones(2)}, kind="branch", meta={"n": 2})
    art = load_file_layer(path)
    assert art.kind == "branch" and art.meta["n"] == 2 and list(art.tensors) == ["y"]


def test_save_npz_refuses_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pickle"):
        save_npz(
            tmp_path / "x.npz",
            {"bad": np.array([{"a": 1}], dtype=object)},
            kind="predictions",
            meta={},
        )
    assert dir_listing(tmp_path) == []


def test_artifact_file_mode_follows_umask(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    save_tensors(tmp_path / "a.safetensors", {"x": torch.zeros(1)}, kind="dataset", meta={})
    save_npz(tmp_path / "p.npz", {"x": np.zeros(1)}, kind="predictions", meta={})
    expected = 0o666 & ~umask  # what open(path, "w") would create
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == expected


def test_kind_argument_wins_over_meta(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    copied = {"kind": "dataset", "schema": 1, "fertool_version": "0.0.1", "classes": ["a"]}
    save_tensors(path, {"x": torch.zeros(1)}, kind="branch", meta=copied)
    art = load_file_layer(path)
    assert art.kind == "branch"
    assert art.meta["fertool_version"] == fertool.__version__


# ---------------------------------------------------------------- kinds


def test_expect_accepts_the_right_kind(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_tensors(path, {"x": torch.zeros(1)}, kind="ensemble", meta={})
    assert load_file_layer(path, expect=MODEL_KINDS).kind == "ensemble"
    assert load_file_layer(path, expect="ensemble").kind == "ensemble"


def test_expect_refuses_another_kind_naming_file_and_what_to_pass(tmp_path: Path) -> None:
    path = tmp_path / "data.safetensors"
    save_tensors(path, {"x": torch.zeros(1)}, kind="dataset", meta={})
    with pytest.raises(WrongKindError) as info:
        load_file_layer(path, expect=MODEL_KINDS)
    message = str(info.value)
    assert str(path) in message
    assert "dataset" in message  # what it is
    assert "fertool train-branch" in message and "fertool ensemble" in message  # what to pass
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.WRONG_KIND


def test_expect_refuses_predictions_where_a_dataset_goes(tmp_path: Path) -> None:
    path = tmp_path / "preds.npz"
    save_npz(path, {"logits": np.zeros((1, 7), np.float32)}, kind="predictions", meta={})
    with pytest.raises(WrongKindError, match="fertool prepare") as info:
        load_file_layer(path, expect="dataset")
    assert str(path) in str(info.value) and "predictions" in str(info.value)


# ---------------------------------------------------------------- atomic writes


class Boom(Exception):
    pass


@pytest.mark.parametrize("failure", [Boom, KeyboardInterrupt])
def test_failed_safetensors_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"x": torch.arange(4)}, kind="branch", meta={"version": "old"})
    before = path.read_bytes()
    written_to: list[str] = []

    def half_write(tensors, filename, metadata=None):  # write some bytes, then die midway
        written_to.append(filename)
        with open(filename, "wb") as handle:
            handle.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{half a header")
        raise failure()

    monkeypatch.setattr(
        safetensors.torch, "save_file", half_write
    )  # what save_tensors imports to write
    with pytest.raises(failure):
        save_tensors(path, {"x": torch.arange(100)}, kind="branch", meta={"version": "new"})
    assert Path(written_to[0]).parent == tmp_path  # written beside the target: rename is atomic
    assert Path(written_to[0]) != path
    assert path.read_bytes() == before
    assert dir_listing(tmp_path) == ["model.safetensors"]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))
    monkeypatch.undo()
    assert load_file_layer(path).meta["version"] == "old"


@pytest.mark.parametrize("failure", [Boom, KeyboardInterrupt])
def test_failed_npz_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    path = tmp_path / "preds.npz"
    save_npz(path, {"x": np.arange(4)}, kind="predictions", meta={"version": "old"})
    before = path.read_bytes()

    def half_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise failure()

    monkeypatch.setattr(np, "savez", half_savez)
    with pytest.raises(failure):
        save_npz(path, {"x": np.arange(100)}, kind="predictions", meta={"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert dir_listing(tmp_path) == ["preds.npz"]
    assert load_file_layer(path).meta["version"] == "old"


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(OSError):
        save_tensors(tmp_path / "new.safetensors", {"x": torch.zeros(1)}, kind="dataset", meta={})
    assert dir_listing(tmp_path) == []


# ---------------------------------------------------------------- output paths


def assert_names(error: BaseException, path: Path) -> None:
    message = str(error)
    assert str(path) in message, message
    assert "\n" not in message


def test_output_in_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "out.safetensors"
    with pytest.raises(BadInputError) as info:
        save_tensors(target, {"x": torch.zeros(1)}, kind="dataset", meta={})
    assert_names(info.value, target)
    assert "mkdir" in str(info.value)
    with pytest.raises(BadInputError):
        save_npz(tmp_path / "missing" / "p.npz", {"x": np.zeros(1)}, kind="predictions", meta={})
    assert dir_listing(tmp_path) == []


def test_output_is_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(BadInputError, match="is a directory") as info:
        save_tensors(target, {"x": torch.zeros(1)}, kind="dataset", meta={})
    assert_names(info.value, target)
    assert dir_listing(target) == []


def test_output_in_read_only_directory(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip(
                "running as root (or with CAP_DAC_OVERRIDE): a mode-555 directory is still "
                "writable; test_output_in_unwritable_directory_simulated covers the check"
            )
        target = read_only / "out.safetensors"
        with pytest.raises(BadInputError, match="not writable") as info:
            save_tensors(target, {"x": torch.zeros(1)}, kind="dataset", meta={})
        assert_names(info.value, target)
        assert dir_listing(read_only) == []
    finally:
        read_only.chmod(0o755)


def test_output_in_unwritable_directory_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Works as root too: the check asks os.access, so make os.access say what it says for a normal
    user."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == read_only and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(artifacts.os, "access", access)
    target = read_only / "out.npz"
    with pytest.raises(BadInputError, match="not writable") as info:
        save_npz(target, {"x": np.zeros(1)}, kind="predictions", meta={})
    assert_names(info.value, target)
    assert dir_listing(read_only) == []


# ---------------------------------------------------------------- bad input files


def expect_bad(path: Path, match: str | None = None) -> BadInputError:
    with pytest.raises(BadInputError) as info:
        load_file_layer(path)
    assert_names(info.value, path)
    if match is not None:
        assert match in str(info.value), str(info.value)
    assert isinstance(info.value, FertoolError) and info.value.exit_code == ExitCode.BAD_INPUT
    return info.value


class Payload:
    """Unpickling this object runs exec(code): it creates the marker file."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return (exec, (self.code,))


def test_npz_with_object_array_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    meta = json.dumps({"kind": "predictions", "schema": 1, "fertool_version": "0.1.0"})
    with open(path, "wb") as handle:
        np.savez(handle, __meta__=np.array(meta), logits=np.array([Payload(marker)], dtype=object))

    # Control: the payload is live, so the assertion below proves something.
    control_marker = tmp_path / "control"
    control = tmp_path / "control.npz"
    with open(control, "wb") as handle:
        np.savez(handle, x=np.array([Payload(control_marker)], dtype=object))
    with np.load(control, allow_pickle=True) as archive:
        archive["x"]
    assert control_marker.exists()

    error = expect_bad(path)
    assert not marker.exists()
    assert "pickle" in str(error).lower() or "object" in str(error).lower()
    assert not marker.exists()


def test_npz_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, logits=np.zeros((2, 7)))
    expect_bad(path, "without fertool metadata")


def test_npz_with_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    np.savez(
        path, __meta__=np.array(json.dumps({"kind": "spreadsheet", "schema": 1})), x=np.zeros(1)
    )
    expect_bad(path, "not a fertool artifact")


def test_npz_with_damaged_meta(tmp_path: Path) -> None:
    path = tmp_path / "damaged.npz"
    np.savez(path, __meta__=np.array("{not json"), x=np.zeros(1))
    expect_bad(path)


def test_zip_that_is_not_an_npz(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fer2013.csv", "emotion,pixels,Usage\n")
    expect_bad(path)


def test_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    save_npz(path, {"logits": np.zeros((100, 7), np.float32)}, kind="predictions", meta={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_bad(path)


def test_safetensors_with_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    meta = {
        "kind": json.dumps("branch"),
        "schema": json.dumps(SCHEMA_VERSION + 1),
        "fertool_version": json.dumps("9.0"),
    }
    save_file({"x": torch.zeros(2)}, str(path), metadata=meta)
    error = expect_bad(path, "upgrade fertool")
    assert str(SCHEMA_VERSION + 1) in str(error)


def test_safetensors_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    expect_bad(path, "not a fertool artifact")


def test_foreign_safetensors_with_non_json_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hf_model.safetensors"
    save_file(
        {"x": torch.zeros(2)}, str(path), metadata={"format": "pt"}
    )  # what Hugging Face writes
    expect_bad(path)


def test_foreign_safetensors_is_called_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "hf_model.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    expect_bad(path, "not a fertool artifact")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_bad(path, "not a fertool artifact")


@pytest.mark.parametrize("size", [1, 3, 8, 9])
def test_tiny_files(tmp_path: Path, size: int) -> None:
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"\x05" * size)
    expect_bad(path)


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_tensors(path, {"weights": torch.randn(64, 64)}, kind="branch", meta={"arch": "tiny"})
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    cut = len(data) // 2
    assert (
        cut > 8 + header_len
    )  # the header survives: safetensors itself must notice the missing data
    path.write_bytes(data[:cut])
    expect_bad(path)


def test_safetensors_cut_inside_its_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_tensors(path, {"weights": torch.randn(4)}, kind="branch", meta={"arch": "tiny"})
    path.write_bytes(path.read_bytes()[:40])
    expect_bad(path)


def handmade_safetensors(path: Path, header: dict, data: bytes = b"\0" * 16) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


FERTOOL_META = {"kind": json.dumps("branch"), "schema": "1", "fertool_version": json.dumps("0.1.0")}


@pytest.mark.parametrize("offsets", [[0, 2**42], [0, 16], [2**50, 2**50 + 2**42]])
def test_enormous_shape_is_refused_quickly_without_allocating(
    tmp_path: Path, offsets: list[int]
) -> None:
    path = tmp_path / "huge.safetensors"
    header = {
        "__metadata__": FERTOOL_META,
        "weights": {"dtype": "F32", "shape": [2**40], "data_offsets": offsets},
    }
    handmade_safetensors(path, header)
    assert path.stat().st_size < 1000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    expect_bad(path)
    assert time.perf_counter() - started < 2.0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_header_length_larger_than_file(tmp_path: Path) -> None:
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b'{"__metadata__": {}}')
    started = time.perf_counter()
    expect_bad(path)
    assert time.perf_counter() - started < 1.0


def test_header_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "garbled.safetensors"
    body = b"{this is not json}      "
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    expect_bad(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.touch()
    expect_bad(path, "empty")


def test_missing_file(tmp_path: Path) -> None:
    expect_bad(tmp_path / "nowhere.safetensors", "no such file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    expect_bad(folder, "is a directory")
