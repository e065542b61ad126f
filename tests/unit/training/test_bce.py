"""The VAE's summed BCE on logits against torch's: values, gradients, and where it is torch's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from aeopt.training.kinds import bce
from aeopt.training.kinds.bce import bce_with_logits_sum


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1, 28, 28, generator=g, dtype=dtype) * 4
    # Extremes too: where exp(-|x|) underflows beside 1 and where it underflows altogether.
    logits.view(-1)[:6] = torch.tensor([0.0, 17.5, -17.5, 40.0, -40.0, 120.0], dtype=dtype)
    target = torch.rand(64, 1, 28, 28, generator=g, dtype=dtype)
    target.view(-1)[6:9] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype)
    return logits, target


def test_value_and_both_gradients_equal_torchs():
    logits, target = _batch()
    ours_in = (logits.clone().requires_grad_(True), target.clone().requires_grad_(True))
    torch_in = (logits.clone().requires_grad_(True), target.clone().requires_grad_(True))
    ours = bce_with_logits_sum(*ours_in)
    want = F.binary_cross_entropy_with_logits(*torch_in, reduction="sum")
    assert ours.item() == pytest.approx(want.item(), rel=1e-6)
    (ours * 0.5).backward()
    (want * 0.5).backward()
    for got, expected in zip(ours_in, torch_in, strict=True):
        torch.testing.assert_close(got.grad, expected.grad)


def test_the_cpu_path_is_taken_and_gradcheck_passes(monkeypatch):
    logits, target = (t[:2, :, :4, :4].clone().requires_grad_(True) for t in _batch(torch.float64))
    calls = []
    real = bce._SummedBCEWithLogits.apply

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(bce._SummedBCEWithLogits, "apply", spy)
    assert torch.autograd.gradcheck(bce_with_logits_sum, (logits, target))
    assert calls  # the hand-written forward and backward were the ones checked


def test_under_vmap_and_autocast_it_is_torchs_function():
    logits, target = _batch()
    per_image = vmap(bce_with_logits_sum)(logits, target)
    want = torch.stack([F.binary_cross_entropy_with_logits(x, t, reduction="sum")
                        for x, t in zip(logits, target, strict=True)])
    torch.testing.assert_close(per_image, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bce_with_logits_sum(logits, target).item() == pytest.approx(
            F.binary_cross_entropy_with_logits(logits, target, reduction="sum").item())
