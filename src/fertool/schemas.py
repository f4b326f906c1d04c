"""What each kind of artifact must hold, checked when it is loaded.

A file that is well-formed safetensors/npz can still be damaged or hand-made: a data set whose
images are float, labels beyond the class list, a model whose weights are integers or NaN,
predictions whose logits do not match their labels. Each is refused here, at the door, with the
file's name, instead of failing deep inside a command as a shape error or, worse, being cast
silently into a model that then predicts garbage.

    check_contents(artifact)      # raises BadInputError naming artifact.path
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fertool.errors import BadInputError
from fertool.options import Views

if TYPE_CHECKING:
    import torch

SPLIT_COUNT = (
    4  # train, val, test, holdout (fertool.data.SPLITS): the codes a `split` tensor may hold
)
# The test-time augmentations a model file may ask for (`tta`); evaluate.py gives each its views.
# Here, not there, so that checking a file does not import torch.
TTA_MODES = Views.values()
# The numbers of an epoch record that `curves` and `info` read (train.py writes them).
EPOCH_NUMBERS = ("loss", "val_loss", "train_accuracy", "val_accuracy")


class _Checker:
    """Collects the one-line reason a file is refused; `remake` says what to do instead."""

    def __init__(self, artifact: Any, remake: str):
        self.artifact = artifact
        self.remake = remake

    def fail(self, problem: str) -> None:
        raise BadInputError(f"{self.artifact.path}: {problem}; {self.remake}")

    def meta(self, key: str, test: Callable[[Any], bool], wanted: str) -> Any:
        value = self.artifact.meta.get(key)
        try:
            ok = test(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            self.fail(f"its metadata {key!r} is {_short(value)}, not {wanted}")
        return value

    def array(self, name: str, kinds: str, dims: int) -> np.ndarray | torch.Tensor:
        """The array `name`, of a dtype kind in `kinds` ('u' unsigned, 'i' int, 'f' float),
        `dims`-D."""
        arrays = self.artifact.tensors
        if name not in arrays:
            self.fail(f"it has no {name!r} array")
        value = arrays[name]
        kind = _dtype_kind(value)
        if kind not in kinds:
            self.fail(f"its {name!r} array has dtype {dtype_name(value)}, not {_KIND_NAMES[kinds]}")
        if value.ndim != dims:
            self.fail(f"its {name!r} array has shape {tuple(value.shape)}, not {dims}-D")
        return value


_KIND_NAMES = {
    "u": "uint8",
    "i": "an integer dtype",
    "iu": "an integer dtype",
    "f": "a float dtype",
}


def _dtype_kind(value: Any) -> str:
    # Arrays are numpy or torch (see artifacts.load_artifact); torch is imported only for its own.
    if isinstance(value, np.ndarray):
        return {"u": "u", "i": "i", "f": "f"}.get(value.dtype.kind, "?")
    import torch

    if value.dtype.is_floating_point:
        return "f"
    if value.dtype == torch.uint8:
        return "u"
    return "i" if not value.dtype.is_complex and value.dtype != torch.bool else "?"


def dtype_name(value: Any) -> str:
    return str(value.dtype).removeprefix("torch.")  # one name, whether numpy or torch read the file


def _all_finite(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all())
    import torch

    return bool(torch.isfinite(value).all())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_class_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(c, str) and c for c in value)
        and len(set(value)) == len(value)
    )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_history(value: Any) -> bool:
    """None, or epochs as train.py records them: dicts whose loss (and any accuracies) are finite
    numbers."""
    return value is None or (
        isinstance(value, list)
        and all(
            isinstance(epoch, dict)
            and _finite_number(epoch.get("loss"))
            and all(_finite_number(epoch[key]) for key in EPOCH_NUMBERS if key in epoch)
            for epoch in value
        )
    )


def _is_start_chain(value: Any) -> bool:
    """`init`: the run a model continued from (--init), which may have continued from another;
    `curves` reads each one's history and epochs."""
    while value is not None:
        if not (
            isinstance(value, dict)
            and _is_history(value.get("history"))
            and _finite_number(value.get("epochs", 0))
        ):
            return False
        value = value.get("init")
    return True


def _in_range(values: np.ndarray | torch.Tensor, high: int) -> bool:
    if len(values) == 0:
        return True
    return int(values.min()) >= 0 and int(values.max()) < high


def check_dataset(artifact: Any) -> None:
    c = _Checker(artifact, "make it again with `fertool prepare`")
    classes = c.meta("classes", _is_class_list, "a list of two or more class names")
    size = c.meta(
        "image_size",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "a positive integer",
    )
    c.meta("train_mean", _finite_number, "a finite number")
    c.meta("train_std", lambda v: _finite_number(v) and v > 0, "a positive number")
    c.meta("sha256", lambda v: isinstance(v, str) and len(v) == 64, "a sha256 hex digest")
    images = c.array("images", "u", 3)
    labels = c.array("labels", "i", 1)
    split = c.array("split", "u", 1)
    if tuple(images.shape[1:]) != (size, size):
        c.fail(
            f"its images are {images.shape[1]}x{images.shape[2]}, "
            f"but its metadata says {size}x{size}"
        )
    if not len(labels) == len(split) == len(images):
        c.fail(f"it has {len(images)} images, {len(labels)} labels and {len(split)} split codes")
    if not _in_range(labels, len(classes)):
        c.fail(
            f"its labels run from {int(labels.min())} to {int(labels.max())}, "
            f"outside 0..{len(classes) - 1}"
        )
    if not _in_range(split, SPLIT_COUNT):
        c.fail(f"its split codes run up to {int(split.max())}, outside 0..{SPLIT_COUNT - 1}")
    if "masks" in artifact.tensors and tuple(artifact.tensors["masks"].shape) != tuple(
        images.shape
    ):
        c.fail("its masks differ in shape from its images")


def check_model(artifact: Any) -> None:
    made_by = "`fertool ensemble`" if artifact.kind == "ensemble" else "`fertool train-branch`"
    c = _Checker(artifact, f"make it again with {made_by}")
    c.meta("classes", _is_class_list, "a list of two or more class names")
    c.meta(
        "input_size",
        lambda v: (
            isinstance(v, list) and len(v) == 3 and all(isinstance(n, int) and n > 0 for n in v)
        ),
        "[channels, height, width]",
    )
    if artifact.kind == "ensemble":
        c.meta(
            "branches",
            lambda v: isinstance(v, list) and len(v) >= 1 and all(isinstance(b, dict) for b in v),
            "a list of branch descriptions",
        )
    else:
        c.meta("arch", lambda v: isinstance(v, str), "an architecture name")
    c.meta(
        "tta",
        lambda v: v is None or v in TTA_MODES,
        f"one of {', '.join(TTA_MODES)} (test-time augmentation)",
    )
    c.meta(
        "temperature",
        lambda v: v is None or (_finite_number(v) and v > 0),
        "a positive number (fertool calibrate's temperature)",
    )
    c.meta("history", _is_history, "a list of epochs with a finite loss")
    c.meta("init", _is_start_chain, "the run it started from, with its epochs and history")
    for name, tensor in artifact.tensors.items():
        if name.endswith("num_batches_tracked"):
            continue  # batch norm's step counter: an integer by design
        if _dtype_kind(tensor) != "f":
            c.fail(f"its weight {name!r} has dtype {dtype_name(tensor)}, not a float dtype")
        if not _all_finite(tensor):
            c.fail(f"its weight {name!r} holds NaN or infinite values")


def check_predictions(artifact: Any) -> None:
    c = _Checker(artifact, "write it again with `fertool eval DATA MODEL -o preds.npz`")
    classes = c.meta("classes", _is_class_list, "a list of two or more class names")
    c.meta("split", lambda v: isinstance(v, str), "a split name")
    c.meta("model", lambda v: isinstance(v, str), "a model path")
    logits = c.array("logits", "f", 2)
    labels = c.array("labels", "iu", 1)
    if logits.shape[1] != len(classes):
        c.fail(f"its logits have {logits.shape[1]} columns for {len(classes)} classes")
    if len(labels) != len(logits):
        c.fail(f"it has {len(logits)} rows of logits but {len(labels)} labels")
    if not np.isfinite(logits).all():
        c.fail("its logits hold NaN or infinite values")
    if not _in_range(labels, len(classes)):
        c.fail(f"its labels fall outside 0..{len(classes) - 1}")
    if "probabilities" in artifact.tensors:  # written since issue 40; older files have logits only
        probs = np.asarray(c.array("probabilities", "f", 2))  # npz: numpy already
        if probs.shape != logits.shape:
            c.fail(
                f"its probabilities have shape {list(probs.shape)}, its logits {list(logits.shape)}"
            )
        sums = probs.sum(axis=1)
        if not (
            np.isfinite(probs).all() and (probs >= 0).all() and np.allclose(sums, 1, atol=1e-3)
        ):
            c.fail("its probabilities are not rows of non-negative numbers summing to 1")


def check_checkpoint(artifact: Any) -> None:
    c = _Checker(artifact, "delete it and train again without --resume")
    c.meta("epoch", lambda v: isinstance(v, int) and v >= 0, "a number of finished epochs")
    c.meta("history", lambda v: isinstance(v, list), "a list of epochs")
    c.meta("train_config", lambda v: isinstance(v, dict), "the run's settings")
    c.meta("param_groups", lambda v: isinstance(v, list), "the optimizer's settings")


_CHECKS: dict[str, Callable[[Any], None]] = {
    "dataset": check_dataset,
    "branch": check_model,
    "ensemble": check_model,
    "predictions": check_predictions,
    "checkpoint": check_checkpoint,
}


def check_contents(artifact: Any) -> None:
    """Refuse an artifact whose arrays or metadata are not what its kind promises."""
    check = _CHECKS.get(artifact.kind)
    if check is not None:
        check(artifact)


def check_tta(tta: str, flag: str = "--tta", allow_auto: bool = False) -> None:
    """Refuse a name that is not one of TTA_MODES (or `auto`, where `model_tta` resolves it later),
    naming the option it came from."""
    allowed = ("auto", *TTA_MODES) if allow_auto else TTA_MODES
    if tta not in allowed:
        raise BadInputError(f"{flag} {tta}: choose one of {', '.join(allowed)}")


def model_tta(meta: dict[str, Any], requested: str) -> str:
    """`auto`, in every command, is the test-time augmentation the model's file asks for (`tta`
    in its metadata; none where it names none)."""
    check_tta(requested, allow_auto=True)
    return str(meta.get("tta", "none")) if requested == "auto" else requested
