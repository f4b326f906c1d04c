"""Batched augmentation on tensors, on the training device.

    aug = Augment(AugmentConfig(), generator=torch.Generator().manual_seed(0))
    x = aug(x)    # x: N x 1 x 48 x 48 float in [0, 1], same shape out

One affine matrix per image, drawn in one call for the whole batch, and one `grid_sample` per
batch: no per-image Python, no PIL, so augmentation costs a few percent of a training step
instead of dominating it. The report's recipe is the default: horizontal flip, rotation within
±5°, shift within ±10 % and zoom within ±10 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate_degrees: float = 5.0
    shift: float = 0.10  # fraction of the image side
    zoom: float = 0.10  # scale drawn from [1 - zoom, 1 + zoom]
    erase: float = 0.0  # probability that an image gets one rectangle filled with noise
    erase_area: tuple[float, float] = (0.02, 0.20)  # of the image, drawn uniformly
    erase_aspect: tuple[float, float] = (0.3, 3.3)  # height / width, drawn log-uniformly


PRESETS = {
    "report": AugmentConfig(),
    "strong": AugmentConfig(rotate_degrees=10.0, shift=0.15, zoom=0.15, erase=0.5),
}


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample N x C x H x W images through N x 2 x 3 affine matrices in `affine_grid`'s
    normalised coordinates (output to input), bilinear; "border" repeats the edge pixels, like
    Keras' fill_mode="nearest" the report used. Training and test-time views both go through it."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def zoom_about_centre(
    images: torch.Tensor, zoom: float, shift: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """The images zoomed about their centre (`zoom` > 1 zooms in: a centred crop of 1/zoom of the
    side, scaled back up) and moved by `shift` = (dx, dy) whole pixels."""
    side = images.shape[-1]
    # Normalised coordinates span 2 units per side: a pixel is 2 / side of them.
    theta = torch.tensor(
        [[1 / zoom, 0.0, 2 * shift[0] / side], [0.0, 1 / zoom, 2 * shift[1] / side]],
        device=images.device,
    )
    return warp(images, theta.expand(len(images), 2, 3))


class Augment:
    """Random flips and affine transforms of a batch, reproducible through `generator`."""

    def __init__(self, config: AugmentConfig, generator: torch.Generator | None = None):
        self.config = config
        self.generator = generator

    def _uniform(self, n: int, bound: float, device: torch.device) -> torch.Tensor:
        # Drawn on the CPU generator so the same seed gives the same batch on any device.
        draw = torch.rand(n, generator=self.generator) * 2 - 1
        return (draw * bound).to(device)

    def matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """N x 2 x 3 affine matrices in `affine_grid`'s normalised coordinates."""
        cfg = self.config
        angle = self._uniform(n, math.radians(cfg.rotate_degrees), device)
        scale = 1 + self._uniform(n, cfg.zoom, device)
        # affine_grid maps output to input coordinates, so dividing by the scale zooms in.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        flip = torch.ones(n, device=device)
        if cfg.flip:
            flip = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0).to(device)
        # Normalised coordinates span 2 units per side, so a shift of 10 % is 0.2 of them.
        tx = self._uniform(n, 2 * cfg.shift, device)
        ty = self._uniform(n, 2 * cfg.shift, device)
        row0 = torch.stack([cos * flip, -sin, tx], dim=1)
        row1 = torch.stack([sin * flip, cos, ty], dim=1)
        return torch.stack([row0, row1], dim=1)

    def erase_masks(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """N x 1 x H x W booleans, True inside each image's erased rectangle (none for some
        images)."""
        cfg = self.config
        lo, hi = cfg.erase_area
        area = (lo + torch.rand(n, generator=self.generator) * (hi - lo)) * height * width
        log_lo, log_hi = math.log(cfg.erase_aspect[0]), math.log(cfg.erase_aspect[1])
        aspect = torch.exp(log_lo + torch.rand(n, generator=self.generator) * (log_hi - log_lo))
        h = (area * aspect).sqrt().clamp(1, height)
        w = (area / aspect).sqrt().clamp(1, width)
        top = torch.rand(n, generator=self.generator) * (height - h)
        left = torch.rand(n, generator=self.generator) * (width - w)
        chosen = torch.rand(n, generator=self.generator) < cfg.erase
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        inside = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + w).view(-1, 1, 1))
        )
        return (inside & chosen.view(-1, 1, 1)).unsqueeze(1).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = warp(images, self.matrices(images.shape[0], images.device))
        if self.config.erase > 0:
            n, _, height, width = images.shape
            mask = self.erase_masks(n, height, width, images.device)
            # Uniform noise in [0, 1] pixels, so erased images keep the data's range.
            noise = torch.rand(images.shape, generator=self.generator).to(
                images.device, images.dtype
            )
            out = torch.where(mask, noise, out)
        return out
