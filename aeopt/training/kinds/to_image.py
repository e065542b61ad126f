"""`ToImage`: the conv decoders' last layer, a 3x3 stride-2 transposed convolution (padding 1,
output padding 1) from C channels at h x w to one channel at 2h x 2w, with a faster CPU path.

oneDNN's transposed convolution with one output channel is its slowest layer in the report's
network: 2.0-2.2 ms forward for a batch of 256 (16 x 14 x 14 -> 1 x 28 x 28) on two threads, and
its weight gradient about 1.2 ms, where the arithmetic needs a few hundredths of that (BENCHMARKS.md,
"Host memory, layout and the optimizer kernel"). The layer is one small matrix multiply, every
input pixel's C channels times the C x 9 kernel (nine output taps per pixel), plus a rearrangement:

- `unpatch` adds each pixel's nine taps into place. With stride 2 every output pixel gets one, two
  or four taps, so four interleaved phases written in place do it (0.24 ms here, where `F.fold`
  takes 0.74 ms).
- `patches` is its adjoint, the 3x3 stride-2 windows of a one-channel image (an im2col of one
  channel, tap-major: 9 contiguous planes, 0.19 ms).

The backward pass is the adjoint's: the output's gradient cut into windows, times the kernel for the
input's gradient, times the input for the kernel's. Forward and backward of the whole layer: 1.7 ms
against torch's 3.3-3.9 ms (two threads); outputs and gradients equal torch's to float rounding
(tests/unit/training/test_to_image.py). Everything this path does not cover (CUDA, the fused fold
step's vmap, autocast, an explicit output size) runs torch's layer: the module subclasses it with
the same parameters, so state dicts, checkpoints and `isinstance` checks see an `nn.ConvTranspose2d`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KERNEL, STRIDE, PADDING = 3, 2, 1
TAPS = KERNEL * KERNEL


def patches(image: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] -> [9, N, h, w] with h, w = ceil(H/2), ceil(W/2): the 3x3 stride-2 windows of
    the zero-padded image, tap k = 3 * row + column first.

    Tap-major, because each tap is then one strided slice of the image copied into a contiguous
    plane (0.19 ms for a batch of 256 here, against 0.55 ms for the pixel-major copy of an unfold)."""
    n, _, height, width = image.shape
    h, w = (height + 1) // 2, (width + 1) // 2
    padded = F.pad(image.reshape(n, height, width), (PADDING, PADDING, PADDING, PADDING))
    return torch.stack([padded[:, row:row + STRIDE * h - 1:STRIDE, column:column + STRIDE * w - 1:STRIDE]
                        for row in range(KERNEL) for column in range(KERNEL)])


def unpatch(taps: torch.Tensor) -> torch.Tensor:
    """[9, N, h, w] -> [N, 1, 2h, 2w]: adds every tap into the pixel its window covers (the adjoint
    of `patches` for even H and W; for odd ones, crop the last row and column).

    Window (i, j) covers output rows 2i-1, 2i, 2i+1 with its taps' rows 0, 1, 2. So an even row 2i
    gets row 1 of window i, an odd row 2i+1 row 2 of window i and row 0 of window i+1 (none past
    the last window); the same for columns. Each of the four interleaved phases is written in place."""
    _, n, h, w = taps.shape
    out = taps.new_empty(n, h, 2, w, 2)  # [N, h, row parity, w, column parity]
    out[:, :, 0, :, 0] = taps[4]
    even_odd = out[:, :, 0, :, 1]
    even_odd.copy_(taps[5])
    even_odd[:, :, :-1] += taps[3, :, :, 1:]
    odd_even = out[:, :, 1, :, 0]
    odd_even.copy_(taps[7])
    odd_even[:, :-1] += taps[1, :, 1:]
    odd_odd = out[:, :, 1, :, 1]
    odd_odd.copy_(taps[8])
    odd_odd[:, :, :-1] += taps[6, :, :, 1:]
    odd_odd[:, :-1] += taps[2, :, 1:]
    odd_odd[:, :-1, :-1] += taps[0, :, 1:, 1:]
    return out.view(n, 1, 2 * h, 2 * w)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] -> [N, h, w, C] (a view when x is channels-last)."""
    return x.permute(0, 2, 3, 1)


def _as_map(rows: torch.Tensor) -> torch.Tensor:
    """[N, h, w, C] -> [N, C, h, w] in channels-last layout (a view)."""
    return rows.permute(0, 3, 1, 2)


class _ToImage(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b, stride 2, padding 1, output_padding 1) for w: [C, 1, 3, 3]."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        taps = weight.reshape(c, TAPS).T @ _pixels(x).reshape(n * h * w, c).T  # [9, N*h*w]
        y = unpatch(taps.view(TAPS, n, h, w))
        return y if bias is None else y + bias.view(1, 1, 1, 1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG004 (torch's signature)
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        g = patches(grad_y).view(TAPS, n * h * w)  # the adjoint of unpatch
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _as_map((g.T @ weight.reshape(c, TAPS).T).view(n, h, w, c))
        if ctx.needs_input_grad[1]:
            grad_w = (g @ _pixels(x).reshape(n * h * w, c)).T.reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum().view(1)
        return grad_x, grad_w, grad_b


class ToImage(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(in_channels, 1, 3, stride=2, padding=1, output_padding=1)`: C x H x W ->
    1 x 2H x 2W, computed by `_ToImage` on CPU tensors."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels, 1, KERNEL, stride=STRIDE, padding=PADDING, output_padding=1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # inside vmap (the fused fold step)
        # Under autocast torch's kernels handle the dtypes (aeopt autocasts on CUDA only).
        if (x.device.type != "cpu" or output_size is not None or x.dim() != 4
                or wrapped(x) or wrapped(self.weight) or torch.is_autocast_enabled("cpu")):
            return super().forward(x, output_size)
        return _ToImage.apply(x, self.weight, self.bias)


def with_torch_layers(model: nn.Module) -> nn.Module:
    """`model` (in place) with every `ToImage` swapped for torch's `nn.ConvTranspose2d` holding the same
    parameters: the network as a plain torch program would build it (the benchmarks' baselines)."""
    for name, child in list(model.named_children()):
        if isinstance(child, ToImage):
            plain = nn.ConvTranspose2d(child.in_channels, 1, KERNEL, stride=STRIDE, padding=PADDING,
                                       output_padding=1, bias=child.bias is not None,
                                       device=child.weight.device, dtype=child.weight.dtype)
            plain.load_state_dict(child.state_dict())
            setattr(model, name, plain)
        else:
            with_torch_layers(child)
    return model
