"""The Frechet distance (against closed forms and scipy's sqrtm), its sanity on real images through a
CNN, and how each kind makes new images (aeopt.stages.generation)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from aeopt.config import CNNConfig, load_run_config
from aeopt.errors import AeoptError
from aeopt.stages.generation import (
    FeatureCNN,
    FrechetScorer,
    check_same_data,
    fitted_gaussian_codes,
    frechet_distance,
    gaussian_stats,
    generate,
    how_sampled,
    penultimate_features,
)
from aeopt.training.models import build_model
from aeopt.training.supervised import BaselineCNN


def _random_cov(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


# ----- the distance against closed forms -----------------------------------------------------------


def test_diagonal_covariances_give_the_closed_form():
    # Commuting (diagonal) covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_scaled_full_covariance_gives_the_closed_form():
    # C2 = k C1: tr((C1 C2)^(1/2)) = sqrt(k) tr(C1), so FD = |dmu|^2 + (1 - sqrt(k))^2 tr(C1).
    rng = np.random.default_rng(0)
    c1 = _random_cov(20, rng)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    k = 2.5
    expected = float(np.sum((mu1 - mu2) ** 2) + (1 - np.sqrt(k)) ** 2 * np.trace(c1))
    assert frechet_distance(mu1, c1, mu2, k * c1) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_2x2_gives_the_closed_form():
    # For 2 x 2 matrices, tr(M^(1/2)) = sqrt(tr M + 2 sqrt(det M)) for M = C1 C2 (eigenvalues l1, l2:
    # (sqrt l1 + sqrt l2)^2 = l1 + l2 + 2 sqrt(l1 l2)). These two do not commute.
    c1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(c1 @ c2, c2 @ c1)
    m = c1 @ c2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 2.0])
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-12)


def test_agrees_with_scipy_sqrtm_on_random_full_covariances():
    rng = np.random.default_rng(1)
    c1, c2 = _random_cov(64, rng), _random_cov(64, rng)
    mu1, mu2 = rng.normal(size=64), rng.normal(size=64)
    tr_sqrt = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)


def test_identical_statistics_give_zero_even_when_rank_deficient():
    rng = np.random.default_rng(2)
    c = _random_cov(128, rng, rank=20)  # rank 20 of 128: eigenvalues of ~0 with round-off of either sign
    mu = rng.normal(size=128)
    assert frechet_distance(mu, c, mu, c) == pytest.approx(0.0, abs=1e-8)


def test_symmetric_and_grows_with_the_mean_shift():
    rng = np.random.default_rng(3)
    c1, c2 = _random_cov(10, rng), _random_cov(10, rng)
    mu = np.zeros(10)
    assert frechet_distance(mu, c1, mu, c2) == pytest.approx(frechet_distance(mu, c2, mu, c1), rel=1e-9)
    shifts = [frechet_distance(mu, c1, mu + s, c1) for s in (0.0, 0.5, 1.0)]
    assert shifts == pytest.approx([0.0, 10 * 0.25, 10 * 1.0], abs=1e-9)


def test_gaussian_stats_of_samples_approach_the_true_distance():
    # FD estimated from samples of two known Gaussians approaches the closed form as n grows.
    rng = np.random.default_rng(4)
    d = 5
    c1, c2 = _random_cov(d, rng), 0.5 * np.eye(d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.3)
    truth = frechet_distance(mu1, c1, mu2, c2)
    x = rng.multivariate_normal(mu1, c1, size=200_000)
    y = rng.multivariate_normal(mu2, c2, size=200_000)
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(truth, rel=0.02)
    with pytest.raises(ValueError, match="need features"):
        gaussian_stats(x[:1])


# ----- sanity on real images through a CNN ---------------------------------------------------------


@pytest.fixture(scope="module")
def digits_cnn():
    """sklearn's digits (28x28, offline) and a CNN trained on them for a few quick epochs."""
    from aeopt.training.data import load_dataset, to_float

    ds = load_dataset("digits")
    torch.manual_seed(0)
    cnn = BaselineCNN(CNNConfig(c1=8, c2=16, fc=32, dropout=0.0))
    x, y = to_float(ds.train.x, "cpu"), ds.train.y
    opt = torch.optim.Adam(cnn.parameters(), lr=3e-3)
    for _ in range(3):
        for idx in torch.randperm(x.shape[0]).split(128):
            loss = torch.nn.functional.cross_entropy(cnn(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return cnn.eval(), x, to_float(ds.test.x, "cpu")


def test_real_images_are_much_closer_than_noise_and_a_set_to_itself_is_zero(digits_cnn):
    cnn, train_x, test_x = digits_cnn
    n = min(test_x.shape[0], train_x.shape[0])
    score = FrechetScorer(cnn, test_x[:n])
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(n, 1, 28, 28, generator=g)
    real, fake = score(train_x[:n]), score(noise)
    assert score(test_x[:n]) == pytest.approx(0.0, abs=1e-6)
    assert real < 0.1 * fake, (real, fake)


def test_features_are_the_last_hidden_layer_and_batching_does_not_change_them(digits_cnn):
    cnn, _, test_x = digits_cnn
    x = test_x[:300]
    whole = penultimate_features(cnn, x, batch=1000)
    assert whole.shape == (300, 32)
    assert (whole >= 0).all()  # after the ReLU
    np.testing.assert_allclose(penultimate_features(cnn, x, batch=7), whole, rtol=1e-5, atol=1e-6)


# ----- new images from each kind -------------------------------------------------------------------


def _model(kind_config: str, *overrides: str):
    cfg = load_run_config(f"configs/{kind_config}.yaml", list(overrides))
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize(("config", "overrides", "says"), [
    ("conv_ae", (), "fitted to the codes"),
    ("vae", ("model.latent_dim=10",), "prior N(0, I)"),
    ("aae", (), "prior, N(0, I)"),
    ("aae", ("model.prior=mixture10",), "mixture of 10 Gaussians"),
])
def test_every_kind_generates_images_in_range(config, overrides, says):
    model = _model(config, *overrides)
    train_x = torch.rand(64, 1, 28, 28)
    images = generate(model, 50, train_x=train_x, seed=0)
    assert images.shape == (50, 1, 28, 28)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert says in how_sampled(model)
    torch.testing.assert_close(generate(model, 50, train_x=train_x, seed=0), images)  # seeded


def test_a_kind_without_a_prior_needs_training_images():
    with pytest.raises(ValueError, match="no prior"):
        generate(_model("conv_ae"), 10)


def test_the_fitted_gaussian_matches_the_codes_mean_and_full_covariance():
    rng = np.random.default_rng(5)
    cov = _random_cov(6, rng)
    cov[0, 1] = cov[1, 0] = 0.9 * np.sqrt(cov[0, 0] * cov[1, 1])  # correlated: a diagonal fit misses it
    cov = cov + 0.1 * np.eye(6)
    mean = rng.normal(size=6)
    codes = torch.as_tensor(rng.multivariate_normal(mean, cov, size=100_000), dtype=torch.float32)
    z = fitted_gaussian_codes(codes, 100_000, torch.Generator().manual_seed(0)).double().numpy()
    np.testing.assert_allclose(z.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(z, rowvar=False), cov, atol=0.05 * np.abs(cov).max())


def test_a_cnn_from_another_dataset_is_refused_in_one_line(tmp_path):
    cnn = FeatureCNN(BaselineCNN(CNNConfig()), tmp_path / "classifier.pt", "mnist", 0.99)
    check_same_data(cnn, "mnist", "the shown model")  # same data: fine
    with pytest.raises(AeoptError) as err:
        check_same_data(cnn, "fashion_mnist", "the shown model")
    msg = str(err.value)
    assert "\n" not in msg and "trained on mnist" in msg and "data.dataset=fashion_mnist" in msg
    assert "0.9900" in cnn.describe() and "128 features" in cnn.describe()
