"""The classifier's pieces: batch augmentation, metrics, frozen encoders, the training loop's contract,
the fine-tune's classifier and classifier checkpoints (save / load, format tag)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aeopt.config import BaselineRun, FinetuneConfig, FinetuneRun, RunConfig, SupervisedConfig
from aeopt.errors import AeoptError
from aeopt.training.checkpoint import (
    build_classifier_model,
    load_checkpoint,
    load_classifier_checkpoint,
    save_checkpoint,
    save_classifier_checkpoint,
)
from aeopt.training.engine import NonFiniteLossError
from aeopt.training.layout import for_device
from aeopt.training.models import build_model
from aeopt.training.supervised import (
    BaselineCNN,
    Classifier,
    augment,
    augmentation_for,
    build_classifier,
    confusion_matrix,
    evaluate,
    fit_classifier,
    per_class_accuracy,
)


def test_augment_shifts_each_image_by_its_own_offset_and_flips():
    x = torch.rand(64, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, shift=2, flip=False)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(64):
        # Every output image is a 28x28 crop of its own zero-padded input at some offset.
        crops = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert crops, f"image {i} is not a shifted copy"
        offsets.add(crops[0])
    assert len(offsets) > 10  # offsets differ across the batch

    flipped = augment(x, torch.Generator().manual_seed(1), shift=0, flip=True)
    same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54
    # Same seed, same batch: reproducible.
    assert torch.equal(augment(x, torch.Generator().manual_seed(3)),
                       augment(x, torch.Generator().manual_seed(3)))


def test_augmentation_settings():
    assert augmentation_for("auto", "fashion_mnist", 48_000) == (0, True)
    assert augmentation_for("auto", "fashion_mnist", 800) == (2, True)
    assert augmentation_for("auto", "mnist", 48_000) == (0, False)  # a flipped digit is another digit
    assert augmentation_for("auto", "mnist", 80) == (2, False)
    assert augmentation_for("none", "fashion_mnist") == (0, False)
    assert augmentation_for("flip", "digits") == (0, True)


def test_confusion_matrix_and_per_class_accuracy():
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    p = torch.tensor([0, 1, 1, 1, 2, 2])
    m = confusion_matrix(y, p, 3)
    assert m == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    acc = per_class_accuracy(m, ["a", "b", "c"])
    assert acc == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4))


def test_frozen_classifier_trains_only_the_head():
    clf = Classifier(_encoder(), 4, hidden=8, n_classes=3).freeze_encoder()
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    clf.train()
    assert not clf.encoder.training and clf.head.training
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 3, (32,))
    F.cross_entropy(clf(x), y).backward()
    assert all(p.grad is None for p in clf.encoder.parameters())
    assert all(p.grad is not None for p in clf.head.parameters())
    assert all(torch.equal(before[k], v) for k, v in clf.encoder.state_dict().items())


def test_fit_learns_a_separable_problem_and_restores_the_best_epoch():
    torch.manual_seed(0)
    # Class = which quadrant is bright: learnable in a few steps, so accuracy must rise.
    n = 400
    y = torch.randint(0, 4, (n,))
    x = torch.rand(n, 1, 28, 28) * 0.2
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * 14:(r + 1) * 14, c * 14:(c + 1) * 14] += 0.8
    cfg = SupervisedConfig(lr=1e-2, max_epochs=6, patience=0, batch_size=64, min_steps_per_epoch=5,
                           augment="none")
    clf = Classifier(_encoder(), 4, hidden=16, n_classes=4)
    model, fit = fit_classifier(clf, (x[:300], y[:300]), (x[300:], y[300:]), cfg, torch.device("cpu"), seed=0)
    assert fit.epochs == 6 and len(fit.history) == 6
    assert fit.best_val_acc == max(h["val_acc"] for h in fit.history) > 0.9
    # The returned weights are the best epoch's: evaluating them gives that epoch's figures.
    ev = evaluate(model, x[300:], y[300:])
    assert ev.accuracy == pytest.approx(fit.best_val_acc)
    assert ev.loss == pytest.approx(fit.best_val_loss, rel=1e-5)


def test_fit_is_reproducible_from_its_seed_and_stops_on_a_non_finite_loss():
    x, y = torch.rand(96, 1, 28, 28), torch.randint(0, 3, (96,))
    cfg = SupervisedConfig(lr=1e-2, max_epochs=2, patience=0, batch_size=32, min_steps_per_epoch=4,
                           augment="none")

    def run(seed: int) -> list[dict[str, float]]:
        torch.manual_seed(0)
        clf = Classifier(_encoder(), 4, hidden=8, n_classes=3)
        # Shifts, flips and several passes per epoch all draw from the run's generator.
        return fit_classifier(clf, (x[:64], y[:64]), (x[64:], y[64:]), cfg, torch.device("cpu"), seed=seed,
                              augmentation=(2, True))[1].history

    assert run(1) == run(1) and run(1) != run(2)
    clf = Classifier(_encoder(), 4, hidden=8, n_classes=3)
    with pytest.raises(NonFiniteLossError, match="classifier training loss is nan"):
        fit_classifier(clf, (x[:64], y[:64]), (x[64:], y[64:]), cfg, torch.device("cpu"), seed=0,
                       aux_loss=lambda _gen: torch.tensor(float("nan")))


def test_on_epoch_sees_every_epoch_and_may_stop_the_run():
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 3, (64,))
    cfg = SupervisedConfig(lr=1e-2, max_epochs=5, patience=0, batch_size=32, augment="none")
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(epoch: int, val_acc: float, val_loss: float) -> None:
        seen.append((epoch, val_acc, val_loss))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit_classifier(Classifier(_encoder(), 4, n_classes=3), (x[:48], y[:48]), (x[48:], y[48:]), cfg,
                       torch.device("cpu"), seed=0, on_epoch=on_epoch)
    assert [e for e, _, _ in seen] == [1, 2] and all(0 <= a <= 1 and b > 0 for _, a, b in seen)


# ----- the classifier of a fine-tune, and classifier checkpoints -----------------------------------


AE_MODELS = [{"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6, "dropout": 0.3},
             {"kind": "vae", "hidden1": 32, "hidden2": 16, "latent_dim": 3}]


def test_build_classifier_follows_the_finetune_settings():
    ae = build_model(RunConfig.model_validate({"model": AE_MODELS[0]}))
    clf = build_classifier(ae, FinetuneConfig(mode="frozen", encoder_dropout=0.1, head_hidden=12), 5)
    assert clf.encoder is ae.encoder and clf.frozen
    assert all(not p.requires_grad for p in clf.encoder.parameters())
    assert {m.p for m in clf.encoder.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert clf(torch.rand(2, 1, 28, 28)).shape == (2, 5) and clf.head[1].out_features == 12
    kept = build_classifier(build_model(RunConfig.model_validate({"model": AE_MODELS[0]})),
                            FinetuneConfig(encoder_dropout=None), 5)
    assert not kept.frozen and {m.p for m in kept.encoder.modules() if isinstance(m, nn.Dropout)} == {0.3}


def _trained_a_little(model: nn.Module) -> nn.Module:
    # Weights and batch-norm statistics away from their initial values, so a round trip is a real test.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.train()
    model(torch.rand(16, 1, 28, 28))
    # In the layout aeopt's trainers leave it in (channels-last on the CPU), as a loaded one is.
    return for_device(model, "cpu").eval()


@pytest.mark.parametrize("ae_model", AE_MODELS, ids=lambda m: m["kind"])
def test_finetuned_classifier_checkpoint_round_trip(tmp_path, ae_model):
    cfg = FinetuneRun.model_validate({"model": ae_model, "finetune": {"mode": "frozen", "head_hidden": 12},
                                      "seed": 3})
    clf = _trained_a_little(build_classifier_model(cfg, 4))
    save_classifier_checkpoint(tmp_path / "c.pt", clf, cfg, classes=list("abcd"), metrics={"test_acc": 0.5},
                               data_source="synthetic")
    payload = torch.load(tmp_path / "c.pt", weights_only=True)  # plain containers: nothing unpickled runs
    assert payload["format"] == "aeopt.classifier/1" and payload["task"] == "finetune"
    assert payload["classes"] == list("abcd") and payload["metrics"] == {"test_acc": 0.5}
    model, cfg2, _ = load_classifier_checkpoint(tmp_path / "c.pt")
    assert isinstance(model, Classifier) and cfg2 == cfg and model.frozen and not model.training
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(model(x), clf(x))


def test_baseline_checkpoint_round_trip_and_older_files_without_class_names(tmp_path):
    cfg = BaselineRun.model_validate({"model": {"c1": 4, "c2": 8, "fc": 16}, "train": {"lr": 0.01}})
    cnn = _trained_a_little(build_classifier_model(cfg, 7))
    save_classifier_checkpoint(tmp_path / "cnn.pt", cnn, cfg, classes=[str(i) for i in range(7)])
    model, cfg2, payload = load_classifier_checkpoint(tmp_path / "cnn.pt")
    assert isinstance(model, BaselineCNN) and cfg2 == cfg and payload["task"] == "baseline"
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(model(x), cnn(x))
    # A file from before the class names and the task were stored: both come from the file itself.
    old = {k: v for k, v in payload.items() if k not in ("classes", "task")}
    torch.save(old, tmp_path / "old.pt")
    model, cfg3, _ = load_classifier_checkpoint(tmp_path / "old.pt")
    assert isinstance(cfg3, BaselineRun) and torch.equal(model(x), cnn(x))


def test_classifier_loader_rejects_other_files_in_one_line(tmp_path):
    ae_cfg = RunConfig.model_validate({"model": AE_MODELS[0]})
    save_checkpoint(tmp_path / "ae.pt", build_model(ae_cfg), ae_cfg)
    torch.save({"format": "aeopt.classifier/9"}, tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    cases = {"ae.pt": "an autoencoder checkpoint (aeopt.checkpoint/1), not aeopt.classifier/1",
             "future.pt": "not an aeopt checkpoint (format aeopt.classifier/9)",
             "junk.pt": "not a readable aeopt checkpoint", "missing.pt": "no such checkpoint"}
    for name, expected in cases.items():
        with pytest.raises(AeoptError, match=re.escape(expected)) as info:
            load_classifier_checkpoint(tmp_path / name)
        assert "\n" not in str(info.value) and "classifier.pt" in str(info.value)
    # And the other way round: a classifier is not an autoencoder checkpoint.
    cfg = BaselineRun()
    save_classifier_checkpoint(tmp_path / "cnn.pt", build_classifier_model(cfg, 10), cfg,
                               classes=list("0123456789"))
    expected = "a classifier checkpoint (aeopt.classifier/1), not aeopt.checkpoint/1"
    with pytest.raises(AeoptError, match=re.escape(expected)):
        load_checkpoint(tmp_path / "cnn.pt")


def test_early_stopping_counts_epochs_since_the_best():
    # A learning rate far below float32 resolution: the weights, hence the validation figures,
    # never change, so epoch 1 stays the best and the run stops `patience` epochs later.
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 3, (64,))
    cfg = SupervisedConfig(lr=1e-30, weight_decay=0.0, max_epochs=10, patience=2, batch_size=32,
                           augment="none")
    clf = Classifier(_encoder(), 4, hidden=8, n_classes=3, dropout=0.0, normalize_code=False)
    _, fit = fit_classifier(clf, (x[:48], y[:48]), (x[48:], y[48:]), cfg, torch.device("cpu"), seed=0)
    assert fit.stopped_early and fit.epochs == 3 and fit.best_epoch == 1 and len(fit.history) == 3
    assert len({(row["val_acc"], row["val_loss"]) for row in fit.history}) == 1


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                    reason="needs CUDA (gpu_suite.sh runs it)"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("sizes", [(100, 70), (100, 40)])  # 40 < the batch: that fold runs alone
def test_fused_classifier_folds_match_fit_classifier_fold_by_fold(sizes, device):
    from aeopt.training.fused_supervised import fit_classifier_folds

    cfg = SupervisedConfig(lr=3e-3, max_epochs=3, patience=0, batch_size=64, min_steps_per_epoch=1,
                           schedule="cosine", augment="none")
    gen = torch.Generator().manual_seed(0)

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)

    trains, vals = [images(n) for n in sizes], [images(30) for _ in sizes]

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))

    dev = torch.device(device)
    moved = [tuple(t.to(dev) for t in xy) for xy in trains]
    moved_vals = [tuple(t.to(dev) for t in xy) for xy in vals]
    # The reference on the same device: the batch order comes from the device's generator (a CUDA
    # generator's randperm is another order than the CPU's, which moved the losses by 1.5-6.4 %).
    sequential = [fit_classifier(net(k), moved[k], moved_vals[k], cfg, dev, seed=k)
                  for k in range(len(sizes))]
    models = [net(k) for k in range(len(sizes))]
    shown: list[tuple[int, dict[str, float]]] = []
    fused = fit_classifier_folds(models, moved, moved_vals, cfg, dev,
                                 seeds=list(range(len(sizes))),
                                 progress=lambda e, row: shown.append((e, row)))
    # The progress line: one per epoch, the folds' mean validation accuracy.
    assert [e for e, _ in shown] == [1, 2, 3]
    for e, row in shown:
        accs = [f.history[e - 1]["val_acc"] for f in fused]
        assert row["val_acc"] == pytest.approx(sum(accs) / len(accs))
        assert row["folds"] == len(sizes)
    # On the GPU: the same random streams, other kernels (batched matmuls): close, not equal.
    tol = 1e-4 if device == "cpu" else 1e-2
    for (model, fit), got, mine in zip(sequential, fused, models, strict=True):
        for key in ("train_loss", "val_loss"):
            assert [r[key] for r in got.history] == pytest.approx([r[key] for r in fit.history], rel=tol)
        if device == "cpu":
            assert got.best_epoch == fit.best_epoch
            for a, b in zip(model.state_dict().values(), mine.state_dict().values(), strict=True):
                assert torch.allclose(a, b, atol=1e-5)
