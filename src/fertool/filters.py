"""What a layer's filters respond to: layer listing, activation maps, and feature visualisation.

    from fertool.filters import activation_maps, list_layers, visualize_filters
    from fertool.models import load_model

    model, meta = load_model("branch.safetensors")
    [layer.name for layer in list_layers(model)]    # "backbone.stem.0", ..., "backbone.featex2"
    vis = visualize_filters(model, "featex1", filters=range(16))
    vis.images                                      # 16 x 48 x 48 in [0, 1], one per filter
    maps = activation_maps(model, "featex1", image01)  # 272 x 12 x 12 for one 1 x 1 x 48 x 48 face

Layer names are those of `model.named_modules()`; the `backbone.` part may be left out
("featex1" is "backbone.featex1", "branches.0.featex1" is "branches.0.backbone.featex1").

`visualize_filters` follows lucent (optvis: render, param/spatial, transform) cut down to a
1-channel 48 px model: 1/f-scaled Fourier parameters (smooth shapes, not pixel noise), a sigmoid
into [0, 1], and a random shift/scale/rotation before every step (patterns that work anywhere in
the frame). All filters ascend together, one image each, and each image computes only its own
filter (`selected_channels`). Defaults (48 steps, lr 0.08): 64 DeXpression featex1 filters in
~10 s, featex2 in ~13 s, on one core of a busy 2-core CPU. Dead units (a trained ReLU that is
off for every input) keep `objective_end` 0: pass `inactive=objective_end <= 0` to
`plots.filters_figure`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fertool.constants import IMAGE_SIZE
from fertool.errors import BadInputError
from fertool.models import FeatEx
from fertool.runtime import eval_mode, model_placement

# Elementwise layers repeat the map of the layer before them; listing them would only add noise.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output is an N x C x H x W map, with its size for a 48 x 48 input."""

    name: str  # full name, as in model.named_modules()
    type: str  # class name: Conv2d, FeatEx, MaxPool2d, ...
    channels: int
    height: int
    width: int

    @property
    def short_name(self) -> str:
        return short_name(self.name)


@dataclass
class FilterVisualization:
    """One optimised image per filter, and how much it raised the filter's mean activation."""

    layer: str
    filters: list[int]
    images: np.ndarray  # float32 F x 48 x 48 in [0, 1]
    objective_start: np.ndarray  # float32 F: mean activation for the starting noise
    objective_end: np.ndarray  # float32 F: mean activation for the final image
    seconds: float


class _Stop(Exception):
    """Raised from a hook once the wanted tensor is kept: the rest of the model is not needed."""


class LayerCapture:
    """Context manager that hooks one layer and removes the hook on exit, even on error.

    with LayerCapture(model, "featex1") as capture:
        # the layer's output (its input with stop="input"); no more is run
        maps = capture.run(images01)
    """

    def __init__(self, model: nn.Module, layer: str, stop: str = "output"):
        if stop not in ("input", "output"):
            raise ValueError(f"stop must be 'input' or 'output', not {stop!r}")
        self.model = model
        self.info = find_layer(model, layer)
        self.name = self.info.name
        self.module = dict(model.named_modules())[self.name]
        self.stop = stop
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._kept: torch.Tensor | None = None

    def __enter__(self) -> "LayerCapture":
        self._mode = eval_mode(self.model)
        self._mode.__enter__()
        if self.stop == "input":
            self._handle = self.module.register_forward_pre_hook(
                lambda module, args: self._keep(args[0])
            )
        else:
            self._handle = self.module.register_forward_hook(
                lambda module, args, output: self._keep(output)
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._kept = None
        self._mode.__exit__(None, None, None)

    def _keep(self, tensor: torch.Tensor) -> None:
        self._kept = tensor
        raise _Stop  # also stops a following in-place ReLU from clipping a conv's output

    def run(self, images01: torch.Tensor) -> torch.Tensor:
        """The layer's output (or input) for `images01` (N x 1 x 48 x 48 in [0, 1])."""
        self._kept = None
        with contextlib.suppress(_Stop):
            self.model(images01)
        if self._kept is None:
            raise BadInputError(
                f"layer {self.name} is not used by the model's forward pass; choose another layer"
            )
        kept, self._kept = self._kept, None
        return kept


def short_name(name: str) -> str:
    """A module name without its `backbone.` part: "backbone.featex1" -> "featex1"."""
    return name.replace(".backbone.", ".").removeprefix("backbone.")


def list_layers(model: nn.Module, image_size: int = IMAGE_SIZE) -> list[LayerInfo]:
    """Every layer of `model` whose output is a map (N x C x H x W), in forward order."""
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    names = {module: name for name, module in model.named_modules()}
    handles = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and names[module] not in shapes:
            shapes[names[module]] = (type(module).__name__, tuple(output.shape[1:]))

    try:
        for module, name in names.items():
            if name and not isinstance(module, _ELEMENTWISE):
                handles.append(module.register_forward_hook(record))
        with eval_mode(model), torch.no_grad():
            device, dtype = model_placement(model)
            model(torch.zeros(1, 1, image_size, image_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return [LayerInfo(name, kind, c, h, w) for name, (kind, (c, h, w)) in shapes.items()]


def resolve_layer(model: nn.Module, layer: str) -> str:
    """The full module name of `layer` (a full or short name); unknown names raise BadInputError."""
    return find_layer(model, layer).name


def find_layer(model: nn.Module, layer: str) -> LayerInfo:
    """The `LayerInfo` of `layer` (a full or short name); unknown names raise BadInputError."""
    layers = list_layers(model)
    for info in layers:
        if layer in (info.name, info.short_name):
            return info
    # A name that ends other layers' names is the first of them: in an ensemble, `featex1` is the
    # first branch's (`branches.0.featex1`), so the same --layer works for branches and ensembles.
    for info in layers:
        if info.short_name.endswith("." + layer):
            return info
    # Blocks first (featex1 before featex1.conv_path.0): those are what people look for.
    by_depth = sorted(layers, key=lambda info: info.short_name.count("."))
    shown = ", ".join(info.short_name for info in by_depth[:8])
    more = f" and {len(layers) - 8} more" if len(layers) > 8 else ""
    raise BadInputError(
        f"unknown layer {layer!r}; layers are {shown}{more} (see all with --list-layers)"
    )


def activation_maps(model: nn.Module, layer: str, image01: torch.Tensor) -> np.ndarray:
    """The layer's output for one image (1 x 1 x 48 x 48 in [0, 1]): float32 C x h x w.

    For a conv followed by a ReLU this is the conv's output, before the ReLU (negative values too).
    """
    if image01.dim() == 2:
        image01 = image01[None, None]
    if image01.shape[0] != 1 or image01.dim() != 4:
        raise BadInputError(
            f"activation maps take one image, 1 x 1 x H x W; got shape {tuple(image01.shape)}"
        )
    with LayerCapture(model, layer) as capture, torch.no_grad():
        output = capture.run(image01.to(*model_placement(model)))
    return output[0].float().cpu().numpy()


class FourierImage(nn.Module):
    """A batch of 1-channel images parametrised by 1/f-scaled Fourier coefficients (lucent's
    fft_image).

    Adam moves every coefficient by about the same amount; scaled by 1/frequency, those moves
    give the image a natural-image spectrum, so ascent grows shapes instead of the pixel noise
    that plain pixel ascent produces.
    """

    scale: torch.Tensor  # a buffer: 1/f weights of the coefficients

    def __init__(
        self,
        batch: int,
        sd: float = 0.01,
        size: int = IMAGE_SIZE,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy)
        # Lucent's scale; the floor at 1/size keeps the constant (DC) term finite.
        scale = 1.0 / frequency.clamp_min(1.0 / size) ** decay_power
        self.register_buffer("scale", scale / scale.mean())  # mean 1: the same `sd` at any size
        self.size = size
        self.spectrum = nn.Parameter(
            torch.randn(batch, 1, size, size // 2 + 1, 2, generator=generator) * sd
        )

    def forward(self) -> torch.Tensor:
        """Pixels in [0, 1], batch x 1 x size x size."""
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        logits = torch.fft.irfft2(coefficients, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(logits)


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient still reaches an image whose units are all off (lucid's redirected ReLU).

    A plain ReLU passes no gradient to an image whose target unit is negative everywhere, so a
    filter that is off for the starting noise would never move. For such an image, pass the
    gradient on except where it would push an already negative input lower.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> torch.Tensor:  # Any: saved_tensors is not on FunctionCtx's type
        (x,) = ctx.saved_tensors
        relu_grad = grad * (x > 0)
        # We minimise -objective: grad > 0 means the step would lower x.
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        dead = relu_grad.flatten(1).abs().sum(dim=1) == 0
        return torch.where(dead.view(-1, *([1] * (x.dim() - 1))), redirected, relu_grad)


@contextlib.contextmanager
def redirected_relus(module: nn.Module) -> Iterator[None]:
    """Within the block, every nn.ReLU in `module` uses `_RedirectedReLU`; hooks removed on exit."""
    relus = [child for child in module.modules() if isinstance(child, nn.ReLU)]
    inplace = [relu.inplace for relu in relus]
    handles = []
    try:
        for relu in relus:
            relu.inplace = False  # the hook needs the input as it was before the ReLU
            handles.append(
                relu.register_forward_hook(lambda m, args, out: _RedirectedReLU.apply(args[0]))
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
        for relu, flag in zip(relus, inplace):
            relu.inplace = flag


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    shift: float = 3.0,
    scale: tuple[float, float] = (0.92, 1.08),
    degrees: float = 8.0,
) -> torch.Tensor:
    """Shift each image by up to `shift` px, scale and rotate it a little; size unchanged.

    Lucent's jitter + random_scale + random_rotate in one differentiable resampling, with
    ranges cut down from its 224 px defaults to a 48 px face.
    """
    n, _, height, width = images.shape
    uniform = torch.rand(n, 4, generator=generator).to(images) * 2 - 1  # in [-1, 1)
    zoom = scale[0] + (uniform[:, 0] + 1) / 2 * (scale[1] - scale[0])
    angle = uniform[:, 1] * math.radians(degrees)
    shift_x, shift_y = uniform[:, 2] * 2 * shift / width, uniform[:, 3] * 2 * shift / height
    cos, sin = zoom * torch.cos(angle), zoom * torch.sin(angle)
    theta = torch.stack([cos, -sin, shift_x, sin, cos, shift_y], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Reflection: the border never shows a constant band that the filters could latch onto.
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def visualize_filters(
    model: nn.Module,
    layer: str,
    filters: Sequence[int] | None = None,
    steps: int = 48,
    lr: float = 0.08,
    seed: int = 0,
    transform: bool = True,
    decay_power: float = 1.0,
    start_sd: float = 0.01,
) -> FilterVisualization:
    """For each filter, the 48 x 48 input that maximises its mean activation (gradient ascent).

    `filters` defaults to every channel of the layer. Each step moves all images at once
    (Adam, `lr`) after a random shift/scale/rotation when `transform`; `decay_power` is the 1/f
    exponent of the Fourier parametrisation and `start_sd` the amplitude of the starting noise.
    The model is not changed: gradients are taken with respect to the images only, and every
    hook is removed afterwards. Same arguments, same pictures (the noise is seeded).
    """
    started = time.perf_counter()
    if steps < 0:
        raise BadInputError(f"--steps {steps}: must be 0 or more")
    with (
        torch.inference_mode(False),
        LayerCapture(model, layer, stop="input") as capture,
    ):  # a caller's mode
        chosen = _check_filters(capture, filters)
        device, dtype = model_placement(model)
        generator = torch.Generator().manual_seed(seed)
        image = FourierImage(
            len(chosen), start_sd, decay_power=decay_power, generator=generator
        ).to(device, dtype)
        objective = _filter_objective(capture, torch.tensor(chosen, device=device))
        with torch.no_grad():
            start = objective(image())
        optimizer = torch.optim.Adam(image.parameters(), lr=lr)
        with (
            torch.enable_grad(),
            redirected_relus(capture.module),
        ):  # upstream units are rarely all off
            _ascend(image, objective, optimizer, steps, generator if transform else None)
        with torch.no_grad():
            final = image()
            end = objective(final)
    return FilterVisualization(
        layer=capture.name,
        filters=chosen,
        images=final[:, 0].float().cpu().numpy(),
        objective_start=start.float().cpu().numpy(),
        objective_end=end.float().cpu().numpy(),
        seconds=time.perf_counter() - started,
    )


def _filter_objective(
    capture: LayerCapture, channels: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> per image, the mean over positions of its own filter's output map."""

    def objective(images01: torch.Tensor) -> torch.Tensor:
        return selected_channels(capture.module, capture.run(images01), channels).mean(
            dim=(1, 2, 3)
        )

    return objective


def _ascend(
    image: FourierImage,
    objective: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int,
    generator: torch.Generator | None,
) -> None:
    """`steps` Adam steps that raise every image's objective; random transforms when `generator`."""
    for _ in range(steps):
        x = image()
        if generator is not None:
            x = random_affine(x, generator)
        # autograd.grad, not backward(): nothing lands in the model parameters' .grad.
        (grad,) = torch.autograd.grad(-objective(x).sum(), [image.spectrum])
        image.spectrum.grad = grad
        optimizer.step()


def selected_channels(module: nn.Module, x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """`module(x)[i, channels[i]]` for every image i (N x 1 x h x w), computing little else.

    Each image needs only its own filter, so a conv computes one output channel per image (a
    grouped convolution) instead of all of them: featex1's 3 x 3 conv, 90 % of the cost of an
    ascent step at that layer, becomes 208 times cheaper. Sequentials and FeatEx blocks are
    followed down to their convs; any other module runs in full and its channels are picked.
    """
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        n, c, h, w = x.shape
        bias = None if module.bias is None else module.bias[channels]
        out = F.conv2d(
            x.reshape(1, n * c, h, w),
            module.weight[channels],
            bias,
            module.stride,
            module.padding,
            module.dilation,
            groups=n,
        )
        return out.reshape(n, 1, *out.shape[2:])
    if isinstance(module, nn.Sequential) and len(module) > 0:
        return _selected_sequential(module, x, channels)
    if isinstance(module, FeatEx):  # forward is cat([conv_path(x), pool_path(x)], dim=1)
        return _selected_featex(module, x, channels)
    out = module.forward(x)  # not module(x): the target's own capture hook would stop it
    return out.gather(1, channels.view(-1, 1, 1, 1).expand(-1, 1, *out.shape[2:]))


def _selected_sequential(
    module: nn.Sequential, x: torch.Tensor, channels: torch.Tensor
) -> torch.Tensor:
    children = list(module)
    mixing = [i for i, child in enumerate(children) if not _per_channel(child)]
    last = mixing[-1] if mixing else len(children) - 1
    for child in children[:last]:
        x = child(x)
    out = selected_channels(children[last], x, channels)
    for child in children[last + 1 :]:  # channel by channel: the same on the one channel kept
        if isinstance(child, nn.BatchNorm2d):  # in eval mode a fixed affine map per channel
            assert (
                child.running_var is not None and child.running_mean is not None
            )  # every fertool BN tracks them
            scale = (child.running_var[channels] + child.eps).rsqrt() * child.weight[channels]
            out = (out - child.running_mean[channels].view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1)
            out = out + child.bias[channels].view(-1, 1, 1, 1)
        else:
            out = child(out)
    return out


def _per_channel(module: nn.Module) -> bool:
    """Whether `module` treats each channel on its own (so it can run on a picked channel)."""
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.track_running_stats and module.affine
    return isinstance(module, _ELEMENTWISE)


def _selected_featex(module: FeatEx, x: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    wide = [m for m in module.conv_path.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    in_conv = channels < wide
    parts, order = [], []
    for mask, path, offset in ((in_conv, module.conv_path, 0), (~in_conv, module.pool_path, wide)):
        index = torch.nonzero(mask).flatten()
        if len(index):
            parts.append(selected_channels(path, x[index], channels[index] - offset))
            order.append(index)
    return torch.cat(parts)[torch.argsort(torch.cat(order))]


def _check_filters(capture: LayerCapture, filters: Sequence[int] | None) -> list[int]:
    channels = capture.info.channels
    chosen = list(range(channels)) if filters is None else [int(f) for f in filters]
    if not chosen:
        raise BadInputError(f"no filters chosen for {capture.name}; pass indices 0..{channels - 1}")
    bad = [f for f in chosen if not 0 <= f < channels]
    if bad:
        raise BadInputError(
            f"filter {bad[0]} of {short_name(capture.name)}: out of range; "
            f"it has {channels} filters, 0..{channels - 1}"
        )
    return chosen
