"""`Stride2Transposed`: the conv decoders' 3x3 stride-2 transposed convolutions, with a faster CPU
path than torch's layer.

Forward. A transposed convolution is one matrix multiply, every input pixel's channels times the
kernel (C_in x 9 C_out: nine output taps per pixel), plus a scatter that adds each tap into the
output pixel it lands on (`scatter`). oneDNN's transposed kernels are far from their arithmetic on
two kinds of these layers, and there the forward pass is the matmul and the scatter (`_matmul_wins`;
forward alone, batch 256, two threads, on an AMD EPYC with AVX-512):

- one output channel (the decoders' last layer, 16 x 14 x 14 -> 1 x 28 x 28 in the report's
  network): 0.59 ms against oneDNN's 2.50 ms (1.05 ms while its product was a BLAS matmul: `_taps`);
- a 3 x 3 input map (the decoders' first, 3 x 3 -> 7 x 7): 0.56 ms against 2.22 ms at 32 channels.

At 7 x 7 -> 14 x 14 with 16 or more output channels the scatter costs more than the matmul saves
(1.28 ms against 1.16 ms), so there the forward pass is torch's kernel.

Backward, for every layer. The input's gradient of a transposed convolution is an ordinary strided
convolution of the output's gradient with the same weights (`conv2d(g, w)`), and the weights'
gradient is that convolution's weight gradient. oneDNN's ordinary convolutions are fast at these
shapes, faster than torch's own transposed backward (the weight and bias gradients of the report's
last layer 0.31 ms there, the weight gradient here 0.12 ms) and than this layer's first backward,
the matmul path's adjoint (an im2col of the output's gradient, 0.26 ms, then two matrix multiplies).

Whole layers, forward + backward, one thread (`benchmarks/transposed_layers.py`), torch's layer against
this one: the report's first 4.73 -> 3.17 ms, its second 6.59 -> 6.36 ms, its last 6.64 -> 2.41 ms.
A training step of the report's network ran 1.06-1.13x faster than with the matmul adjoint backward
(2026-11-29; BENCHMARKS.md, "Transposed convolutions as matrix multiplies" and the sections after it,
with the Intel (AMX) and AVX2-only CPUs' figures of the forward rule). Rerun the benchmark to check
the rule on another CPU. Outputs and gradients equal torch's to float rounding
(tests/unit/training/test_transposed.py). Everything this path does not cover (CUDA, the fused fold
step's vmap, autocast, an explicit output size) runs torch's layer. The module subclasses
`nn.ConvTranspose2d` with the same parameters, so state dicts, checkpoints and `isinstance` checks
see torch's layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.training.kinds.base import hand_written_cpu_ok

KERNEL, STRIDE = 3, 2
TAPS = KERNEL * KERNEL


def _landing(tap: int, padding: int, windows: int, size: int) -> tuple[int, int, int]:
    """The windows i0 <= i < i1 whose tap `tap` lands inside an output of `size` pixels (at
    o = 2i + tap - padding), and where the first one lands."""
    first = max(0, (padding - tap + 1) // 2)
    end = min(windows, (size - 1 + padding - tap) // 2 + 1)
    return first, end, STRIDE * first + tap - padding


def _tap_slices(padding: int, h: int, w: int, out_h: int, out_w: int):
    """For each tap k = 3 * row + column: (k, the windows' slice, the output pixels' slice)."""
    for row in range(KERNEL):
        i0, i1, o0 = _landing(row, padding, h, out_h)
        for column in range(KERNEL):
            j0, j1, q0 = _landing(column, padding, w, out_w)
            if i1 > i0 and j1 > j0:
                yield (KERNEL * row + column, (slice(i0, i1), slice(j0, j1)),
                       (slice(o0, o0 + STRIDE * (i1 - i0) - 1, STRIDE),
                        slice(q0, q0 + STRIDE * (j1 - j0) - 1, STRIDE)))


def scatter(taps: torch.Tensor, padding: int, out_h: int, out_w: int) -> torch.Tensor:
    """[N, h, w, 9, C] -> [N, C, out_h, out_w] (channels-last): adds every tap into the output pixel
    it lands on."""
    n, h, w, _, c = taps.shape
    # The map itself, not a permuted view of an NHWC tensor: a custom Function's view output could
    # not be modified in place (an in-place ReLU after it, say).
    out = torch.empty((n, c, out_h, out_w), dtype=taps.dtype, device=taps.device,
                      memory_format=torch.channels_last).zero_()
    rows = out.permute(0, 2, 3, 1)  # [N, out_h, out_w, C], a view to write through
    for k, (wi, wj), (oi, oj) in _tap_slices(padding, h, w, out_h, out_w):
        # add_ on the view: `rows[...] += t` would also copy the view back onto itself (__setitem__).
        rows[:, oi, oj].add_(taps[:, wi, wj, k])
    return out


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _as_channels_last(t: torch.Tensor) -> torch.Tensor:
    """`t` with channels-last strides. oneDNN picks a convolution's layout from its input's strides,
    and the gradient of a one-channel map (the last layer's, from the loss) arrives with NCHW strides:
    the same bytes, but they sent the layer's backward to NCHW kernels and copies, 3.9 ms against
    0.7 ms (batch 256). One channel: the same bytes given channels-last strides, no copy."""
    n, c, h, w = t.shape
    if c == 1 and t.is_contiguous():
        return t.as_strided(t.shape, (h * w, 1, w, 1))
    return t.contiguous(memory_format=torch.channels_last)


def _kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """[C_in, C_out, 3, 3] -> [C_in, 9 * C_out], taps major, channels minor (as `scatter` reads them)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], TAPS * weight.shape[1])


def _taps(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Every input pixel's channels times the kernel matrix: [N * h * w, 9 * C_out], pixels major.

    With one output channel the product has nine columns, a shape the BLAS matmul runs far below
    its arithmetic: the report's last layer (256 x 14 x 14 pixels, 16 -> 9) took 0.73 ms there and
    0.17 ms as oneDNN's 1 x 1 convolution of the channels-last map, whose output has the same bytes
    (two threads, AMD EPYC with AVX-512; 4.2-4.6x at 16 and 32 input channels, one thread or two).
    With more output channels the two were within 0.7-1.1x at a 3 x 3 map, so the matmul stays."""
    n, c_in, h, w = x.shape
    kernel = _kernel_matrix(weight)
    if weight.shape[1] == 1 and _is_channels_last(x):
        taps = F.conv2d(x, kernel.t().reshape(kernel.shape[1], c_in, 1, 1))
        return taps.permute(0, 2, 3, 1).reshape(n * h * w, kernel.shape[1])  # a view: channels-last
    return x.permute(0, 2, 3, 1).reshape(n * h * w, c_in) @ kernel  # a view of x when channels-last


class _Stride2Transposed(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b, stride=2, padding, output_padding) for a 3x3 kernel; the forward
    pass as a matmul and a scatter when `matmul`, else torch's kernel; the backward pass as ordinary
    convolutions either way (the module docstring)."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: int, output_padding: int, matmul: bool) -> torch.Tensor:
        if not matmul:
            return F.conv_transpose2d(x, weight, bias, stride=STRIDE, padding=padding,
                                      output_padding=output_padding)
        n, c_in, h, w = x.shape
        out_h, out_w = (STRIDE * (h - 1) - 2 * padding + KERNEL + output_padding,
                        STRIDE * (w - 1) - 2 * padding + KERNEL + output_padding)
        taps = _taps(x, weight).view(n, h, w, TAPS, weight.shape[1])
        y = scatter(taps, padding, out_h, out_w)
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        return y

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG004 (torch's signature)
        x, weight, bias, padding, _, _ = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        if _is_channels_last(x):
            grad_y = _as_channels_last(grad_y)
        grad_x = grad_w = grad_b = None
        # <conv_transpose2d(x, w), g> = <x, conv2d(g, w)>: the adjoint is the ordinary convolution of g,
        # x's size whatever the output padding: floor((out_h + 2 padding - 3) / 2) + 1 = h.
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad_y, weight, stride=STRIDE, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(grad_y, weight.shape, x, stride=STRIDE, padding=ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _matmul_wins(x: torch.Tensor, out_channels: int) -> bool:
    """Where the matmul forward pass measured faster than oneDNN's (the module docstring)."""
    return out_channels == 1 or x.shape[-2] * x.shape[-1] <= 9


class Stride2Transposed(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding, output_padding)`; on CPU
    tensors a matrix multiply and a scatter forward where that measures faster, and ordinary
    convolutions backward."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int = 0, output_padding: int = 0):
        super().__init__(in_channels, out_channels, KERNEL, stride=STRIDE, padding=padding,
                         output_padding=output_padding)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or x.dim() != 4 or not hand_written_cpu_ok(x, self.weight):
            return super().forward(x, output_size)
        return _Stride2Transposed.apply(x, self.weight, self.bias, self.padding[0], self.output_padding[0],
                                        _matmul_wins(x, self.out_channels))


def with_torch_layers(model: nn.Module) -> nn.Module:
    """`model` (in place) with every `Stride2Transposed` swapped for torch's `nn.ConvTranspose2d`
    holding the same parameters: the network as a plain torch program builds it (the benchmarks'
    baselines)."""
    for name, child in list(model.named_children()):
        if isinstance(child, Stride2Transposed):
            plain = nn.ConvTranspose2d(child.in_channels, child.out_channels, KERNEL, stride=STRIDE,
                                       padding=child.padding, output_padding=child.output_padding,
                                       bias=child.bias is not None, device=child.weight.device,
                                       dtype=child.weight.dtype)
            plain.load_state_dict(child.state_dict())
            setattr(model, name, plain)
        else:
            with_torch_layers(child)
    return model
