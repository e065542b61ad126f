"""`Stride2Transposed` (the conv decoders' transposed convolutions) computes what
`nn.ConvTranspose2d` computes, its hand-written gradients are right, and it runs its matmul forward
exactly where `_matmul_wins` says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aeopt.training.kinds import transposed
from aeopt.training.kinds.transposed import Stride2Transposed, _Stride2Transposed, with_torch_layers

# (in channels, out channels, input size, padding, output padding): the report's three decoder
# layers, then the other paddings and odd sizes.
SHAPES = [(32, 32, (3, 3), 0, 0), (32, 16, (7, 7), 1, 1), (16, 1, (14, 14), 1, 1),
          (3, 2, (4, 5), 1, 0), (2, 3, (3, 2), 0, 1), (4, 1, (1, 1), 1, 1)]
# gradcheck is slow in float64: the same paddings at a few channels.
SMALL = [(3, 4, (3, 3), 0, 0), (4, 3, (5, 5), 1, 1), (4, 1, (6, 6), 1, 1), *SHAPES[3:]]


def _twins(c_in: int, c_out: int, padding: int, output_padding: int,
           dtype: torch.dtype = torch.float32) -> tuple[Stride2Transposed, nn.ConvTranspose2d]:
    torch.manual_seed(0)
    fast = Stride2Transposed(c_in, c_out, padding=padding, output_padding=output_padding).to(dtype)
    ref = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=padding,
                             output_padding=output_padding).to(dtype)
    ref.load_state_dict(fast.state_dict())  # the same parameters, names and shapes
    return fast, ref


@pytest.mark.parametrize(("c_in", "c_out", "size", "padding", "output_padding"), SMALL)
def test_the_hand_written_gradients_pass_gradcheck(c_in, c_out, size, padding, output_padding):
    fast, _ = _twins(c_in, c_out, padding, output_padding, torch.float64)
    x = torch.randn(2, c_in, *size, dtype=torch.float64, requires_grad=True)

    for matmul in (True, False):  # either forward pass; the same backward

        def f(x, w, b, matmul=matmul):
            return _Stride2Transposed.apply(x, w, b, padding, output_padding, matmul)

        assert torch.autograd.gradcheck(f, (x, fast.weight, fast.bias))
        assert torch.autograd.gradcheck(f, (x, fast.weight, None))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("c_in", "c_out", "size", "padding", "output_padding"), SHAPES)
def test_output_and_gradients_match_conv_transpose2d(layout, c_in, c_out, size, padding, output_padding):
    fast, ref = _twins(c_in, c_out, padding, output_padding)
    fast.to(memory_format=layout), ref.to(memory_format=layout)
    x = torch.randn(8, c_in, *size).contiguous(memory_format=layout).requires_grad_(True)
    y_fast, y_ref = fast(x), ref(x)
    assert y_fast.shape == y_ref.shape
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_ref)
    got = torch.autograd.grad(y_fast, (x, fast.weight, fast.bias), g)
    want = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("c_out", "size", "matmul"), [(1, (14, 14), True), (32, (3, 3), True),
                                                        (16, (7, 7), False), (16, (4, 3), False)])
def test_the_matmul_forward_runs_where_it_measured_faster(monkeypatch, c_out, size, matmul):
    scattered, scatter = [], transposed.scatter

    def spy(*args):
        scattered.append(args)
        return scatter(*args)

    monkeypatch.setattr(transposed, "scatter", spy)
    fast, _ = _twins(4, c_out, 1, 1)
    y = fast(torch.randn(2, 4, *size))
    assert bool(scattered) is matmul
    # Either forward, the backward is aeopt's (ordinary convolutions), not torch's transposed one.
    assert "_Stride2Transposed" in type(y.grad_fn).__name__


def test_under_cpu_autocast_it_is_torchs_layer():
    fast, ref = _twins(4, 1, 1, 1)
    x = torch.randn(2, 4, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x)
        y.float().sum().backward()  # the hand-written backward would mix dtypes here
        want = ref(x)
    assert y.dtype == torch.bfloat16 and "_Stride2Transposed" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, want)


def test_inside_vmap_it_is_torchs_layer():
    fast, ref = _twins(4, 1, 1, 1)
    others = [Stride2Transposed(4, 1, padding=1, output_padding=1) for _ in range(2)]
    params, buffers = stack_module_state([fast, *others])
    x = torch.randn(3, 2, 4, 7, 7)

    def one(p, b, xb):
        return functional_call(fast, (p, b), (xb,))

    y = vmap(one)(params, buffers, x)
    torch.testing.assert_close(y[0], ref(x[0]), rtol=1e-5, atol=1e-6)


def test_with_torch_layers_swaps_them_for_torchs_layers_with_the_same_numbers():
    from aeopt.config import load_run_config
    from aeopt.training.models import build_model

    torch.manual_seed(0)
    config = Path(__file__).resolve().parents[3] / "configs" / "conv_ae.yaml"
    model = build_model(load_run_config(config)).eval()
    x = torch.rand(4, 1, 28, 28)
    want = model(x)
    state = model.state_dict()
    plain = with_torch_layers(model)
    assert not any(isinstance(m, Stride2Transposed) for m in plain.modules())
    assert sum(type(m) is nn.ConvTranspose2d for m in plain.modules()) == 3
    assert plain.state_dict().keys() == state.keys()
    torch.testing.assert_close(plain(x), want, rtol=1e-5, atol=1e-6)


def test_its_output_is_a_map_of_its_own_that_takes_in_place_ops():
    fast, ref = _twins(4, 2, 0, 0)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = fast(x)
    assert y._base is None and y.is_contiguous(memory_format=torch.channels_last)
    y.relu_()  # an in-place ReLU after the layer (a view's output would refuse it)
    g = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(g, torch.autograd.grad(ref(x).relu().sum(), x)[0])
