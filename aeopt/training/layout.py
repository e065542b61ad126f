"""How a model's tensors are laid out in memory, and which optimizer kernel updates them, per device.

Both are measured on the CPU (BENCHMARKS.md, "Host memory, layout and the optimizer kernel").

- Convolutions on the CPU run in channels-last (NHWC) layout: oneDNN's kernels for these
  small-channel layers, the transposed ones above all, are faster on NHWC tensors. Only the
  convolution weights change layout; the images stay [N, 1, H, W] (with one channel the two
  layouts are the same bytes), state dicts keep their keys, shapes and values, and a checkpoint
  loads into a model of either layout. AEOPT_CHANNELS_LAST=0 keeps torch's default.
- Adam and AdamW use torch's fused kernel, on the CPU as on CUDA (where the classifier's AdamW
  already did): one pass over each parameter instead of a dozen small operations per parameter
  per step. On the CPU it equals the unfused update to within float rounding (3e-8 after 20 steps
  of the report's network).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from aeopt.switches import turned_off

CHANNELS_LAST_ENV = "AEOPT_CHANNELS_LAST"


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() == 4 for m in model.modules())


def channels_last_here(device: torch.device | str) -> bool:
    """Whether models on `device` train in channels-last layout (the CPU, unless turned off)."""
    return torch.device(device).type == "cpu" and not turned_off(CHANNELS_LAST_ENV)


def for_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`model` on `device` in the layout it trains fastest in there (in place, as `Module.to`)."""
    model = model.to(device)
    if channels_last_here(device) and _has_conv(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def fused_optimizer_ok(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused Adam/AdamW kernel may update `params`: all floating point, all on the
    CPU or all on CUDA (the devices the kernel exists for)."""
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"}


def adam(params: Iterable[torch.Tensor], *, decoupled: bool = False, **kwargs) -> torch.optim.Optimizer:
    """`torch.optim.Adam` (`AdamW` when `decoupled`) over `params` on torch's fused kernel where
    `fused_optimizer_ok`: for the optimizers a kind or stage builds itself (the adversarial
    autoencoder's discriminators, the consistency fit), as `make_optimizer` does for the trainers'."""
    params = list(params)
    optimizer = torch.optim.AdamW if decoupled else torch.optim.Adam
    return optimizer(params, fused=fused_optimizer_ok(params) or None, **kwargs)
