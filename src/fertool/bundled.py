"""The model that ships inside the package, used wherever a command's MODEL is omitted.

    from fertool.bundled import load_face_model, resolve_model
    model, meta, name = resolve_model(None)        # the bundled FER2013 model, in eval mode
    face_model = load_face_model(Path("x.onnx"))   # a FaceModel: torch, or ONNX Runtime for .onnx

It is made by scripts/train_default.sh and packed by scripts/pack_model.py; MODEL_CARD.md says
what it is and how well it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fertool.errors import BadInputError

if TYPE_CHECKING:
    from fertool.facemodel import FaceModel

DEFAULT_MODEL = Path(__file__).with_name("default_model") / "default.safetensors"


def default_model_path() -> Path:
    path = DEFAULT_MODEL
    if not path.exists():
        raise BadInputError(
            "no MODEL given, and this fertool ships no default model; pass a model file "
            "(made by `fertool train-branch` or `fertool ensemble`) before the images"
        )
    return path


def resolve_model(model_path: Path | None) -> tuple[Any, dict[str, Any], str]:
    """(model in eval mode on the CPU, its metadata, its name): the file given,
    else the bundled one."""
    from fertool.models import load_model

    if is_onnx(model_path):
        raise BadInputError(
            f"{model_path}: an ONNX export runs only in `fertool eval`, `fertool predict` and "
            "the Python API; pass the .safetensors model it was exported from"
        )
    path = model_path or default_model_path()
    model, meta = load_model(path)
    return model, meta, str(path)


def is_onnx(path: Path | str | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


def load_face_model(path: Path | str | None) -> FaceModel:
    """The model in `path` (the bundled one for None) as a FaceModel, what eval, predict and the
    Python API run: a `.onnx` export through ONNX Runtime, a branch or ensemble through torch."""
    from fertool.facemodel import TorchFaceModel

    if is_onnx(path):
        from fertool.onnxmodel import OnnxFaceModel

        return OnnxFaceModel(Path(str(path)))
    module, meta, name = resolve_model(None if path is None else Path(path))
    return TorchFaceModel(module, meta, name)
