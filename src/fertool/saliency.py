"""Saliency maps: which pixels of a face decide the model's answer.

    from pathlib import Path
    import torch
    from fertool.data import CLASSES, read_image
    from fertool.models import load_model
    from fertool.saliency import GradCAM, explain

    model, meta = load_model("branch.safetensors")
    images01 = torch.from_numpy(read_image(Path("face.png"))).float().div(255)[None, None]
    result = explain(model, images01, method="gradcam", target="predicted")
    result.maps[0]            # 48 x 48 float32 in [0, 1]: where the model looked
    CLASSES[result.predicted[0]], result.probabilities[0].max()

    with GradCAM(model, layer="featex1") as cam:   # a method by hand; its hooks go on exit
        raw = cam(images01, torch.tensor([3]))       # unnormalised, N x 48 x 48

Four methods, after pytorch-grad-cam's shape: a base class that owns the hooks and is a context
manager that removes them (even when the block raises), and one short subclass per method.

- `gradient`: |d score / d pixel|, the seed report's map.
- `smoothgrad`: the mean |gradient| over noisy copies of the image (Smilkov et al. 2017); less
  speckle, seeded so the same call gives the same map.
- `integrated`: |integrated gradients| (Sundararajan et al. 2017): the gradient averaged along
  the path from a featureless image (the face's mean brightness everywhere) to the face, times
  their difference; signed, they add up to the target's logit minus the featureless image's.
- `gradcam`: ReLU of the last conv block's activations weighted by their mean gradient
  (Selvaraju et al. 2017), upsampled to 48 x 48; for an ensemble, the mean over its branches.

The score is the target class's logit. Gradients are taken with `torch.autograd.grad` with
respect to the input or the hooked activations only, so nothing accumulates in the parameters'
`.grad`, and frozen models (requires_grad False) work too. A Grad-CAM map can be all zero: no
location raised the score (the ReLU removes negative evidence); `gradient` or an earlier
`layer` still shows something there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fertool.constants import CLASSES
from fertool.errors import BadInputError
from fertool.evaluate import check_tta, tta_logits
from fertool.filters import resolve_layer
from fertool.models import FERClassifier
from fertool.runtime import eval_mode, model_placement


class SaliencyMethod:
    """Base class: holds the model in eval mode and owns its hooks while used as a context manager.

    with GradCAM(model) as method:
        raw = method(images01, targets)   # N x 48 x 48, >= 0, unnormalised
    """

    name = "base"

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mode: Any = None  # eval_mode(model) while entered
        self._entered = False

    def __enter__(self) -> "SaliencyMethod":
        self._mode = eval_mode(self.model)  # dropout would make the map random
        self._mode.__enter__()
        self._entered = True
        try:
            self.register_hooks()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._entered:
            self._mode.__exit__(None, None, None)
        self._entered = False

    def register_hooks(self) -> None:
        """Subclasses that need activations register their hooks here, with `add_forward_hook`."""

    def add_forward_hook(self, module: nn.Module, hook: Any) -> None:
        self._handles.append(module.register_forward_hook(hook))

    def __call__(
        self, images01: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
    ) -> torch.Tensor:
        """Raw maps (float32, CPU, N x H x W, >= 0) for N x 1 x H x W images in [0, 1]."""
        return self.batched(self.attribute, images01, targets, batch_size)

    def results(self, images01: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
        """What `explain` keeps (SaliencyResult's fields): `raw`, the maps as `__call__` gives them,
        and whatever else a method has to say (integrated gradients: its signs and their total)."""
        return {"raw": self(images01, targets).numpy().astype(np.float32)}

    def batched(
        self, attribute: Any, images01: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
    ) -> torch.Tensor:
        """`attribute(x, targets)` (N x H x W per batch) over all images, with gradients on,
        on the model's device."""
        if not self._entered:
            name = type(self).__name__
            raise RuntimeError(f"use {name} as a context manager: `with {name}(model) as m:`")
        maps = []
        # Callers may sit inside no_grad or inference_mode; a clone made outside inference mode
        # is an ordinary tensor that autograd accepts.
        with torch.inference_mode(False), torch.enable_grad():
            x = images01.detach().to(*model_placement(self.model)).clone()
            targets = targets.to(x.device).clone()
            for start in range(0, len(x), batch_size):  # batches bound the memory the graph takes
                batch = slice(start, start + batch_size)
                maps.append(attribute(x[batch], targets[batch]).detach().float().cpu())
        return torch.cat(maps) if maps else torch.zeros(0, *x.shape[2:])

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_gradient(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """d (target logit) / d input, per image: images are independent in eval mode."""
        x = x.clone().requires_grad_(True)
        score = self.model(x).float().gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
        return grad

    # Images per forward and backward pass when a method takes many variants of each image.
    pass_size = 64

    def variant_gradients(self, variants: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`input_gradient` of P variants of each of N images (P x N x 1 x H x W; the targets are
        the N images'), in passes of up to `pass_size` images.

        Variants of one image share passes: a face explained alone takes 32 points in one pass
        of 32 rather than 32 passes of 1, about twice as fast on a CPU.
        """
        flat = variants.reshape(-1, *variants.shape[2:])
        flat_targets = targets.repeat(len(variants))
        grads = [
            self.input_gradient(flat[i : i + self.pass_size], flat_targets[i : i + self.pass_size])
            for i in range(0, len(flat), self.pass_size)
        ]
        return torch.cat(grads).reshape(variants.shape)


class Gradient(SaliencyMethod):
    """|d score / d pixel| (Simonyan et al. 2014), the seed report's saliency."""

    name = "gradient"

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.input_gradient(x, targets).abs()[:, 0]


class SmoothGrad(SaliencyMethod):
    """Mean |gradient| over `samples` copies of each image with Gaussian noise of std `noise`.

    `noise` is in pixel units; the pixel range is [0, 1], so 0.15 is the paper's 10-20 % of range.
    """

    name = "smoothgrad"

    def __init__(self, model: nn.Module, samples: int = 25, noise: float = 0.15, seed: int = 0):
        super().__init__(model)
        if samples < 1:
            raise BadInputError(f"SmoothGrad samples={samples}: must be at least 1")
        self.samples, self.noise, self.seed = samples, noise, seed

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # A CPU generator of our own: reproducible, and the global RNG is left alone.
        generator = torch.Generator().manual_seed(self.seed)
        noisy = x + self.noise * torch.randn((self.samples, *x.shape), generator=generator).to(
            x.device
        )
        return self.variant_gradients(noisy, targets).abs().mean(dim=0)[:, 0]


class IntegratedGradients(SaliencyMethod):
    """|Integrated gradients| (Sundararajan et al. 2017) from a featureless copy of the face.

    The gradient is averaged along the straight path from a baseline image to the face (`steps`
    points at the middles of equal segments) and multiplied by the face minus the baseline.
    Unlike the plain gradient, the attributions add up: their signed sum is the target logit of
    the face minus that of the baseline, up to the path's discretisation (`signed` gives them
    with their signs; the map is their magnitude, like the other methods').

    The baseline is the face's own mean brightness everywhere (`baseline=None`), or one grey
    level for all (`baseline=0.0` is black). Black is the paper's choice, but a pixel as dark as
    the baseline then gets nothing, and on FER2013 its maps did barely better than random ones
    at naming the pixels the decision rests on (benchmarks/saliency_faithfulness.py).
    """

    name = "integrated"

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float | None = None):
        super().__init__(model)
        check_steps(steps)
        self.steps, self.baseline = steps, baseline

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.signed(x, targets).abs()[:, 0]

    def results(self, images01: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
        # The path is walked once: the map is the magnitude of the signed attributions.
        signed = self.signed_maps(images01, targets).numpy().astype(np.float32)
        return {
            "raw": np.abs(signed),
            "signed": signed,
            "logit_rise": self.logit_rise(images01, targets).numpy(),
        }

    def baseline_of(self, x: torch.Tensor) -> torch.Tensor:
        """The image each path starts from, the shape of `x`."""
        if self.baseline is None:
            return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return torch.full_like(x, self.baseline)

    def logit_rise(self, images01: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The target's logit at each face minus at its baseline (float32, CPU, N): what the signed
        attributions add up to when the path has enough steps."""
        rises = []
        with torch.no_grad():
            for start in range(0, len(images01), self.pass_size):  # bounded memory, as the maps
                x = images01[start : start + self.pass_size].to(*model_placement(self.model))
                rise = self.model(x).float() - self.model(self.baseline_of(x)).float()
                rises.append(
                    rise.gather(
                        1, targets[start : start + self.pass_size].to(rise.device)[:, None]
                    )[:, 0]
                )
        return torch.cat(rises).cpu() if rises else torch.zeros(0)

    def signed_maps(
        self, images01: torch.Tensor, targets: torch.Tensor, batch_size: int = 64
    ) -> torch.Tensor:
        """`signed` as `__call__` runs `attribute`: float32, CPU, N x H x W, in batches."""
        return self.batched(lambda x, t: self.signed(x, t)[:, 0], images01, targets, batch_size)

    def signed(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attributions with their signs, N x 1 x H x W; they sum to score(x) - score(baseline)."""
        base = self.baseline_of(x)
        alphas = (torch.arange(self.steps, dtype=x.dtype, device=x.device) + 0.5) / self.steps
        path = base + (x - base) * alphas.reshape(-1, 1, 1, 1, 1)  # steps x N x 1 x H x W
        return (x - base) * self.variant_gradients(path, targets).mean(dim=0)


class GradCAM(SaliencyMethod):
    """Grad-CAM at the last conv block of each branch (`layer` overrides), upsampled to the input.

    The default block is the one a backbone names as `cam_layer` (DeXpression's last FeatEx:
    `featex2`, `featex3` in the deep variants), the last Conv2d otherwise; an ensemble gets one
    CAM per branch, averaged. `layer` takes any name `list_layers` shows, short names included
    ("featex1" for "backbone.featex1").
    """

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: str | None = None):
        super().__init__(model)
        self.layers = [resolve_layer(model, layer)] if layer else default_cam_layers(model)
        self._activations: dict[str, torch.Tensor] = {}

    def register_hooks(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.layers:
            self.add_forward_hook(modules[name], self._keeper(name))

    def _keeper(self, name: str) -> Any:
        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            self._activations[name] = output
            # Downstream in-place ReLUs would overwrite the kept tensor; they get a copy instead.
            return output.clone()

        return keep

    def __exit__(self, *exc_info: Any) -> None:
        self._activations.clear()  # drop the graph they hold
        super().__exit__(*exc_info)

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._activations.clear()
        x = x.clone().requires_grad_(True)  # so activations need grad even in a frozen model
        score = self.model(x).float().gather(1, targets[:, None]).sum()
        missing = [name for name in self.layers if name not in self._activations]
        if missing:
            raise BadInputError(
                f"layer {missing[0]} is not used by the model's forward pass; "
                "choose another --layer"
            )
        acts = [self._activations[name] for name in self.layers]
        grads = torch.autograd.grad(score, acts)
        cams = [self._cam(a, g, x.shape[-2:]) for a, g in zip(acts, grads)]
        return torch.stack(cams).mean(dim=0)

    @staticmethod
    def _cam(activation: torch.Tensor, grad: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if activation.dim() != 4:
            raise BadInputError(
                f"Grad-CAM needs a layer with N x C x H x W output, got shape "
                f"{tuple(activation.shape)}; choose another --layer"
            )
        weights = grad.float().mean(dim=(2, 3), keepdim=True)  # alpha_k: global-average gradient
        cam = F.relu((weights * activation.float()).sum(dim=1, keepdim=True))
        return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)

METHODS: dict[str, type[SaliencyMethod]] = {
    "gradient": Gradient,
    "smoothgrad": SmoothGrad,
    "gradcam": GradCAM,
    "integrated": IntegratedGradients,
}


@dataclass
class SaliencyResult:
    """Maps and the predictions they explain, one row per input image."""

    maps: np.ndarray  # float32 N x H x W in [0, 1], each divided by its own max
    raw: np.ndarray  # float32 N x H x W, the method's unnormalised output
    predicted: np.ndarray  # int64 N, argmax class
    probabilities: (
        np.ndarray
    )  # float32 N x K, softmax of the logits (the mean over `explain`'s tta views)
    targets: np.ndarray  # int64 N, the class each map explains
    method: str
    # integrated only: float32 N x H x W, the attributions with their signs (raw is their
    # magnitude); each map sums to the target's logit minus the featureless face's. None otherwise.
    signed: np.ndarray | None = None
    # integrated only: float32 N, the target's logit at the face minus at the featureless face.
    # `signed` sums to it up to the path's discretisation; a far-off sum asks for more steps.
    logit_rise: np.ndarray | None = None


def explain(
    model: nn.Module,
    images01: torch.Tensor,
    method: str = "gradient",
    target: str | int = "predicted",
    labels: torch.Tensor | None = None,
    *,
    layer: str | None = None,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    steps: int = 32,
    classes: Sequence[str] = CLASSES,
    tta: str = "none",
) -> SaliencyResult:
    """Saliency maps of `images01` (N x 1 x H x W in [0, 1]) for the target class of each image.

    `target`: "predicted", "true" (needs `labels`, N class indices), a class name from
    `classes`, or a class index. `layer` is for gradcam only (default: the last conv block);
    `samples`, `noise` (pixel units) and `seed` are for smoothgrad only, `steps` (points on the
    path from the baseline) for integrated only. `tta` (evaluate.TTA_MODES) sets the views whose
    mean probabilities are reported and name the predicted class, so a model whose file asks for
    crops predicts here what `eval` and `predict` say; the map is of the face itself.
    """
    check_method(method, layer)
    if images01.dim() != 4 or images01.shape[1] != 1:
        raise BadInputError(
            f"images must be N x 1 x H x W grayscale, got shape {tuple(images01.shape)}"
        )
    probabilities = predict_probabilities(model, images01, tta=tta)
    predicted = probabilities.argmax(dim=1)
    targets = resolve_targets(target, predicted, labels, classes)
    options: dict[str, dict[str, Any]] = {
        "gradcam": {"layer": layer},
        "integrated": {"steps": steps},
        "smoothgrad": {"samples": samples, "noise": noise, "seed": seed},
    }
    with METHODS[method](model, **options.get(method, {})) as saliency:
        arrays = saliency.results(images01, targets)
    return SaliencyResult(
        maps=normalize_maps(arrays["raw"]),
        predicted=predicted.numpy(),
        probabilities=probabilities.numpy(),
        targets=targets.numpy(),
        method=method,
        **arrays,
    )


def check_method(method: str, layer: str | None = None, steps: int | None = None) -> None:
    """Refuse an unknown method, or an option of another method (--layer, --steps),
    before any work."""
    if method not in METHODS:
        raise BadInputError(
            f"unknown saliency method {method!r}; choose one of: {', '.join(METHODS)}"
        )
    if layer is not None and method != "gradcam":
        raise BadInputError(
            f"--layer applies to the gradcam method only, not {method}; drop --layer"
        )
    if steps is not None and method != "integrated":
        raise BadInputError(
            f"--steps applies to the integrated method only, not {method}; drop --steps"
        )
    if steps is not None:
        check_steps(steps)


def check_steps(steps: int) -> None:
    if steps < 1:
        raise BadInputError(f"--steps {steps}: must be at least 1")


def predict_probabilities(
    model: nn.Module, images01: torch.Tensor, batch_size: int = 256, tta: str = "none"
) -> torch.Tensor:
    """Softmax class probabilities (float32, CPU) with the model in eval mode, mode restored:
    the mean over the views of `tta` (evaluate.tta_views), as `eval` averages them.

    In batches: a thousand faces at once through a wide branch would hold gigabytes of activations.
    """
    check_tta(tta)
    with eval_mode(model), torch.no_grad():
        # max(..., 1): no faces still make one (empty) pass, which gives the classes' width.
        probabilities = [
            tta_logits(
                model, images01[i : i + batch_size].to(*model_placement(model)), tta
            ).softmax(1)
            for i in range(0, max(len(images01), 1), batch_size)
        ]
    return torch.cat(probabilities).cpu()


def resolve_targets(
    target: str | int, predicted: torch.Tensor, labels: torch.Tensor | None, classes: Sequence[str]
) -> torch.Tensor:
    """The class index each map explains, one per image (int64, CPU)."""
    n = len(predicted)
    if isinstance(target, str) and target.isdigit():
        target = int(target)  # "3" from a command line means class 3
    if isinstance(target, int):
        if not 0 <= target < len(classes):
            raise BadInputError(
                f"target class {target}: must be 0..{len(classes) - 1} ({', '.join(classes)})"
            )
        return torch.full((n,), target, dtype=torch.int64)
    if target == "predicted":
        return predicted.to(torch.int64).cpu()
    if target == "true":
        if labels is None:
            raise BadInputError(
                "target 'true' needs the images' labels: pass --data and --index, "
                "or name a class with --target (e.g. --target happy)"
            )
        labels = torch.as_tensor(labels, dtype=torch.int64).flatten().cpu()
        if len(labels) != n or labels.min() < 0 or labels.max() >= len(classes):
            given = labels.tolist()[:8]
            raise BadInputError(
                f"need {n} labels in 0..{len(classes) - 1} for target 'true', got {given}"
            )
        return labels
    if target not in classes:
        raise BadInputError(
            f"unknown target {target!r}; use predicted, true, a class index, "
            f"or one of: {', '.join(classes)}"
        )
    return torch.full((n,), list(classes).index(target), dtype=torch.int64)


def normalize_maps(raw: np.ndarray) -> np.ndarray:
    """Divide each map by its own max (an all-zero map stays zero), clipped to [0, 1]."""
    peak = raw.reshape(len(raw), -1).max(axis=1).reshape(-1, *([1] * (raw.ndim - 1)))
    return np.clip(raw / np.where(peak > 0, peak, 1.0), 0.0, 1.0).astype(np.float32)


def default_cam_layers(model: nn.Module) -> list[str]:
    """Full module names of the last conv block of each branch of `model`."""
    branches = getattr(model, "branches", None)
    if isinstance(branches, nn.ModuleList):
        return [
            f"branches.{i}.{name}"
            for i, branch in enumerate(branches)
            for name in default_cam_layers(branch)
        ]
    prefix, backbone = (
        ("backbone.", model.backbone) if isinstance(model, FERClassifier) else ("", model)
    )
    if isinstance(
        getattr(backbone, "cam_layer", None), str
    ):  # a backbone that names its last block (DeXpression)
        return [prefix + str(backbone.cam_layer)]
    modules = list(backbone.named_modules())
    convs = [i for i, (_, module) in enumerate(modules) if isinstance(module, nn.Conv2d)]
    if not convs:
        raise BadInputError(
            f"{type(backbone).__name__} has no Conv2d layer for Grad-CAM; pass --layer"
        )
    last = convs[-1]
    # Grad-CAM weighs rectified maps: take the activation that follows the conv when there is one.
    if last + 1 < len(modules) and isinstance(modules[last + 1][1], _ACTIVATIONS):
        last += 1
    return [prefix + modules[last][0]]
