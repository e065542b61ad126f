"""The test MSE from noisy inputs that every `aeopt train` / `aeopt refit` run records per noise std."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from aeopt.config import RunConfig
from aeopt.stages.train import NOISY_TEST_STDS, noisy_test_mse
from aeopt.training.data import add_noise
from aeopt.training.models import build_model, reconstruct

REPO = Path(__file__).resolve().parents[3]


def _model(name: str) -> torch.nn.Module:
    cfg = RunConfig.model_validate(yaml.safe_load((REPO / "configs" / name).read_text()))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # larger weights: an untrained net's output then depends on its input
        for p in model.parameters():
            p.mul_(6.0)
    return model


def test_each_std_is_the_mse_to_clean_images_from_the_same_noisy_inputs():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert NOISY_TEST_STDS == (0.3, 0.5)  # the stds issue 13 compares the denoising AE at
    for name in ("conv_ae.yaml", "denoising_ae.yaml"):
        model = _model(name)
        got = noisy_test_mse(model, x)
        assert list(got) == ["0.3", "0.5"]
        for std in NOISY_TEST_STDS:
            # Every model sees the noisy images of one fixed seed: what makes two runs' figures compare.
            noisy = add_noise(x, std, torch.Generator().manual_seed(0))
            with torch.no_grad():
                want = float(torch.mean((reconstruct(model, noisy) - x) ** 2))
            assert got[f"{std:g}"] == pytest.approx(want, rel=1e-5)
        with torch.no_grad():
            clean = float(torch.mean((reconstruct(model, x) - x) ** 2))
        assert got["0.5"] != pytest.approx(clean, rel=1e-5)  # the noise is really added
