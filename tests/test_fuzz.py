"""Property-based fuzzing of the two parsers that read strangers' files: artifacts and the CSV.

Whatever the bytes, `load_artifact` and `load_csv` either return or raise fertool's own error:
never another exception, never a hang (each example has a deadline), and never an allocation
the file's size does not justify (tensors loaded from a file are never larger than the file, and
the process's peak memory stays put over the whole run).

Inputs are random bytes, and valid files mutated: bytes flipped, cut short, grown, headers
rewritten with arbitrary JSON, shapes, dtypes and offsets. `FERTOOL_FUZZ_EXAMPLES=20000 pytest
tests/test_fuzz.py` runs a longer campaign (docs/RELIABILITY.md records one).
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fertool.artifacts import load_artifact, save_npz, save_tensors
from fertool.data import load_csv
from fertool.errors import FertoolError

EXAMPLES = int(os.environ.get("FERTOOL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

WORKDIR = Path(tempfile.mkdtemp(prefix="fertool-fuzz-"))


def valid_safetensors() -> bytes:
    path = WORKDIR / "seed.safetensors"
    tensors = {
        "images": torch.arange(4 * 48 * 48, dtype=torch.int32).to(torch.uint8).reshape(4, 48, 48),
        "labels": torch.tensor([0, 1, 2, 3]),
        "split": torch.zeros(4, dtype=torch.uint8),
    }
    save_tensors(
        path,
        tensors,
        kind="dataset",
        meta={
            "classes": ["a", "b", "c", "d"],
            "image_size": 48,
            "train_mean": 0.5,
            "train_std": 0.2,
            "sha256": "0" * 64,
        },
    )
    return path.read_bytes()


def valid_npz() -> bytes:
    path = WORKDIR / "seed.npz"
    save_npz(
        path,
        {"logits": np.zeros((3, 2), np.float32), "labels": np.array([0, 1, 1])},
        kind="predictions",
        meta={"classes": ["a", "b"], "split": "val", "model": "m"},
    )
    return path.read_bytes()


SEEDS = {"safetensors": valid_safetensors(), "npz": valid_npz()}


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@pytest.fixture(scope="module", autouse=True)
def module_start_rss() -> dict[str, int]:
    """The peak RSS when this module's tests start (earlier test files may have set it higher)."""
    return {"kib": peak_rss_kib()}


def load_bytes(content: bytes, suffix: str = ".safetensors") -> None:
    path = WORKDIR / f"case{suffix}"
    path.write_bytes(content)
    # Both readers: torch tensors (the commands that compute), numpy arrays (info, confusion,
    # curves).
    for as_numpy in (False, True):
        try:
            artifact = load_artifact(path, as_numpy=as_numpy)
        except FertoolError:
            continue
        # Loaded: what it holds came from the file, so it cannot be bigger than the file.
        held = sum(
            t.numel() * t.element_size() if isinstance(t, torch.Tensor) else np.asarray(t).nbytes
            for t in artifact.tensors.values()
        )
        assert held <= len(content)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "grow", "splice"]))
        if action == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif action == "grow":
            data += draw(st.binary(max_size=64))
        elif action == "splice" and data:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, min_size=1, max_size=4)
    ),
    max_leaves=12,
)
DTYPES = st.sampled_from(
    ["U8", "I8", "F16", "BF16", "F32", "F64", "I64", "BOOL", "F8_E4M3", "X9", ""]
)


@st.composite
def forged_header(draw: st.DrawFn) -> bytes:
    """A safetensors file whose header JSON says anything: shapes up to 2**62, offsets anywhere."""
    entries: dict[str, object] = {}
    for name in draw(
        st.lists(st.sampled_from(["images", "labels", "split", "w", "__metadata__"]), max_size=4)
    ):
        if name == "__metadata__" and draw(st.booleans()):
            entries[name] = draw(
                st.dictionaries(
                    st.sampled_from(["kind", "schema", "classes", "image_size"]),
                    st.sampled_from(
                        ['"dataset"', '"branch"', "1", "99", "[1]", "{", '"x"', "null"]
                    ),
                    max_size=4,
                )
            )
            continue
        shape = draw(st.lists(st.integers(0, 2**62) | st.integers(0, 64), max_size=4))
        start = draw(st.integers(0, 2**40) | st.integers(0, 64))
        end = draw(st.integers(0, 2**40) | st.integers(start, start + 64))
        entries[name] = draw(
            st.just({"dtype": draw(DTYPES), "shape": shape, "data_offsets": [start, end]})
            | JSON_VALUES
        )
    header = json.dumps(entries).encode()
    declared = draw(st.just(len(header)) | st.integers(0, 2**64 - 1))
    return struct.pack("<Q", declared) + header + draw(st.binary(max_size=128))


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(content: bytes) -> None:
    load_bytes(content)


@FUZZ
@given(mutated(SEEDS["safetensors"]))
def test_mutated_safetensors(content: bytes) -> None:
    load_bytes(content)


@FUZZ
@given(forged_header())
def test_forged_safetensors_headers(content: bytes) -> None:
    load_bytes(content)


@FUZZ
@given(mutated(SEEDS["npz"]))
def test_mutated_npz(content: bytes) -> None:
    load_bytes(content, ".npz")


@st.composite
def npz_with_anything(draw: st.DrawFn) -> bytes:
    """A real zip of .npy members with fuzzed names, dtypes, shapes and metadata."""
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {}
    if draw(st.booleans()):
        arrays["__meta__"] = np.array(
            json.dumps(draw(JSON_VALUES | st.just({"kind": "predictions", "schema": 1})))
        )
    for name in draw(
        st.lists(st.sampled_from(["logits", "labels", "indices", "maps"]), max_size=3)
    ):
        dtype = draw(
            st.sampled_from(
                [np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64, "U3"]
            )
        )
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        arrays[name] = np.zeros(shape, dtype=dtype)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@FUZZ
@given(npz_with_anything())
def test_npz_with_any_members(content: bytes) -> None:
    load_bytes(content, ".npz")


# ---------------------------------------------------------------- CSV

GOOD_ROW = "3," + " ".join(["7"] * 2304) + ",Training"
FIELDS = st.sampled_from(["emotion", "pixels", "Usage", "label", "", " emotion", "EMOTION"])
CELLS = (
    st.integers(-3, 300).map(str)
    | st.text(alphabet='0123456789 -.,e\t"', max_size=30)
    | st.sampled_from(["Training", "PublicTest", "PrivateTest", "Holdout", ""])
)


@st.composite
def csv_text(draw: st.DrawFn) -> bytes:
    header = ",".join(draw(st.lists(FIELDS, min_size=0, max_size=4)))
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            rows.append(GOOD_ROW)
        else:
            pixels = " ".join(str(v) for v in draw(st.lists(st.integers(-1, 256), max_size=8)))
            cells = draw(st.lists(CELLS, max_size=4))
            cells.insert(min(1, len(cells)), pixels if draw(st.booleans()) else draw(CELLS))
            rows.append(",".join(cells))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join([header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


def load_csv_bytes(content: bytes) -> None:
    path = WORKDIR / "fer.csv"
    path.write_bytes(content)
    try:
        raw = load_csv(path)
    except FertoolError:
        return
    assert raw.images.shape[1:] == (48, 48) and len(raw.images) == len(raw.labels) == len(raw.split)


@FUZZ
@given(csv_text())
def test_csv_of_any_shape(content: bytes) -> None:
    load_csv_bytes(content)


@FUZZ
@given(
    mutated(
        (
            "emotion,pixels,Usage\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("3,", "5,", 1) + "\n"
        ).encode()
    )
)
def test_mutated_csv(content: bytes) -> None:
    load_csv_bytes(content)


@FUZZ
@given(st.binary(max_size=4096))
def test_csv_random_bytes(content: bytes) -> None:
    load_csv_bytes(content)


def npy_member(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def zip_of(members: dict[str, bytes], compression: int = 0) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@FUZZ
@given(
    st.lists(st.integers(0, 2**40) | st.integers(0, 8), max_size=3),
    st.sampled_from(["<f4", "<f8", "<i8", "|u1", "|O", "<U4"]),
    st.binary(max_size=64),
)
def test_npy_headers_claiming_any_shape(shape: list[int], dtype: str, data: bytes) -> None:
    meta = npy_member(
        (), "<U40", json.dumps({"kind": "predictions", "schema": 1}).ljust(40).encode("utf-32-le")
    )
    load_bytes(
        zip_of({"__meta__.npy": meta, "logits.npy": npy_member(tuple(shape), dtype, data)}), ".npz"
    )


def test_a_zip_bomb_is_refused_without_expanding_it() -> None:
    import zipfile

    # 64 MiB of zeros deflate to about 64 KiB: the file does not justify the memory.
    bomb = zip_of(
        {"logits.npy": npy_member((2**26,), "|u1", bytes(2**26))}, compression=zipfile.ZIP_DEFLATED
    )
    path = WORKDIR / "bomb.npz"
    path.write_bytes(bomb)
    with pytest.raises(FertoolError, match="zip bomb"):
        load_artifact(path)


def test_a_header_claiming_a_terabyte_is_refused_before_numpy_allocates() -> None:
    path = WORKDIR / "claim.npz"
    path.write_bytes(zip_of({"logits.npy": npy_member((2**40,), "<f8", bytes(64))}))
    with pytest.raises(FertoolError, match="claims"):
        load_artifact(path)


def test_hostile_files_allocate_nothing_in_a_fresh_process(tmp_path: Path) -> None:
    """A 4 PiB safetensors header, an 8 TiB .npy header and a zip bomb, loaded by a new process:
    its peak memory must not move. (In the test process, earlier tests' peaks would hide it.)"""
    import subprocess
    import sys
    import zipfile

    enormous = tmp_path / "enormous.safetensors"
    header = json.dumps(
        {
            "__metadata__": {"kind": '"dataset"', "schema": "1"},
            "images": {"dtype": "U8", "shape": [2**26, 2**26], "data_offsets": [0, 16]},
        }
    ).encode()
    enormous.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    (tmp_path / "claim.npz").write_bytes(
        zip_of({"logits.npy": npy_member((2**40,), "<f8", bytes(64))})
    )
    (tmp_path / "bomb.npz").write_bytes(
        zip_of(
            {"logits.npy": npy_member((2**26,), "|u1", bytes(2**26))},
            compression=zipfile.ZIP_DEFLATED,
        )
    )
    child = f"""
import resource, sys
from fertool.artifacts import load_artifact
from fertool.errors import FertoolError
import fertool.schemas, numpy, zipfile  # everything the loads import, imported before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in ("enormous.safetensors", "claim.npz", "bomb.npz"):
    try:
        load_artifact({str(tmp_path)!r} + "/" + name)
        sys.exit(name + " loaded")
    except FertoolError:
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    grown_mib = int(done.stdout.strip()) / 1024
    assert grown_mib < 32, f"loading three hostile files grew the peak RSS by {grown_mib:.0f} MiB"


def test_no_fuzz_input_made_the_process_grow(module_start_rss: dict[str, int]) -> None:
    """Peak memory after every campaign above, against the peak when this module began."""
    grown_mib = (peak_rss_kib() - module_start_rss["kib"]) / 1024
    assert grown_mib < 512, f"peak RSS grew by {grown_mib:.0f} MiB while fuzzing"
