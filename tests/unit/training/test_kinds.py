"""The registry of model kinds: it agrees with the schemas, each kind works end to end, and the
engine goes through it (build, loss, noise, training step) rather than testing classes."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch

from aeopt.config import MODEL_KINDS, MODEL_SCHEMAS, ModelConfig, RunConfig
from aeopt.errors import AeoptError
from aeopt.training.engine import Trainer, noise_std
from aeopt.training.kinds import KINDS, Autoencoder, Kind, StepContext, gradient_step, kind_of
from aeopt.training.losses import reconstruction_loss
from aeopt.training.models import build_model, reconstruct

CONV = {"c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3}
SMALL = {
    "conv_ae": {"kind": "conv_ae", **CONV},
    "denoising_ae": {"kind": "denoising_ae", **CONV, "noise_std": 0.3},
    "vae": {"kind": "vae", "hidden1": 16, "hidden2": 8, "latent_dim": 2, "beta": 2.0},
    "aae": {"kind": "aae", **CONV, "disc_hidden": 8, "prior": "mixture10"},
}


def _cfg(name: str) -> RunConfig:
    return RunConfig.model_validate({"model": SMALL[name], "budget": {"batch_size": 16}})


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_every_schema_kind_is_registered_and_no_other() -> None:
    assert sorted(KINDS) == sorted(MODEL_KINDS) == sorted(SMALL)
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.schema in MODEL_SCHEMAS
        assert name in get_args(kind.schema.model_fields["kind"].annotation)
    # MODEL_SCHEMAS is read from the union the `model:` section is validated against.
    assert MODEL_SCHEMAS == get_args(get_args(ModelConfig)[0])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_kind_builds_trains_and_reconstructs(name: str, batch: torch.Tensor) -> None:
    cfg = _cfg(name)
    kind = kind_of(cfg)
    assert kind is KINDS[name] is kind_of(cfg.model)
    model = build_model(cfg)
    assert isinstance(model, Autoencoder) and kind_of(model) is kind
    assert model.encode(batch).shape == (6, model.latent_dim) == (6, cfg.model.latent_dim)
    loss = reconstruction_loss(model, batch, batch)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    # The reconstruction loss reaches every parameter but an adversarial AE's discriminator
    # (its own step trains that: tests/unit/training/test_aae.py).
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached == {n for n, _ in model.named_parameters() if not n.startswith("discriminator.")}
    out = reconstruct(model.eval(), batch)
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    assert noise_std(cfg) == kind.noise_std(cfg.model) == (0.3 if name == "denoising_ae" else 0.0)


def test_beta_none_is_the_models_beta_and_one_is_the_plain_elbo(batch: torch.Tensor) -> None:
    model = build_model(_cfg("vae")).eval()  # eval: the code is mu, so the losses are deterministic
    own = reconstruction_loss(model, batch, batch)
    assert own == reconstruction_loss(model, batch, batch, beta=2.0)
    assert own > reconstruction_loss(model, batch, batch, beta=1.0)
    conv = build_model(_cfg("conv_ae")).eval()
    # The conv kinds have no KL term: beta changes nothing.
    assert reconstruction_loss(conv, batch, batch, beta=5.0) == reconstruction_loss(conv, batch, batch)


def test_kind_of_refuses_what_is_not_a_kind() -> None:
    with pytest.raises(AeoptError, match="model.kind 'gan' is not a kind") as info:
        kind_of(type("Cfg", (), {"kind": "gan"})())
    assert "conv_ae, denoising_ae, vae" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AeoptError, match="model.kind None"):
        kind_of(torch.nn.Linear(2, 2))


def test_the_trainer_trains_through_the_kinds_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kind with its own training step (the adversarial AE's seam): the engine calls it once per batch.
    calls: list[int] = []

    def counting_step(kind: Kind, ctx: StepContext, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(target.shape[0])
        return gradient_step(kind, ctx, x_in, target)

    monkeypatch.setitem(KINDS, "conv_ae", dataclasses.replace(KINDS["conv_ae"], train_step=counting_step))
    cfg = _cfg("conv_ae")
    trainer = Trainer(build_model(cfg), cfg, torch.device("cpu"), seed=0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    loss = trainer.train_epoch(x)
    assert calls == [16, 16, 8]
    assert loss > 0 and any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
