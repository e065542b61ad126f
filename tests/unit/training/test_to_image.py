"""`ToImage` (the conv decoders' last layer) computes what `nn.ConvTranspose2d` computes, and its
hand-written gradients are right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aeopt.training.kinds.to_image import ToImage, _ToImage, patches, unpatch, with_torch_layers


def _twins(channels: int, dtype: torch.dtype = torch.float32) -> tuple[ToImage, nn.ConvTranspose2d]:
    torch.manual_seed(0)
    fast = ToImage(channels).to(dtype)
    ref = nn.ConvTranspose2d(channels, 1, 3, stride=2, padding=1, output_padding=1).to(dtype)
    ref.load_state_dict(fast.state_dict())  # the same parameters, names and shapes
    return fast, ref


def test_the_hand_written_gradients_pass_gradcheck():
    fast, _ = _twins(3, torch.float64)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ToImage.apply, (x, fast.weight, fast.bias))
    assert torch.autograd.gradcheck(_ToImage.apply, (x, fast.weight, None))


@pytest.mark.parametrize("size", [(28, 28), (7, 5), (1, 1)])
def test_patches_are_the_convolutions_windows_and_unpatch_is_their_adjoint(size):
    torch.manual_seed(0)
    image = torch.randn(3, 1, 2 * size[0], 2 * size[1], dtype=torch.float64)
    windows = patches(image)  # [9, N, h, w]
    assert windows.shape == (9, 3, *size)
    # Tap k of window (i, j) is what a 3x3 stride-2 padding-1 convolution multiplies by kernel tap k.
    eye = torch.eye(9, dtype=torch.float64).view(9, 1, 3, 3)
    torch.testing.assert_close(windows, F.conv2d(image, eye, stride=2, padding=1).transpose(0, 1))
    taps = torch.randn_like(windows)
    # <patches(a), b> == <a, unpatch(b)>: unpatch adds each tap back where patches took it from.
    torch.testing.assert_close((windows * taps).sum(), (image * unpatch(taps)).sum())


def test_under_cpu_autocast_it_is_torchs_layer():
    fast, ref = _twins(4)
    x = torch.randn(2, 4, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x)
        y.float().sum().backward()  # the hand-written backward would mix dtypes here
        want = ref(x)
    assert y.dtype == torch.bfloat16 and "_ToImage" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_output_and_gradients_match_conv_transpose2d(layout):
    fast, ref = _twins(16)
    fast.to(memory_format=layout), ref.to(memory_format=layout)
    x = torch.randn(8, 16, 14, 14).contiguous(memory_format=layout).requires_grad_(True)
    y_fast, y_ref = fast(x), ref(x)
    assert y_fast.shape == y_ref.shape == (8, 1, 28, 28)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y_ref)
    got = torch.autograd.grad(y_fast, (x, fast.weight, fast.bias), g)
    want = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # The fast path really ran: autograd recorded the custom function, not torch's convolution.
    assert "_ToImage" in type(y_fast.grad_fn).__name__


def test_inside_vmap_it_is_torchs_layer():
    fast, ref = _twins(4)
    others = [ToImage(4) for _ in range(2)]
    params, buffers = stack_module_state([fast, *others])
    x = torch.randn(3, 2, 4, 7, 7)

    def one(p, b, xb):
        return functional_call(fast, (p, b), (xb,))

    y = vmap(one)(params, buffers, x)
    torch.testing.assert_close(y[0], ref(x[0]), rtol=1e-5, atol=1e-6)


def test_with_torch_layers_swaps_every_to_image_for_torchs_layer_with_the_same_numbers():
    from aeopt.config import load_run_config
    from aeopt.training.models import build_model

    torch.manual_seed(0)
    config = Path(__file__).resolve().parents[3] / "configs" / "conv_ae.yaml"
    model = build_model(load_run_config(config)).eval()
    x = torch.rand(4, 1, 28, 28)
    want = model(x)
    state = model.state_dict()
    plain = with_torch_layers(model)
    assert not any(isinstance(m, ToImage) for m in plain.modules())
    assert sum(type(m) is nn.ConvTranspose2d for m in plain.modules()) == 3
    assert plain.state_dict().keys() == state.keys()
    torch.testing.assert_close(plain(x), want, rtol=1e-5, atol=1e-6)
