"""`ToImage`: the conv decoders' last layer, a 3x3 stride-2 transposed convolution from C channels
at H x W to one channel at 2H x 2W, with a faster CPU path.

oneDNN's transposed convolution with one output channel is its slowest layer in the report's
network: 2.0-2.2 ms forward for a batch of 256 (16 x 14 x 14 -> 1 x 28 x 28) on two threads, where
the arithmetic needs well under a tenth of that (BENCHMARKS.md, "Host memory, layout and the
optimizer kernel"). The same map is one matrix multiply (every input pixel's C channels times the
C x 9 kernel: nine output taps per pixel) and a col2im that adds the taps into place (`F.fold`).
Its gradients are those of the ordinary stride-2 convolution it is the adjoint of: that
convolution of the output's gradient for the input's, its weight gradient for the kernel's. This
module computes exactly that on the CPU and leaves everything else (CUDA, vmapped fused folds,
other shapes) to `nn.ConvTranspose2d`. Measured on one thread, as a fold in a lane trains: forward
+ backward 3.4 ms instead of 5.1 ms, a whole epoch of the report's network 1.07x faster (on two
threads, where oneDNN splits its layer over both cores, 1.01x).

A subclass with the same parameters: state dicts, checkpoints and `isinstance` checks see an
`nn.ConvTranspose2d`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KERNEL, STRIDE, PADDING, OUTPUT_PADDING = 3, 2, 1, 1


class _ToOneChannel(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b, stride 2, padding 1, output_padding 1) for w: [C, 1, 3, 3]."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view when x is channels-last
        taps = pixels @ weight.reshape(c, KERNEL * KERNEL)  # [n, h*w, 9]
        y = F.fold(taps.transpose(1, 2), (STRIDE * h, STRIDE * w), KERNEL, padding=PADDING, stride=STRIDE)
        return y if bias is None else y + bias.view(1, 1, 1, 1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG004 (torch's signature)
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # The adjoint of a transposed convolution is the convolution with the same kernel.
            grad_x = F.conv2d(grad_y, weight, stride=STRIDE, padding=PADDING)
        if ctx.needs_input_grad[1]:
            # And the kernel's gradient is that convolution's weight gradient, with grad_y as its
            # input and x as its output's gradient (measured faster than an im2col + matmul).
            grad_w = torch.nn.grad.conv2d_weight(grad_y, weight.shape, x, stride=STRIDE, padding=PADDING)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum().view(1)
        return grad_x, grad_w, grad_b


class ToImage(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d(in_channels, 1, 3, stride=2, padding=1, output_padding=1)`: C x H x W ->
    1 x 2H x 2W, computed by `_ToOneChannel` on CPU tensors."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels, 1, KERNEL, stride=STRIDE, padding=PADDING,
                         output_padding=OUTPUT_PADDING)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # inside vmap (the fused fold step)
        if (x.device.type != "cpu" or output_size is not None or x.dim() != 4
                or wrapped(x) or wrapped(self.weight)):
            return super().forward(x, output_size)
        return _ToOneChannel.apply(x, self.weight, self.bias)
