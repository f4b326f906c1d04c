"""The fixed sets of values fertool's options take, one Enum each.

The command line declares its options with these, so `--help` and shell completion list the
values and Click refuses a wrong one; the library checks the same sets (files and Python callers
pass plain strings). Each member is its own string: `Tta.FLIP == "flip"`.

    from fertool.options import Tta
    Tta("crops")              # Tta.CROPS
    [t.value for t in Tta]    # ['auto', 'none', 'flip', 'crops']
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """An option value that prints as itself (`f"{Tta.FLIP}"` is "flip"), on every Python."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(str(member.value) for member in cls)


class Tta(Choice):
    """Test-time views. `auto` is the model file's own `tta` (`predict`: at least flip)."""

    AUTO = "auto"
    NONE = "none"
    FLIP = "flip"
    CROPS = "crops"


class Views(Choice):
    """Test-time views a file records or a head trains on (Tta without `auto`)."""

    NONE = "none"
    FLIP = "flip"
    CROPS = "crops"


class Precision(Choice):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Recipe(Choice):
    """`train-branch --recipe`: named starting points (recipes.RECIPES)."""

    BEST = "best"
    REPORT = "report"


class Arch(Choice):
    """The registered architectures (models.list_models(); a test keeps the two equal)."""

    DEXPRESSION = "dexpression"
    DEXPRESSION_BN = "dexpression_bn"
    DEXPRESSION_BN_DEEP = "dexpression_bn_deep"
    DEXPRESSION_BN_GENTLE_DEEP = "dexpression_bn_gentle_deep"
    DEXPRESSION_BN_GENTLE_WIDE = "dexpression_bn_gentle_wide"
    TINY = "tiny"


class Optimizer(Choice):
    ADAM = "adam"
    SGD = "sgd"


class Schedule(Choice):
    CONSTANT = "constant"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class AugmentPreset(Choice):
    REPORT = "report"
    STRONG = "strong"


class Split(Choice):
    """A dataset's splits, in the order of their codes in the `split` tensor (0, 1, 2, 3)."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"
    HOLDOUT = "holdout"


class SaliencyMethod(Choice):
    GRADIENT = "gradient"
    SMOOTHGRAD = "smoothgrad"
    GRADCAM = "gradcam"
    INTEGRATED = "integrated"


class Features(Choice):
    """What an ensemble's head reads of its branches."""

    PENULTIMATE = "penultimate"
    LOGITS = "logits"


class Detector(Choice):
    """The face finders (detect.py): YuNet, shipped in the package, or OpenCV's Haar cascade."""

    YUNET = "yunet"
    HAAR = "haar"


class FaceInput(Choice):
    """`export --input`: the element type of an ONNX export's faces (0..255 either way)."""

    UINT8 = "uint8"
    FLOAT32 = "float32"
