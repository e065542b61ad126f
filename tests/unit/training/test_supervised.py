"""The classifier's pieces: batch augmentation, metrics, frozen encoders, the training loop's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aeopt.config import SupervisedConfig
from aeopt.training.supervised import Classifier, augment, augmentation_for, confusion_matrix, evaluate, fit_classifier, per_class_accuracy


def test_augment_shifts_each_image_by_its_own_offset_and_flips():
    x = torch.rand(64, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, shift=2, flip=False)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(64):
        # Every output image is a 28x28 crop of its own zero-padded input at some offset.
        crops = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert crops, f"image {i} is not a shifted copy"
        offsets.add(crops[0])
    assert len(offsets) > 10  # offsets differ across the batch

    flipped = augment(x, torch.Generator().manual_seed(1), shift=0, flip=True)
    same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54
    # Same seed, same batch: reproducible.
    assert torch.equal(augment(x, torch.Generator().manual_seed(3)), augment(x, torch.Generator().manual_seed(3)))


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
    cfg = SupervisedConfig(lr=1e-2, max_epochs=6, patience=0, batch_size=64, min_steps_per_epoch=5, augment="none")
    clf = Classifier(_encoder(), 4, hidden=16, n_classes=4)
    model, fit = fit_classifier(clf, (x[:300], y[:300]), (x[300:], y[300:]), cfg, torch.device("cpu"), seed=0)
    assert fit.epochs == 6 and len(fit.history) == 6
    assert fit.best_val_acc == max(h["val_acc"] for h in fit.history) > 0.9
    # The returned weights are the best epoch's: evaluating them gives that epoch's figures.
    ev = evaluate(model, x[300:], y[300:])
    assert ev.accuracy == pytest.approx(fit.best_val_acc) and ev.loss == pytest.approx(fit.best_val_loss, rel=1e-5)
