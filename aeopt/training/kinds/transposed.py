"""`Stride2Transposed`: the conv decoders' 3x3 stride-2 transposed convolutions, with a faster CPU
path where it measures faster than oneDNN's.

A transposed convolution is one matrix multiply, every input pixel's channels times the kernel
(C_in x 9 C_out: nine output taps per pixel), plus a scatter that adds each tap into the output
pixel it lands on (`scatter`). Its backward pass is the adjoint's: the output's gradient cut into
the same windows (`gather`, an im2col), times the kernel for the input's gradient, times the input
for the kernel's. oneDNN's kernels are far from their arithmetic on two kinds of these layers:

- one output channel (the decoders' last layer, 16 x 14 x 14 -> 1 x 28 x 28 in the report's
  network): forward + backward 1.6 ms here against torch's 3.0 ms, and a whole training step of
  the report's network 1.07x faster;
- a 3 x 3 input map (the decoders' first, 3 x 3 -> 7 x 7): 1.3-1.8x faster at 16 to 128 channels,
  on one thread and on two.

At 7 x 7 -> 14 x 14 with 16 or more output channels the scatter and the gather cost more than the
matmul saves (3.5 ms against 3.0 ms), so there the layer runs torch's kernel: the rule is
`_matmul_wins`. (Measured at batch 256 on two 2-core CPUs, an Intel one with AMX and an AMD EPYC
with AVX2 only; the rule held on both: BENCHMARKS.md, "Transposed convolutions as matrix multiplies",
and `benchmarks/transposed_layers.py` to check another.) Outputs and gradients equal torch's to float rounding
(tests/unit/training/test_transposed.py). Everything the matmul path does not cover (CUDA, the fused
fold step's vmap, autocast, an explicit output size) also runs torch's layer. The module subclasses
`nn.ConvTranspose2d` with the same parameters, so state dicts, checkpoints and `isinstance` checks
see torch's layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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
        rows[:, oi, oj] += taps[:, wi, wj, k]
    return out


def gather(pixels: torch.Tensor, padding: int, h: int, w: int) -> torch.Tensor:
    """[N, out_h, out_w, C] -> [N, h, w, 9, C], the adjoint of `scatter`: each window's taps read back
    (zero where a tap lands outside)."""
    n, out_h, out_w, c = pixels.shape
    windows = pixels.new_zeros(n, h, w, TAPS, c)
    for k, (wi, wj), (oi, oj) in _tap_slices(padding, h, w, out_h, out_w):
        windows[:, wi, wj, k] = pixels[:, oi, oj]
    return windows


def _kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """[C_in, C_out, 3, 3] -> [C_in, 9 * C_out], taps major, channels minor (as `scatter` reads them)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], TAPS * weight.shape[1])


class _Stride2Transposed(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b, stride=2, padding, output_padding) for a 3x3 kernel."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: int, output_padding: int) -> torch.Tensor:
        n, c_in, h, w = x.shape
        out_h, out_w = (STRIDE * (h - 1) - 2 * padding + KERNEL + output_padding,
                        STRIDE * (w - 1) - 2 * padding + KERNEL + output_padding)
        pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in)  # a view when x is channels-last
        taps = (pixels @ _kernel_matrix(weight)).view(n, h, w, TAPS, weight.shape[1])
        y = scatter(taps, padding, out_h, out_w)
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        return y

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG004 (torch's signature)
        x, weight, bias, padding, _ = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        n, c_in, h, w = x.shape
        g = grad_y.permute(0, 2, 3, 1)  # [N, out_h, out_w, C_out]
        windows = gather(g, ctx.padding, h, w).view(n * h * w, -1)  # [N*h*w, 9 * C_out]
        kernel = _kernel_matrix(weight)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (windows @ kernel.T).view(n, h, w, c_in).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in)
            grad_w = (pixels.T @ windows).view(c_in, KERNEL, KERNEL, -1).permute(0, 3, 1, 2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum((0, 1, 2))
        return grad_x, grad_w, grad_b, None, None


def _matmul_wins(x: torch.Tensor, out_channels: int) -> bool:
    """Where the matmul path measured faster than oneDNN (the module docstring)."""
    return out_channels == 1 or x.shape[-2] * x.shape[-1] <= 9


class Stride2Transposed(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding, output_padding)`, computed
    as a matrix multiply and a scatter on CPU tensors where that measures faster."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int = 0, output_padding: int = 0):
        super().__init__(in_channels, out_channels, KERNEL, stride=STRIDE, padding=padding,
                         output_padding=output_padding)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # inside vmap (the fused fold step)
        # Under autocast torch's kernels handle the dtypes (aeopt autocasts on CUDA only).
        if (x.device.type != "cpu" or output_size is not None or x.dim() != 4
                or wrapped(x) or wrapped(self.weight) or torch.is_autocast_enabled("cpu")
                or not _matmul_wins(x, self.out_channels)):
            return super().forward(x, output_size)
        return _Stride2Transposed.apply(x, self.weight, self.bias, self.padding[0], self.output_padding[0])


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
