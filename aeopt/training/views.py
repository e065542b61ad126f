"""Strong views of a whole batch of images, as tensor ops on its device (no PIL, no per-image
transforms): FixMatch's strong augmentation (aeopt.training.consistency) and the two views of the
contrastive term (aeopt.training.contrastive).

Imports nothing of aeopt's, so the engine can use it without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class StrongSettings(Protocol):
    shift: int
    rotate: float
    cutout: int
    jitter: float


@dataclass(frozen=True)
class StrongViews:
    """The strong view's settings alone (ConsistencySettings carries the same fields)."""

    shift: int = 4  # pixels
    rotate: float = 15.0  # degrees
    cutout: int = 12  # side of the grey square (pixels; 0: none)
    jitter: float = 0.4  # contrast in [1 - j, 1 + j], brightness in [-j / 2, j / 2]


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device, generator=gen)


def strong_augment(x: torch.Tensor, gen: torch.Generator, s: StrongSettings, *,
                   flip: bool = True, crop: float = 0.0) -> torch.Tensor:
    """A strong view of a whole batch [n, c, h, w] in [0, 1], on its device: flips (where `flip`:
    not for digits, whose mirror images are other digits or none), one affine warp
    per image (rotation up to `rotate` degrees, shift up to `shift` pixels, scale 0.9-1.1), contrast
    and brightness noise, and a grey cutout square at a random place (DeVries & Taylor 2017).

    `crop` > 0: SimCLR's random resized crop in the same warp: a square of area uniform in
    [crop, 1] of the image, at a random place inside it, scaled up to the full size (in place of
    the 0.9-1.1 scale)."""
    n, _, h, w = x.shape
    dev = x.device
    if flip:
        mirror = torch.rand(n, device=dev, generator=gen) < 0.5
        x = torch.where(mirror.view(n, 1, 1, 1), x.flip(-1), x)
    angle = _uniform(n, -s.rotate, s.rotate, gen, dev) * math.pi / 180
    scale = _uniform(n, 0.9, 1.1, gen, dev)
    # affine_grid works in [-1, 1] coordinates: a shift of k pixels is 2k / size.
    tx = _uniform(n, -s.shift, s.shift, gen, dev) * 2 / w
    ty = _uniform(n, -s.shift, s.shift, gen, dev) * 2 / h
    if crop > 0:
        # The sampled square's side (in units of the image side) is sqrt(area); its centre may move
        # by up to 1 - side in grid coordinates and stay inside the image.
        scale = 1 / _uniform(n, crop, 1.0, gen, dev).sqrt()
        room = 1 - 1 / scale
        tx = tx + room * _uniform(n, -1.0, 1.0, gen, dev)
        ty = ty + room * _uniform(n, -1.0, 1.0, gen, dev)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    if s.jitter > 0:
        contrast = _uniform(n, 1 - s.jitter, 1 + s.jitter, gen, dev).view(n, 1, 1, 1)
        bright = _uniform(n, -s.jitter / 2, s.jitter / 2, gen, dev).view(n, 1, 1, 1)
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    if s.cutout > 0:
        cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=gen)
        cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=gen)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        half = s.cutout // 2
        square = ((rows - cy).abs() <= half) & ((cols - cx).abs() <= half)  # [n, h, w]
        x = torch.where(square.unsqueeze(1), torch.full_like(x, 0.5), x)
    return x
