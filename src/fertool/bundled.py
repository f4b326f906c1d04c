"""The model that ships inside the package, used wherever a command's MODEL is omitted.

    from fertool.bundled import resolve_model
    model, meta, name = resolve_model(None)        # the bundled FER2013 model, in eval mode

It is made by scripts/train_default.sh and packed by scripts/pack_model.py; MODEL_CARD.md says
what it is and how well it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fertool.errors import BadInputError

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

    if model_path is not None and model_path.suffix.lower() == ".onnx":
        raise BadInputError(
            f"{model_path}: an ONNX export runs only in `fertool eval`, `fertool predict` and "
            "the Python API; pass the .safetensors model it was exported from"
        )
    path = model_path or default_model_path()
    model, meta = load_model(path)
    return model, meta, str(path)
