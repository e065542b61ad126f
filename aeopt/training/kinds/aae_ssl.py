"""The semi-supervised AAE with labels (Makhzani et al., "Adversarial Autoencoders", sec. 5).

A model with `categories` > 0 (`aae.CategoricalEncoder`) trains, step after step, on
1. reconstruction of a batch of unlabelled images (encoder and decoder);
2. the adversarial pair on that batch: the discriminator tells prior samples [one-hot y, z] from
   codes [softmax(y), z], then the encoder makes its codes pass (`aae.adversarial_step`); the
   categorical half of the prior pushes the softmax towards confident, balanced categories;
3. cross-entropy of the category head on a batch of the labelled images (shifted and flipped).
One discriminator judges the joint code, where the paper has one per part: the joint prior is the
product of the two, so matching it matches both parts (and makes them independent).

The classifier is the category head itself (`CategoryClassifier`). Validation labels pick the
step (the best of every `eval_every`); the caller scores the test split once. Knows nothing of
Optuna or of the label draws (`aeopt.stages.few_labels`).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.training.kinds.aae import KINDS, AdversarialAutoencoder, adversarial_step
from aeopt.training.layout import adam
from aeopt.training.supervised import augment, evaluate

XY = tuple[torch.Tensor, torch.Tensor]


class CategoryClassifier(nn.Module):
    """The semi-supervised AAE's encoder as a classifier: the logits of its category head."""

    def __init__(self, model: AdversarialAutoencoder):
        super().__init__()
        if not model.cfg.categories:
            raise ValueError("a category classifier needs an AAE with model.categories > 0")
        self.encoder = model.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.logits(x)


@dataclass(frozen=True)
class SemiSupervisedSettings:
    steps: int = 600  # one unlabelled and one labelled batch each
    eval_every: int = 50
    batch_size: int = 256  # unlabelled images per step
    labelled_batch: int = 64  # labelled images per step, drawn with replacement
    shift: int = 2  # augmentation of the labelled batch (pixels; 0: none)
    flip: bool = True


@dataclass
class SemiSupervisedFit:
    best_val_acc: float = -1.0
    best_step: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)


@dataclass
class _Context:  # what adversarial_step uses of a trainer
    model: AdversarialAutoencoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    kind_state: dict[str, Any] = field(default_factory=dict)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


def fit_semi_supervised(model: AdversarialAutoencoder, unlabelled: torch.Tensor, train: XY, val: XY, *,
                        lr: float, seed: int, settings: SemiSupervisedSettings = SemiSupervisedSettings()
                        ) -> tuple[CategoryClassifier, SemiSupervisedFit]:
    """Train `model` (in place) on float images `unlabelled` and labelled `train`; returns its
    category classifier at the step with the best accuracy on `val`, and the fit's record."""
    clf = CategoryClassifier(model)
    device = unlabelled.device
    gen = torch.Generator(device=device).manual_seed(seed)
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    ctx = _Context(model, adam(params, lr=lr), gen)
    supervised_opt = adam(model.encoder.parameters(), lr=lr)
    x_lab, y_lab = train
    fit = SemiSupervisedFit()
    best_state: dict[str, torch.Tensor] | None = None
    for step in range(1, settings.steps + 1):
        model.train()
        idx = torch.randint(0, unlabelled.shape[0], (settings.batch_size,), device=device, generator=gen)
        x = unlabelled[idx]
        adversarial_step(KINDS[0], ctx, x, x)
        j = torch.randint(0, x_lab.shape[0], (settings.labelled_batch,), device=device, generator=gen)
        xl = augment(x_lab[j], gen, settings.shift, settings.flip)
        loss = F.cross_entropy(clf(xl).float(), y_lab[j])
        supervised_opt.zero_grad(set_to_none=True)
        loss.backward()
        supervised_opt.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            acc = evaluate(clf, *val).accuracy
            fit.history.append((step, acc))
            if acc > fit.best_val_acc:
                fit.best_val_acc, fit.best_step = acc, step
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return clf, fit
