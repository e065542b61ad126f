"""The report's three autoencoders: shapes, the encoder seam, and their losses against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from aeopt.config import ConvAEConfig, RunConfig, VAEConfig
from aeopt.training.losses import reconstruction_loss, vae_loss
from aeopt.training.models import VAE, ConvAutoencoder, build_model, count_parameters, reconstruct


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "mcfg",
    [
        ConvAEConfig(),
        ConvAEConfig(c1=8, c2=16, c3=16, fc=64, latent_dim=3, activation="gelu", batch_norm=True,
                     dropout=0.0),
        ConvAEConfig(kind="denoising_ae", noise_std=0.3, activation="leaky_relu"),
    ],
    ids=["report", "small-bn-gelu", "denoising"],
)
def test_conv_autoencoder_shapes(mcfg: ConvAEConfig, batch: torch.Tensor) -> None:
    model = build_model(mcfg)
    assert isinstance(model, ConvAutoencoder)
    model.eval()
    out = model(batch)
    assert out.shape == batch.shape
    assert out.min() >= 0 and out.max() <= 1  # sigmoid output, like the pixels
    z = model.encode(batch)
    assert z.shape == (5, mcfg.latent_dim)
    # `encoder` is the module the fine-tune stage reuses: calling it is the same as encode().
    assert torch.equal(model.encoder(batch), z)
    assert model.decode(z).shape == batch.shape
    assert torch.equal(model.decode(z), out)


def test_report_conv_ae_parameter_count() -> None:
    # Counted by hand from the report's layout (c1 16, c2 32, c3 32, fc 32, latent 10):
    # encoder conv 1*16*9+16, 16*32*9+32, 32*32*9+32; linear 288*32+32, 32*10+10
    encoder = 160 + 4640 + 9248 + 9248 + 330
    # decoder linear 10*32+32, 32*288+288; transposed conv 32*32*9+32, 32*16*9+16, 16*1*9+1
    decoder = 352 + 9504 + 9248 + 4624 + 145
    model = build_model(RunConfig())
    assert count_parameters(model.encoder) == encoder
    assert count_parameters(model) == encoder + decoder == 47_499


def test_vae_shapes_and_parameter_count(batch: torch.Tensor) -> None:
    cfg = VAEConfig()
    model = build_model(RunConfig(model=cfg))
    assert isinstance(model, VAE)
    logits, mu, logvar = model(batch)
    assert logits.shape == batch.shape
    assert mu.shape == logvar.shape == (5, 2)
    assert model.encode(batch).shape == (5, 2)
    recon = model.decode(torch.zeros(3, 2))
    assert recon.shape == (3, 1, 28, 28) and recon.min() >= 0 and recon.max() <= 1
    # 784 -> 512 -> 256 -> (2, 2), and back: 2 -> 256 -> 512 -> 784.
    encoder = (784 * 512 + 512) + (512 * 256 + 256) + 2 * (256 * 2 + 2)
    decoder = (2 * 256 + 256) + (256 * 512 + 512) + (512 * 784 + 784)
    expected = encoder + decoder
    assert count_parameters(model) == expected == 1_068_820


def test_vae_reparameterization_samples_in_training_and_uses_mu_in_eval() -> None:
    model = VAE(VAEConfig(latent_dim=3))
    mu = torch.full((20_000, 3), 1.5)
    logvar = torch.full((20_000, 3), math.log(0.25))  # sigma = 0.5
    torch.manual_seed(0)
    model.train()
    z = model.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.02)
    assert z.std().item() == pytest.approx(0.5, abs=0.02)
    model.eval()
    assert torch.equal(model.reparameterize(mu, logvar), mu)


def test_vae_encode_is_the_mean_code(batch: torch.Tensor) -> None:
    model = VAE(VAEConfig())
    mu, _ = model.encoder.stats(batch)
    assert torch.equal(model.encode(batch), mu)
    model.eval()
    assert torch.allclose(reconstruct(model, batch), model.decode(mu))


@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
def test_vae_loss_is_bce_sum_plus_beta_kl_per_image(beta: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 28, 28, generator=g)
    target = torch.rand(4, 1, 28, 28, generator=g)
    mu = torch.randn(4, 2, generator=g)
    logvar = torch.randn(4, 2, generator=g)

    p = torch.sigmoid(logits.double())
    t = target.double()
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum()
    # KL(N(mu, sigma^2) || N(0, 1)) from torch.distributions, independent of the closed form in losses.py.
    kl = kl_divergence(Normal(mu.double(), torch.exp(0.5 * logvar.double())), Normal(0.0, 1.0)).sum()
    expected = (bce + beta * kl) / 4

    got = vae_loss(logits, target, mu, logvar, beta)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_vae_loss_kl_is_zero_for_the_prior() -> None:
    logits = torch.zeros(2, 1, 28, 28)
    target = torch.full((2, 1, 28, 28), 0.5)
    zeros = torch.zeros(2, 2)
    # sigmoid(0) = 0.5 against 0.5 targets: BCE is log 2 per pixel; KL of N(0, 1) to itself is 0.
    assert vae_loss(logits, target, zeros, zeros, 1.0).item() == pytest.approx(784 * math.log(2), rel=1e-6)
    assert vae_loss(logits, target, zeros, zeros, 10.0).item() == pytest.approx(784 * math.log(2), rel=1e-6)


def test_reconstruction_loss_conv_is_pixel_mse_against_clean_target(batch: torch.Tensor) -> None:
    model = ConvAutoencoder(ConvAEConfig(kind="denoising_ae", noise_std=0.3))
    model.eval()
    noisy = (batch + 0.3 * torch.randn_like(batch)).clamp(0, 1)
    loss = reconstruction_loss(model, noisy, batch)
    assert loss.item() == pytest.approx(((model(noisy) - batch) ** 2).mean().item(), rel=1e-6)
    # The target is what matters: the loss against the noisy input is a different number.
    assert loss.item() != pytest.approx(reconstruction_loss(model, noisy, noisy).item(), rel=1e-3)


def test_reconstruction_loss_vae_matches_vae_loss(batch: torch.Tensor) -> None:
    model = VAE(VAEConfig(beta=2.0))
    model.eval()
    logits, mu, logvar = model(batch)
    expected = vae_loss(logits, batch, mu, logvar, 2.0)
    assert reconstruction_loss(model, batch, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_build_model_accepts_run_or_model_config() -> None:
    assert isinstance(build_model(RunConfig()), ConvAutoencoder)
    assert isinstance(build_model(ConvAEConfig(latent_dim=4)), ConvAutoencoder)
    assert isinstance(build_model(VAEConfig()), VAE)
    assert build_model(VAEConfig(latent_dim=7)).latent_dim == 7


def test_gradients_reach_every_parameter(batch: torch.Tensor) -> None:
    for model in (build_model(ConvAEConfig(batch_norm=True)), build_model(VAEConfig())):
        model.train()
        reconstruction_loss(model, batch, batch).backward()
        missing = [name for name, p in model.named_parameters()
                   if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing
        assert F.mse_loss(reconstruct(model.eval(), batch), batch).item() < 1.0


def test_checkpoint_round_trip_and_errors(tmp_path, batch: torch.Tensor) -> None:
    from aeopt.errors import AeoptError
    from aeopt.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = RunConfig.model_validate({"model": {"kind": "vae", "latent_dim": 3}, "seed": 7})
    model = build_model(cfg).eval()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, cfg, {"test_loss": 1.5})
    # Plain tensors and containers only: loads without unpickling code.
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["seed"] == 7 and payload["metrics"] == {"test_loss": 1.5}
    assert "torch" in payload["versions"]
    again, cfg2, _ = load_checkpoint(path)
    assert cfg2 == cfg
    assert torch.equal(reconstruct(again.eval(), batch), reconstruct(model, batch))

    with pytest.raises(AeoptError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AeoptError, match="not a readable aeopt checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(AeoptError, match="not an aeopt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    bad_cfg = {**payload, "config": {**payload["config"], "model": {"kind": "gan"}}}
    torch.save(bad_cfg, tmp_path / "bad_cfg.pt")
    with pytest.raises(AeoptError, match="model.kind") as info:
        load_checkpoint(tmp_path / "bad_cfg.pt")
    assert "\n" not in str(info.value)
    bad_weights = {**payload, "state_dict": {k: v[:1] for k, v in payload["state_dict"].items()}}
    torch.save(bad_weights, tmp_path / "bad_weights.pt")
    with pytest.raises(AeoptError, match="do not fit"):
        load_checkpoint(tmp_path / "bad_weights.pt")
    for name, state in (("list", [1, 2]), ("string", "weights")):  # a crafted file: no dict of tensors
        torch.save({**payload, "state_dict": state}, tmp_path / f"{name}.pt")
        with pytest.raises(AeoptError, match="do not fit"):
            load_checkpoint(tmp_path / f"{name}.pt")


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "gelu", "silu"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_conv_blocks_in_place_activations_leave_the_gradients_exact(act: str, batch_norm: bool) -> None:
    cfg = ConvAEConfig(kind="conv_ae", activation=act, batch_norm=batch_norm, dropout=0.0)
    torch.manual_seed(0)
    model = ConvAutoencoder(cfg).train()
    plain = ConvAutoencoder(cfg).train()
    plain.load_state_dict(model.state_dict())
    for m in plain.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    # ReLU and leaky ReLU run in place inside the conv blocks; the others out of place.
    in_place = [m for m in model.modules() if getattr(m, "inplace", False)]
    assert len(in_place) == (5 if act in ("relu", "leaky_relu") else 0)  # 3 encoder + 2 decoder blocks
    x = torch.rand(8, 1, 28, 28)
    got = torch.autograd.grad(model(x).pow(2).sum(), list(model.parameters()))
    want = torch.autograd.grad(plain(x).pow(2).sum(), list(plain.parameters()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
