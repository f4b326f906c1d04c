"""Model registry: the DeXpression branch, a tiny model for tests, and the classifier wrapper.

    model = create_model("dexpression", num_classes=7)
    clf = FERClassifier(model, mean=0.507, std=0.255)   # takes images scaled to [0, 1]
    clf = model_from_artifact(load_artifact("branch.safetensors"))  # the file alone is enough

As in timm, architectures register themselves by name and `create_model(name, **kwargs)` builds
one; the artifact stores `arch` and `arch_args`, so any model file rebuilds itself (nanoGPT's
`model_args`). Preprocessing travels with the weights: `FERClassifier` holds the training
split's mean/std as buffers, so a caller always feeds plain [0, 1] pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, cast

import torch
from torch import nn

from fertool.artifacts import Artifact
from fertool.configs import HEAD_DROPOUT, HEAD_HIDDEN
from fertool.constants import IMAGE_SIZE
from fertool.errors import BadInputError, WrongKindError


class Backbone(nn.Module):
    """What every registered architecture provides: the classifier,
    Grad-CAM and the ensemble read these."""

    feature_dim: int  # width of `features(x)`, what an ensemble's head reads
    fc: nn.Linear  # the last layer: features -> class logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_model(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> Backbone:
    if name not in _REGISTRY:
        raise BadInputError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}"
        )
    return _REGISTRY[name](**kwargs)


class ChannelLRN(nn.Module):
    """Local response normalisation across channels, equal to `nn.LocalResponseNorm`.

    PyTorch's LRN pads and average-pools a 5-D copy of the input; summing the squared
    neighbouring channels with a fixed banded 1x1 convolution is the same sum done as a matrix
    product, about 4x faster forward and backward on CPU (measured at 100x64x12x12).
    """

    window: torch.Tensor  # a buffer

    def __init__(
        self, channels: int, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
    ):
        super().__init__()
        index = torch.arange(channels)
        offset = index[None, :] - index[:, None]  # input channel minus output channel
        band = (offset >= -(size // 2)) & (
            offset <= (size - 1) // 2
        )  # the same window as PyTorch's
        # Not persistent: the window is a constant of the architecture, not a learned weight.
        self.register_buffer(
            "window", (band.float() * alpha / size)[:, :, None, None], persistent=False
        )
        self.k, self.beta = k, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.conv2d(x * x, self.window.to(x.dtype)).add_(self.k).pow_(-self.beta)
        return x * scale


def conv_relu(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, batch_norm: bool = False
) -> list[nn.Module]:
    """conv -> ReLU, or conv -> batch norm -> ReLU (the conv's bias is then redundant)."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm
    )
    if batch_norm:
        return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return [conv, nn.ReLU(inplace=True)]


class FeatEx(nn.Module):
    """DeXpression's Feature Extractor block: two parallel paths, concatenated.

    [conv 1x1 -> conv 3x3] || [maxpool 3x3/1 -> conv 1x1], each conv followed by ReLU
    (and, in the batch-norm variant, by batch norm before the ReLU).
    """

    def __init__(
        self,
        in_channels: int,
        reduce: int = 96,
        wide: int = 208,
        pool_proj: int = 64,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.conv_path = nn.Sequential(
            *conv_relu(in_channels, reduce, 1, batch_norm=batch_norm),
            *conv_relu(reduce, wide, 3, batch_norm=batch_norm),
        )
        self.pool_path = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            *conv_relu(in_channels, pool_proj, 1, batch_norm=batch_norm),
        )
        self.out_channels = wide + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv_path(x), self.pool_path(x)], dim=1)


class DeXpression(Backbone):
    """DeXpression (Burkert et al. 2015) for 48x48 grayscale faces.

    conv 7x7/2 64 -> maxpool 3x3/2 -> LRN -> FeatEx -> maxpool 3x3/2 -> FeatEx -> maxpool 3x3/2
    -> dropout -> linear. At 48x48 the maps are 24, 12, 6 and 3 pixels wide.

    `stem="gentle"` and `blocks=3` are fertool's measured departures (docs/RESULTS.md): two 3x3
    convs instead of the 7x7/2 stem, and a third FeatEx block after the second. `width` scales
    every conv's channels (stem and FeatEx paths; 1.5 gives 408-channel blocks instead of 272).

    `batch_norm=True` puts batch norm after every conv and drops the LRN: without it the
    network sits at chance for a few hundred Adam steps before it starts to learn (measured on
    the synthetic faces: 16 % after 45 steps, 56 % after 470), with it it learns at once.
    """

    STEMS = ("paper", "gentle")

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        image_size: int = IMAGE_SIZE,
        dropout: float = 0.5,
        batch_norm: bool = False,
        stem: str = "paper",
        blocks: int = 2,
        width: float = 1.0,
    ):
        super().__init__()
        if stem not in self.STEMS:
            raise BadInputError(f"DeXpression stem {stem!r}: choose one of {', '.join(self.STEMS)}")
        if blocks not in (2, 3):
            raise BadInputError(f"DeXpression blocks {blocks}: choose 2 (the paper's) or 3")
        if not 0 < width <= 4:
            raise BadInputError(f"DeXpression width {width}: choose a channel multiplier in (0, 4]")
        if image_size < 16 or image_size % 16:
            # Three stride-2 stages and a stride-2 stem: the classifier's input is side // 16.
            raise BadInputError(f"DeXpression image_size {image_size}: choose a multiple of 16")

        def channels(paper: int) -> int:
            return max(1, round(paper * width))

        stem_out = channels(64)
        if stem == "paper":
            layers = conv_relu(in_channels, stem_out, 7, stride=2, batch_norm=batch_norm)
        else:
            # Two 3x3 convs, the first at full resolution: the paper's 7x7/2 sees 48x48 faces only
            # through a stride, so eyes and mouth corners are a couple of pixels when FeatEx starts.
            layers = [
                *conv_relu(in_channels, channels(32), 3, batch_norm=batch_norm),
                *conv_relu(channels(32), stem_out, 3, stride=2, batch_norm=batch_norm),
            ]
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        if not batch_norm:
            # The paper's LRN; size 5 and the AlexNet constants it inherits.
            layers.append(ChannelLRN(stem_out, size=5, alpha=1e-4, beta=0.75, k=2.0))
        self.stem = nn.Sequential(*layers)

        def block(in_channels: int) -> FeatEx:
            return FeatEx(
                in_channels,
                reduce=channels(96),
                wide=channels(208),
                pool_proj=channels(64),
                batch_norm=batch_norm,
            )

        self.featex1 = block(stem_out)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.featex2 = block(self.featex1.out_channels)
        # A third block at the 6x6 of the second: depth where it is cheap (a quarter of featex1's
        # cost).
        self.featex3 = block(self.featex2.out_channels) if blocks == 3 else None
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        # The last block: what the features are made of, and where Grad-CAM looks by default.
        self.cam_layer = f"featex{blocks}"
        side = image_size // 16
        self.feature_dim = getattr(self, self.cam_layer).out_channels * side * side
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features: flattened output of the last FeatEx block's pooling."""
        x = self.featex2(self.pool1(self.featex1(self.stem(x))))
        if self.featex3 is not None:
            x = self.featex3(x)
        return torch.flatten(self.pool2(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


class TinyNet(Backbone):
    """A two-conv model that trains in seconds; it exists so tests are fast (timm's test_*)."""

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(3),
        )
        self.feature_dim = 32 * 9
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.body(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


@register_model
def dexpression(**kwargs: Any) -> Backbone:
    return DeXpression(**kwargs)


@register_model
def dexpression_bn(**kwargs: Any) -> Backbone:
    """DeXpression with batch norm after every conv instead of the LRN."""
    return DeXpression(batch_norm=True, **kwargs)


@register_model
def dexpression_bn_deep(**kwargs: Any) -> Backbone:
    """dexpression_bn with a third FeatEx block at 6x6 (about 1.3x the compute)."""
    return DeXpression(batch_norm=True, blocks=3, **kwargs)


@register_model
def dexpression_bn_gentle_deep(**kwargs: Any) -> Backbone:
    """Both: the 3x3 stem and a third FeatEx block (about 1.8x the compute)."""
    return DeXpression(batch_norm=True, stem="gentle", blocks=3, **kwargs)


@register_model
def dexpression_bn_gentle_wide(**kwargs: Any) -> Backbone:
    """dexpression_bn_gentle_deep with 1.5x the channels in every conv (2.2x the parameters,
    1.75x the epoch time)."""
    return DeXpression(batch_norm=True, stem="gentle", blocks=3, width=1.5, **kwargs)


@register_model
def tiny(**kwargs: Any) -> Backbone:
    return TinyNet(**kwargs)


class FERClassifier(nn.Module):
    """A backbone plus the normalisation it was trained with; input is [0, 1] pixels,
    N x 1 x H x W."""

    mean: torch.Tensor  # buffers: saved with the weights
    std: torch.Tensor
    temperature: float = 1.0  # a plain attribute, not a weight: see load_model

    def __init__(self, backbone: Backbone, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


class EnsembleClassifier(nn.Module):
    """Frozen branches whose outputs a small head combines: the report's ensemble.

    `features="penultimate"` concatenates each branch's flattened last FeatEx output,
    `features="logits"` their logits; `features="average"` has no head and averages the
    branches' probabilities (the untrained baseline; its "logits" are log mean probabilities).
    Each branch keeps its own normalisation, so branches trained differently still combine.
    """

    FEATURES = ("penultimate", "logits", "average")
    temperature: float = 1.0  # a plain attribute, not a weight: see load_model

    def __init__(
        self,
        branches: list[FERClassifier],
        features: str = "penultimate",
        hidden: tuple[int, ...] = HEAD_HIDDEN,
        dropout: float = HEAD_DROPOUT,
        num_classes: int = 7,
    ):
        super().__init__()
        if features not in self.FEATURES:
            raise BadInputError(f"--features {features}: choose one of {', '.join(self.FEATURES)}")
        self.branches = nn.ModuleList(branches)
        self.mode = features
        self.head = (
            self._head(branches, features, hidden, dropout, num_classes)
            if features != "average"
            else None
        )

    @staticmethod
    def _head(
        branches: list[FERClassifier],
        features: str,
        hidden: tuple[int, ...],
        dropout: float,
        num_classes: int,
    ) -> nn.Sequential:
        width = sum(
            b.backbone.feature_dim if features == "penultimate" else num_classes for b in branches
        )
        layers: list[nn.Module] = []
        for size in hidden:  # hidden + the output layer: three dense layers by default
            layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        return nn.Sequential(*layers)

    @property
    def members(self) -> list[FERClassifier]:
        """The branches, typed: a ModuleList only knows it holds modules."""
        return cast("list[FERClassifier]", list(self.branches))

    def branch_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: the branches' features or logits, concatenated."""
        if self.mode == "penultimate":
            return torch.cat([b.features(x) for b in self.members], dim=1)
        return torch.cat([b(x) for b in self.branches], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            probabilities = torch.stack([b(x).float().softmax(dim=1) for b in self.branches]).mean(
                dim=0
            )
            return probabilities.clamp_min(1e-12).log()
        return self.head(self.branch_outputs(x))

    def train(self, mode: bool = True) -> "EnsembleClassifier":
        # Branches stay in eval mode even while the head trains: frozen, or fine-tuned end to end
        # with their batch-norm statistics kept (batches of augmented faces would shift them).
        super().train(mode)
        self.branches.eval()
        return self

    def unfreeze(self) -> "EnsembleClassifier":
        """Make every weight that reaches the output trainable: end-to-end fine-tuning of a trained
        ensemble.

        A head over penultimate features never reads the branches' own classifiers (`fc`); they
        stay frozen, so data-parallel training does not wait for gradients they never get.
        """
        self.requires_grad_(True)
        if self.mode == "penultimate":
            for branch in self.members:
                branch.backbone.fc.requires_grad_(False)
        return self


def build_classifier(
    arch: str, arch_args: dict[str, Any], normalization: dict[str, float] | None
) -> FERClassifier:
    norm = normalization or {"mean": 0.0, "std": 1.0}
    return FERClassifier(create_model(arch, **arch_args), mean=norm["mean"], std=norm["std"])


# What a model file holds, rebuilt: one branch, or several joined.
Classifier = FERClassifier | EnsembleClassifier


def build_from_meta(meta: dict[str, Any]) -> Classifier:
    """An untrained model of the shape `meta` describes: a branch or an ensemble of branches."""
    if meta.get("kind") == "ensemble":
        branches = [
            build_classifier(b["arch"], b.get("arch_args", {}), b.get("normalization"))
            for b in meta["branches"]
        ]
        args = meta.get("arch_args", {})
        return EnsembleClassifier(
            branches,
            features=args.get("features", "penultimate"),
            hidden=tuple(args.get("hidden", HEAD_HIDDEN)),
            dropout=args.get("dropout", HEAD_DROPOUT),
            num_classes=len(meta["classes"]),
        )
    return build_classifier(meta["arch"], meta.get("arch_args", {}), meta.get("normalization"))


def check_shapes(expected: dict[str, torch.Tensor], tensors: dict[str, Any]) -> None:
    """The file's tensors are exactly the architecture's: same names, same shapes."""
    missing, unexpected = (
        sorted(expected.keys() - tensors.keys()),
        sorted(tensors.keys() - expected.keys()),
    )
    if missing or unexpected:
        raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, want in expected.items():
        if tuple(tensors[name].shape) != tuple(want.shape):
            raise ValueError(
                f"{name} has shape {list(tensors[name].shape)}, its architecture {list(want.shape)}"
            )


def model_from_artifact(artifact: Artifact) -> Classifier:
    """Rebuild a branch or an ensemble from its artifact alone: architecture, arguments, weights."""
    try:
        # Shapes first, on the meta device, which allocates nothing: arch_args are a stranger's
        # numbers, and an image_size of 48000 would ask for 16 GB before load_state_dict could
        # see that no weights of that size are in the file.
        with torch.device("meta"):
            skeleton = build_from_meta(artifact.meta)
        check_shapes(skeleton.state_dict(), artifact.tensors)
        model = build_from_meta(artifact.meta)
        model.load_state_dict(artifact.tensors, strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise BadInputError(
            f"{artifact.path}: model weights do not match its architecture "
            f"({str(err).splitlines()[0]}); the file is damaged or from another fertool, "
            "train it again"
        ) from err
    except BadInputError as err:  # an architecture or option the file names, not the command line
        raise BadInputError(
            f"{artifact.path}: its metadata asks for what this fertool cannot build ({err}); "
            "the file is from another fertool or hand-made, train it again"
        ) from err
    return model.eval()


def load_model(path: Path | str) -> tuple[Classifier, dict[str, Any]]:
    """A model artifact (branch or ensemble) -> (model in eval mode on the CPU, its metadata)."""
    from fertool.artifacts import MODEL_KINDS, load_artifact

    artifact = load_artifact(path, expect=MODEL_KINDS)
    model = model_from_artifact(artifact)
    # The file's `temperature` (fertool calibrate) rides on the model as an attribute that
    # evaluate.tta_logits divides each view's logits by, not inside forward(): eval, predict and
    # saliency's probabilities then honour it, while forward() stays the raw network that
    # saliency's gradients, filters and `fertool export` (which adds 1/T to its graph) trace.
    # Only here, not in model_from_artifact: training from --init and a distillation teacher
    # keep the raw logits they were designed around.
    model.temperature = temperature_of(artifact.meta)
    return model, artifact.meta


def temperature_of(meta: dict[str, Any]) -> float:
    """A model's temperature (`temperature` in its metadata, fertool calibrate); 1 where absent."""
    value = meta.get("temperature")
    return float(value) if value is not None else 1.0


def check_model_fits(model_meta: dict[str, Any], model_path: Path, dataset: Artifact) -> None:
    """Refuse a model whose classes or input (channels, size) are not the data set's: a data
    set holds one gray channel of `image_size` pixels a side."""
    if list(model_meta["classes"]) != list(dataset.meta["classes"]):
        raise WrongKindError(
            f"{model_path}: predicts classes {model_meta['classes']}, but {dataset.path} has "
            f"{dataset.meta['classes']}; use a model trained on such data"
        )
    channels, _, size = model_meta.get("input_size", [1, IMAGE_SIZE, IMAGE_SIZE])
    if channels != 1:
        raise WrongKindError(
            f"{model_path}: takes {channels}-channel images, but {dataset.path} holds gray ones; "
            "use a model trained on gray faces"
        )
    if size != dataset.meta["image_size"]:
        side = dataset.meta["image_size"]
        raise WrongKindError(
            f"{model_path}: takes {size}x{size} images, but {dataset.path} holds {side}x{side}; "
            "prepare the data at the model's size"
        )


def branch_from_artifact(artifact: Artifact) -> FERClassifier:
    """A branch artifact's model; an ensemble is refused (an ensemble's members are branches)."""
    model = model_from_artifact(artifact)
    if not isinstance(model, FERClassifier):
        raise WrongKindError(
            f"{artifact.path}: is an ensemble, but this needs a branch made by train-branch; "
            "pass a branch"
        )
    return model
