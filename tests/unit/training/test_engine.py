"""The training engine on tiny synthetic data: it learns, it is reproducible, it stops, it refuses NaN."""

from __future__ import annotations

import math

import pytest
import torch

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.training.data import add_noise, load_dataset, to_float
from aeopt.training.engine import NonFiniteLossError, Trainer, evaluate_loss, fit, mse, resolve_device
from aeopt.training.models import build_model

CPU = torch.device("cpu")
CONV = {"kind": "conv_ae", "c1": 8, "c2": 16, "c3": 16, "fc": 32, "latent_dim": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("synthetic")
    return to_float(ds.train.x[:600], CPU), to_float(ds.test.x[:200], CPU)


def _cfg(**sections) -> RunConfig:
    base = {
        "model": CONV,
        "data": {"dataset": "synthetic"},
        "budget": {"max_epochs": 3, "batch_size": 64, "patience": 0},
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0},
    }
    for key, value in sections.items():
        # A model of another kind replaces the section; anything else is merged into it.
        same_kind = key == "model" and value.get("kind", "conv_ae") in ("conv_ae", "denoising_ae")
        merge = isinstance(value, dict) and (key != "model" or same_kind)
        base[key] = {**base.get(key, {}), **value} if merge else value
    return RunConfig.model_validate(base)


@pytest.fixture(autouse=True)
def _one_thread():
    # Bit-for-bit comparisons and speed on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "model",
    [
        CONV,
        {**CONV, "kind": "denoising_ae", "noise_std": 0.3},
        {"kind": "vae", "hidden1": 64, "hidden2": 32, "latent_dim": 2},
    ],
    ids=["conv_ae", "denoising_ae", "vae"],
)
def test_engine_lowers_the_loss(tiny, model) -> None:
    train_x, val_x = tiny
    cfg = _cfg(model=model, budget={"max_epochs": 4})
    torch.manual_seed(cfg.seed)
    before = evaluate_loss(build_model(cfg), cfg, val_x, CPU)
    seen = []
    trained, result = fit(cfg, train_x, val_x, CPU, on_epoch=lambda e, tr, va: seen.append((e, tr, va)))
    assert [e for e, _, _ in seen] == [1, 2, 3, 4] == [row["epoch"] for row in result.history]
    assert [va for _, _, va in seen] == [row["val_loss"] for row in result.history]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val < 0.8 * before
    # The returned weights are the best epoch's.
    assert evaluate_loss(trained, cfg, val_x, CPU) == pytest.approx(result.best_val, rel=1e-6)
    assert result.epochs == 4 and result.images_per_second > 0 and not result.stopped_early


def test_seeded_runs_reproduce_bit_for_bit(tiny) -> None:
    train_x, val_x = tiny
    cfg = _cfg(model={"kind": "denoising_ae", "noise_std": 0.2, "dropout": 0.2}, budget={"max_epochs": 2})
    m1, r1 = fit(cfg, train_x, val_x, CPU)
    m2, r2 = fit(cfg, train_x, val_x, CPU)
    assert r1.history == r2.history
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    m3, r3 = fit(cfg.model_copy(update={"seed": 1}), train_x, val_x, CPU)
    assert r3.history != r1.history


def test_early_stopping_stops_after_patience(tiny) -> None:
    train_x, val_x = tiny
    # A step size far below float32 resolution leaves every weight unchanged, so the validation
    # loss never improves after epoch 1 and patience must end the run.
    cfg = _cfg(budget={"max_epochs": 30, "patience": 3}, optim={"name": "sgd", "lr": 1e-30, "momentum": 0.0})
    _, result = fit(cfg, train_x, val_x, CPU)
    assert result.stopped_early
    assert result.best_epoch == 1
    assert result.epochs == 4


def test_patience_zero_runs_every_epoch(tiny) -> None:
    train_x, val_x = tiny
    cfg = _cfg(budget={"max_epochs": 3, "patience": 0}, optim={"name": "sgd", "lr": 1e-30, "momentum": 0.0})
    _, result = fit(cfg, train_x, val_x, CPU)
    assert result.epochs == 3 and not result.stopped_early


def test_on_epoch_can_stop_the_run(tiny) -> None:
    train_x, val_x = tiny

    class Stop(Exception):
        pass

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(_cfg(budget={"max_epochs": 10}), train_x, val_x, CPU, on_epoch=on_epoch)


def test_divergence_raises_non_finite_loss_error() -> None:
    # The report's VAE with plain SGD at lr 10: the KL term's exp(logvar) overflows within an epoch.
    x = to_float(load_dataset("digits").train.x[:512], CPU)
    cfg = RunConfig.model_validate(
        {"model": {"kind": "vae"}, "data": {"dataset": "digits"},
         "budget": {"max_epochs": 3, "batch_size": 64}, "optim": {"name": "sgd", "lr": 10.0}}
    )
    with pytest.raises(NonFiniteLossError) as info:
        fit(cfg, x, x[:128], CPU)
    # The CLI shows it as one actionable line.
    assert isinstance(info.value, AeoptError)
    assert "optim.lr" in str(info.value) and "\n" not in str(info.value)


def test_nan_in_the_data_raises(tiny) -> None:
    train_x, _ = tiny
    bad = train_x.clone()
    bad[3, 0, 5, 5] = float("nan")
    trainer = Trainer(build_model(_cfg()), _cfg(), CPU, seed=0)
    with pytest.raises(NonFiniteLossError, match="nan"):
        trainer.train_epoch(bad)


def test_train_epoch_visits_every_image_once(tiny) -> None:
    train_x, _ = tiny
    cfg = _cfg(budget={"batch_size": 128})
    trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
    seen = []
    # Record each batch the model sees (600 = 4 full batches and one of 88).
    trainer.model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    trainer.train_epoch(train_x)
    assert seen == [128, 128, 128, 128, 88]


@pytest.mark.parametrize(
    "sections",
    [
        {"model": {"kind": "aae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4}},
        {"contrastive": {"weight": 1.0, "projection": 16}},
        {},
    ],
    ids=["aae", "contrastive", "conv_ae"],
)
def test_a_last_batch_of_one_image_is_left_out(tiny, sections) -> None:
    # 129 = 2 x 64 + 1: batch norm cannot train on one image (the AAE's code norm and the contrastive
    # head raised here), so every model leaves it out; its mean loss is over the 128 it trained on.
    train_x, _ = tiny
    cfg = _cfg(budget={"batch_size": 64, "max_epochs": 2}, **sections)
    trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
    seen = []
    trainer.model.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    for _ in range(2):
        seen.clear()
        loss = trainer.train_epoch(train_x[:129])
        assert math.isfinite(loss)
        assert 1 not in seen and 64 in seen
    # One image more and it trains, as the last batch of two.
    seen.clear()
    trainer.train_epoch(train_x[:130])
    assert 2 in seen and 1 not in seen


def test_mse_matches_a_direct_computation(tiny) -> None:
    _, val_x = tiny
    model = build_model(_cfg()).eval()
    with torch.no_grad():
        expected = ((model(val_x) - val_x) ** 2).mean().item()
    assert mse(model, val_x) == pytest.approx(expected, rel=1e-5)
    # Noisy inputs, clean targets; the noise comes from the fixed seed.
    noisy = add_noise(val_x.clone(), 0.3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_noisy = ((model(noisy) - val_x) ** 2).mean().item()
    assert mse(model, val_x, noise=0.3) == pytest.approx(expected_noisy, rel=1e-5)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device(None).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(AeoptError, match="--device cpu"):
            resolve_device("cuda:0")
