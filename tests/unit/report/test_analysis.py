"""The report's numbers (aeopt.report.analysis), on small untrained models (no training).

The artifact-folder, loopback and spec-note tests live in tests/unit/search/test_artifacts.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeopt.config import ConvAEConfig, VAEConfig
from aeopt.report import analysis
from aeopt.training.models import VAE, ConvAutoencoder


def test_pca_is_2d_even_for_a_1d_latent_space():
    codes = np.random.default_rng(0).normal(size=(50, 1))
    emb, ratios = analysis.pca_2d(codes)
    assert emb.shape == (50, 2) and np.all(emb[:, 1] == 0) and ratios == pytest.approx([1.0, 0.0])


def test_pca_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.normal(0, 10, 500), rng.normal(0, 1, 500), rng.normal(0, 0.1, 500)])
    _, ratios = analysis.pca_2d(codes)
    assert ratios[0] > 0.95 and ratios[0] > ratios[1]


def test_tsne_keeps_separated_clusters_apart():
    rng = np.random.default_rng(0)
    codes = np.vstack([rng.normal(0, 0.1, (40, 5)), rng.normal(5, 0.1, (40, 5))])
    emb = analysis.tsne_2d(codes, seed=0)
    a, b = emb[:40].mean(0), emb[40:].mean(0)
    spread = max(emb[:40].std(0).max(), emb[40:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread


def test_gaussian_fit_matches_the_codes():
    rng = np.random.default_rng(1)
    codes = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.8], [0.8, 1.0]], size=4000)
    g = analysis.fit_gaussian(codes)
    s = g.sample(20000, seed=0)
    assert s.mean(0) == pytest.approx([1.0, -2.0], abs=0.06)
    assert np.cov(s, rowvar=False) == pytest.approx(np.array([[2.0, 0.8], [0.8, 1.0]]), abs=0.1)


def test_gaussian_fit_survives_an_unused_dimension():
    codes = np.column_stack([np.random.default_rng(0).normal(size=100), np.zeros(100)])
    assert np.isfinite(analysis.fit_gaussian(codes).sample(5)).all()


def test_latent_grid_spans_prior_quantiles_in_the_first_two_dims():
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden1=16, hidden2=8, latent_dim=4))
    images, coords = analysis.latent_grid(model, n=5)
    assert images.shape == (25, 1, 28, 28)
    assert coords[0] == pytest.approx(-1.6449, abs=1e-3) and coords[-1] == pytest.approx(1.6449, abs=1e-3)
    # Row r, column c decodes (coords[c], coords[n-1-r], 0, 0).
    z = torch.tensor([[coords[3], coords[5 - 1 - 2], 0.0, 0.0]], dtype=torch.float32)
    assert torch.allclose(images[2 * 5 + 3], analysis.decode(model, z)[0], atol=1e-6)


def test_interpolation_starts_and_ends_at_the_two_codes():
    torch.manual_seed(0)
    model = ConvAutoencoder(ConvAEConfig(c1=4, c2=4, c3=4, fc=8, latent_dim=3, dropout=0.0))
    xa, xb = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    path = analysis.interpolate(model, xa, xb, steps=5)
    assert path.shape == (5, 1, 28, 28)
    assert torch.allclose(path[0], analysis.outputs(model, xa)[0], atol=1e-5)
    assert torch.allclose(path[-1], analysis.outputs(model, xb)[0], atol=1e-5)


def test_denoising_mse_scores_every_model_on_the_same_noisy_images():
    torch.manual_seed(0)
    model = ConvAutoencoder(ConvAEConfig(c1=4, c2=4, c3=4, fc=8, latent_dim=3, dropout=0.0))
    x = torch.rand(20, 1, 28, 28)
    stds = analysis.noise_levels(4)
    assert stds == [0.0, 0.1, 0.2, 0.3]
    curves = analysis.denoising_mse({"a": model, "b": model}, x, stds)
    assert curves["a"] == curves["b"] and len(curves["a"]) == 4
    noisy = analysis.noisy_inputs(x, stds)
    assert torch.equal(noisy[0], x)
    assert float((noisy[3] - x).abs().mean()) > float((noisy[1] - x).abs().mean())


def test_pairs_are_from_different_classes():
    labels = np.arange(100) % 10
    for a, b in analysis.pick_pairs(labels, 6):
        assert labels[a] != labels[b]

