"""The CPU layout and optimizer kernel (aeopt.training.layout): channels-last convolutions and fused
Adam change how the numbers are computed, not what is computed or stored."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from aeopt.config import BaselineRun, RunConfig
from aeopt.training.checkpoint import build_classifier_model, load_checkpoint, save_checkpoint
from aeopt.training.engine import Trainer, make_optimizer
from aeopt.training.layout import adam, channels_last_here, for_device, fused_optimizer_ok
from aeopt.training.models import build_model
from aeopt.training.supervised import fit_classifier

CPU = torch.device("cpu")
CL = torch.channels_last
TINY_CONV = {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 3, "dropout": 0.0}


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]


def test_for_device_turns_conv_weights_channels_last_and_keeps_the_function_and_the_state():
    model = build_model(RunConfig.model_validate({"model": TINY_CONV}))
    plain = copy.deepcopy(model).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 28, 28)
    same = for_device(model, CPU)
    assert same is model
    weights = _conv_weights(model)
    assert len(weights) == 6
    assert all(w.is_contiguous(memory_format=CL) for w in weights)
    # With one channel (the first convolution's input, the last one's output) both layouts are the same.
    assert all(not w.is_contiguous() for w in weights if w.shape[1] > 1)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-6)


def test_the_switch_and_models_without_convolutions(monkeypatch):
    assert channels_last_here("cpu") and not channels_last_here("meta")
    monkeypatch.setenv("AEOPT_CHANNELS_LAST", "0")
    assert not channels_last_here(CPU)
    model = for_device(build_model(RunConfig.model_validate({"model": TINY_CONV})), CPU)
    assert all(w.is_contiguous() for w in _conv_weights(model))
    monkeypatch.delenv("AEOPT_CHANNELS_LAST")
    vae = for_device(build_model(RunConfig.model_validate({"model": {"kind": "vae", "hidden1": 16,
                                                                     "hidden2": 8}})), CPU)
    assert _conv_weights(vae) == [] and all(p.is_contiguous() for p in vae.parameters())


def test_trainer_and_fit_classifier_use_the_layout_and_the_fused_kernel():
    cfg = RunConfig.model_validate({"model": TINY_CONV, "budget": {"batch_size": 8}})
    trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
    assert all(w.is_contiguous(memory_format=CL) for w in _conv_weights(trainer.model))
    assert trainer.optimizer.defaults["fused"] is True
    assert make_optimizer(torch.nn.Linear(2, 2).parameters(), cfg).defaults["fused"] is True
    sgd = RunConfig.model_validate({"model": TINY_CONV, "optim": {"name": "sgd", "lr": 0.1}})
    assert isinstance(make_optimizer(torch.nn.Linear(2, 2).parameters(), sgd), torch.optim.SGD)
    assert not fused_optimizer_ok([torch.zeros(1), torch.zeros(1, device="meta")])

    cnn_cfg = BaselineRun.model_validate({"model": {"c1": 4, "c2": 8, "fc": 16}, "train": {"max_epochs": 1}})
    cnn = build_classifier_model(cnn_cfg, 3)
    x, y = torch.rand(24, 1, 28, 28), torch.arange(24) % 3
    fitted, _ = fit_classifier(cnn, (x, y), (x, y), cnn_cfg.train, CPU, seed=0)
    assert all(w.is_contiguous(memory_format=CL) for w in _conv_weights(fitted))


@pytest.mark.parametrize("optim", ["adam", "adamw"])
def test_training_in_the_cpu_layout_follows_the_contiguous_run(monkeypatch, optim):
    """Three epochs on the same data and seed, channels-last + fused Adam against torch's default
    layout + the unfused kernel: the same losses to float rounding, and the runs are not constant."""
    cfg = RunConfig.model_validate({"model": {**TINY_CONV, "dropout": 0.2}, "budget": {"batch_size": 16},
                                    "optim": {"name": optim, "lr": 3e-3}})
    x = torch.rand(96, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def losses() -> list[float]:
        torch.manual_seed(0)
        trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
        return [trainer.train_epoch(x) for _ in range(3)]

    fast = losses()
    monkeypatch.setenv("AEOPT_CHANNELS_LAST", "0")
    monkeypatch.setattr("aeopt.training.engine.fused_optimizer_ok", lambda params: False)
    default = losses()
    assert fast == pytest.approx(default, rel=1e-4)
    assert fast[2] < fast[0]


def test_a_checkpoint_loads_into_the_layout_it_trained_in_and_scores_the_same(tmp_path):
    cfg = RunConfig.model_validate({"model": TINY_CONV, "budget": {"batch_size": 8}})
    trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
    trainer.train_epoch(torch.rand(32, 1, 28, 28))
    save_checkpoint(tmp_path / "m.pt", trainer.model, cfg, {})
    loaded, _, _ = load_checkpoint(tmp_path / "m.pt")
    assert all(w.is_contiguous(memory_format=CL) for w in _conv_weights(loaded))
    x = torch.rand(5, 1, 28, 28)
    trainer.model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), trainer.model(x))


def test_adam_builds_the_fused_kernel_where_it_exists_and_the_same_update():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    fast = adam(a.parameters(), lr=1e-2, betas=(0.5, 0.999))
    plain = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999))
    assert fast.defaults["fused"] and not plain.defaults["fused"]
    assert adam(a.parameters(), decoupled=True, lr=1e-3).__class__ is torch.optim.AdamW
    x = torch.randn(8, 4)
    for model, opt in ((a, fast), (b, plain)):
        for _ in range(5):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-6)
