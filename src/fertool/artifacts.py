"""Artifacts: the files that pass between fertool's commands.

Every artifact says what it is. Tensors go to safetensors with the metadata as JSON strings in
its header; results go to npz with the metadata as a JSON string in an `__meta__` entry. Nothing
is ever pickled, so a file from a stranger is safe to open.

    save_tensors("branch.safetensors", model.state_dict(), kind="branch", meta={...})
    art = load_artifact("branch.safetensors", expect=MODEL_KINDS)
    art.kind, art.meta["arch"], art.tensors["backbone.conv1.weight"]

Writes are atomic: the file is written beside its target and renamed over it only when complete,
so an interrupted command leaves either the old file or none, never half of one.

This module does not import torch until a file's tensors are read or written as torch tensors:
`fertool info`, `confusion` and `curves` read files as numpy arrays (`load_artifact(...,
as_numpy=True)`) and start in a second, not the seconds torch takes to import.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
from safetensors import SafetensorError

from fertool.errors import BadInputError, WrongKindError
from fertool.version import __version__

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1
KINDS = ("dataset", "branch", "ensemble", "predictions", "checkpoint", "saliency")
MODEL_KINDS = ("branch", "ensemble")

# What to pass instead, by the kind a command expected; used in wrong-kind messages.
_MAKES = {
    "dataset": "a dataset made by `fertool prepare`",
    "branch": "a model made by `fertool train-branch`",
    "ensemble": "a model made by `fertool ensemble`",
    "predictions": "predictions made by `fertool eval ... -o preds.npz`",
    "saliency": "saliency maps written by `fertool saliency --npz`",
    "checkpoint": "a checkpoint written by `fertool train-branch` (OUT.ckpt)",
}


@dataclass
class Artifact:
    """A loaded artifact: its kind, its metadata and its arrays (torch tensors or numpy arrays)."""

    path: Path
    kind: str
    meta: dict[str, Any]
    tensors: dict[str, Any] = field(default_factory=dict)


def base_meta(kind: str) -> dict[str, Any]:
    """The metadata every artifact starts with."""
    return {"kind": kind, "schema": SCHEMA_VERSION, "fertool_version": __version__}


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and safetensors' own writer) make the file private (0600); give it the
        # mode any other new file gets, so artifacts can be shared on a cluster.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_output_path(path: Path | str, inputs: Iterable[Path | str | None] = ()) -> None:
    """Fail early (before hours of training) when `path` cannot be written,
    or would replace one of `inputs`."""
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and path.resolve() == Path(given).resolve():
            raise BadInputError(
                f"{path}: is also an input of this command, and writing it would replace it; "
                "choose another output path"
            )
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise BadInputError(
            f"{path}: is a directory; give a file name for the output, e.g. {path}/out.safetensors"
        )
    if not parent.is_dir():
        raise BadInputError(
            f"{path}: directory {parent} does not exist; create it first (mkdir -p {parent})"
        )
    if not os.access(parent, os.W_OK):
        raise BadInputError(
            f"{path}: directory {parent} is not writable; choose another output path"
        )


def save_tensors(
    path: Path | str, tensors: dict[str, torch.Tensor], kind: str, meta: dict[str, Any]
) -> None:
    """Write tensors and metadata to a safetensors file, atomically."""
    from safetensors.torch import save_file

    header = {**meta, **base_meta(kind)}  # the kind argument wins over a copied "kind"
    # safetensors metadata is str -> str: each value is stored as JSON.
    encoded = {key: json.dumps(value) for key, value in header.items()}
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=encoded)


def save_npz(
    path: Path | str, arrays: dict[str, np.ndarray], kind: str, meta: dict[str, Any]
) -> None:
    """Write numpy arrays and metadata to an npz file, atomically."""
    header = {**meta, **base_meta(kind)}
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise ValueError(f"{name}: object arrays would need pickle; convert to a numeric dtype")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file handle stops numpy from appending ".npz"
            np.savez(
                handle, allow_pickle=False, **{"__meta__": np.array(json.dumps(header)), **arrays}
            )


def load_artifact(
    path: Path | str,
    expect: str | tuple[str, ...] | None = None,
    contents: bool = True,
    as_numpy: bool = False,
) -> Artifact:
    """Load an artifact of any kind; if `expect` is given, refuse other kinds with a hint.

    A safetensors file's arrays come as torch tensors, or with `as_numpy` as numpy arrays (for
    commands that read and never compute: torch is not imported); npz arrays are numpy always.
    `contents=False` skips the per-kind check of arrays and metadata (schemas.py): only for
    tests of the file layer itself.
    """
    path = Path(path)
    _check_input_file(path)
    if _is_zip(path):
        artifact = _load_npz(path)
    else:
        artifact = _load_safetensors(path, as_numpy)
    if expect is not None:
        check_kind(artifact, expect)
    if contents:
        from fertool.schemas import check_contents

        check_contents(artifact)
    return artifact


def check_kind(artifact: Artifact, expect: str | tuple[str, ...]) -> None:
    expected = (expect,) if isinstance(expect, str) else tuple(expect)
    if artifact.kind in expected:
        return
    wanted = " or ".join(_MAKES[kind] for kind in expected)
    raise WrongKindError(
        f"{artifact.path}: is a {artifact.kind} artifact, but this needs {wanted}; "
        "pass that instead"
    )


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise BadInputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise BadInputError(f"{path}: is a directory; pass a file written by fertool")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: is empty; it was not written completely, make it again")


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


# safetensors dtypes that numpy holds as they are.
_NUMPY_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64"}


def _load_safetensors(path: Path, as_numpy: bool) -> Artifact:
    not_ours = (
        f"{path}: not a fertool artifact (safetensors or npz written by fertool); "
        "pass a file fertool wrote"
    )
    try:
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
        # A header longer than the file is corrupt; refuse it before anything allocates for it.
        if header_len <= 0 or header_len > path.stat().st_size - 8:
            raise BadInputError(not_ours)
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            raw_meta = handle.metadata() or {}
            # numpy has no bfloat16 (nor float8): such a file is read as torch tensors whatever was
            # asked.
            as_numpy = as_numpy and all(
                handle.get_slice(name).get_dtype() in _NUMPY_DTYPES for name in handle.keys()
            )
        if as_numpy:
            from safetensors.numpy import load_file as load_numpy

            tensors: dict[str, Any] = load_numpy(str(path))
        else:
            from safetensors.torch import load_file as load_torch

            tensors = load_torch(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BadInputError(f"{not_ours} ({_first_line(err)})") from err
    meta = _decode_meta(path, raw_meta)
    return Artifact(path=path, kind=meta["kind"], meta=meta, tensors=tensors)


# What a damaged zip or .npy member raises inside numpy and zipfile (found by tests/test_fuzz.py:
# an unsupported zip version is NotImplementedError, a bad deflate stream zlib.error, ...).
_NPZ_ERRORS = (
    ValueError,
    OSError,
    zipfile.BadZipFile,
    EOFError,
    NotImplementedError,
    zlib.error,
    struct.error,
    KeyError,
    IndexError,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
)


def _check_npz_members(path: Path) -> None:
    """Refuse, before numpy allocates anything, members that claim more data than the file holds.

    numpy allocates a member's whole array from its .npy header before reading the data, so a
    header claiming 2**40 elements, or a zip bomb, would cost memory the file never justified.
    fertool writes npz uncompressed; a compressed member may expand at most 100x.
    """
    budget = 100 * path.stat().st_size + 2**20
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if sum(info.file_size for info in infos) > budget:
            raise BadInputError(
                f"{path}: its members would expand to more than 100x the file (a zip bomb?); "
                "pass a file fertool wrote"
            )
        for info in infos:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            if dtype.hasobject:
                raise BadInputError(
                    f"{path}: member {info.filename} holds Python objects, which would need "
                    "pickle to read; fertool never unpickles, pass a file fertool wrote"
                )
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > info.file_size:
                raise BadInputError(
                    f"{path}: member {info.filename} claims {claimed:,} bytes but holds "
                    f"{info.file_size:,}; the file is damaged, make it again"
                )


def _load_npz(path: Path) -> Artifact:
    try:
        _check_npz_members(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except _NPZ_ERRORS as err:
        # ValueError is what numpy raises for object arrays under allow_pickle=False.
        raise BadInputError(
            f"{path}: not a readable fertool npz ({_first_line(err)}); pass a file fertool wrote"
        ) from err
    raw = arrays.pop("__meta__", None)
    if raw is None or raw.dtype.kind != "U" or raw.shape != ():
        raise BadInputError(f"{path}: npz without fertool metadata; pass a file written by fertool")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise BadInputError(f"{path}: damaged metadata ({err}); make the file again") from err
    _check_meta(path, meta)
    return Artifact(path=path, kind=meta["kind"], meta=meta, tensors=arrays)


def _decode_meta(path: Path, raw_meta: dict[str, str]) -> dict[str, Any]:
    try:
        meta = {key: json.loads(value) for key, value in raw_meta.items()}
    except json.JSONDecodeError as err:
        # Other tools' safetensors (e.g. {"format": "pt"}) keep plain strings here.
        raise BadInputError(
            f"{path}: not a fertool artifact (its metadata is not fertool's); "
            "pass a file fertool wrote"
        ) from err
    _check_meta(path, meta)
    return meta


def _check_meta(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise BadInputError(
            f"{path}: not a fertool artifact (no known kind in its metadata); "
            "pass a file fertool wrote"
        )
    schema = meta.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise BadInputError(
            f"{path}: written with artifact schema {schema}, this fertool reads up to "
            f"{SCHEMA_VERSION}; upgrade fertool"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
