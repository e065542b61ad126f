"""A contrastive auxiliary term for autoencoder training (SimCLR: Chen et al., "A Simple Framework
for Contrastive Learning of Visual Representations", ICML 2020).

Reconstruction alone teaches the encoder pixel features: on Fashion-MNIST a classifier fine-tuned
from them at 100 or 1,000 labels is no better than one from random initialisation (BENCHMARKS.md,
few labels). This term makes the encoder's code also agree across two strong views of the same
image and differ from the other images' (NT-Xent), which is what a classifier needs.

Per training batch, after the kind's own step (`ContrastiveTerm.step`, called by the engine's
`Trainer`): two strong views of each image (aeopt.training.views.strong_augment: whole-batch
tensor ops on the device, no per-image transforms), the encoder's codes through a small MLP
projection head, NT-Xent at `temperature`, one step of its own optimizer (the run's optimizer kind)
over the encoder and the head at `weight` times the run's learning rate: with Adam a loss's scale
does not change its step, so the weight scales the step itself. The head is thrown away after
training: the checkpoint holds the autoencoder only, so `aeopt baseline few-labels -e NAME=CKPT`
uses the encoder as it uses any other.

Knows nothing of Optuna or of labels.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.training.views import StrongViews, strong_augment


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalized temperature-scaled cross-entropy of SimCLR for n pairs (a[i], b[i]): each of
    the 2n projections must pick its partner among the other 2n - 1 by cosine similarity."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # an image is not its own partner
    partner = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)])
    return F.cross_entropy(sim, partner)


class ProjectionHead(nn.Module):
    """code -> hidden -> projection (SimCLR's g): the loss acts on its output, so the code itself
    keeps what the augmentations change (the head absorbs the invariance)."""

    def __init__(self, code_dim: int, size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(code_dim, size), nn.BatchNorm1d(size), nn.ReLU(),
                                 nn.Linear(size, size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _views(x: torch.Tensor, gen: torch.Generator, flip: bool,
           crop: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    aug = StrongViews()  # FixMatch's strong view: rotation, shift, scale, jitter, cutout
    return (strong_augment(x, gen, aug, flip=flip, crop=crop),
            strong_augment(x, gen, aug, flip=flip, crop=crop))


class ContrastiveTerm:
    """The term's projection head and optimizer for one model (see the module's docstring)."""

    def __init__(self, encoder: nn.Module, code_dim: int, *, weight: float, temperature: float,
                 projection: int, flip: bool, optimizer: type[torch.optim.Optimizer], lr: float,
                 device: torch.device, crop: float = 0.0):
        self.encoder = encoder
        self.head = ProjectionHead(code_dim, projection).to(device)
        self.weight, self.temperature, self.flip, self.crop = weight, temperature, flip, crop
        params = [*encoder.parameters(), *self.head.parameters()]
        self.base_lr = lr * weight
        self.optimizer = optimizer(params, lr=self.base_lr)

    def set_lr_factor(self, factor: float) -> None:
        """Follow the run's learning-rate schedule (the engine's StepSchedule factor)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * factor

    def loss(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a, b = _views(x, gen, self.flip, self.crop)
        return nt_xent(self.head(self.encoder(a)), self.head(self.encoder(b)), self.temperature)

    def step(self, x: torch.Tensor, gen: torch.Generator,
             autocast: AbstractContextManager[Any] | None = None) -> torch.Tensor:
        """One step on a batch of clean images in [0, 1] (the forward pass under `autocast`, the
        backward outside); returns the detached NT-Xent (unweighted)."""
        self.head.train()
        with autocast if autocast is not None else nullcontext():
            loss = self.loss(x, gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


@torch.no_grad()
def contrastive_loss(encoder: nn.Module, head: nn.Module, x: torch.Tensor, *, temperature: float,
                     seed: int = 0, flip: bool = True, batch: int = 256, crop: float = 0.0) -> float:
    """Mean NT-Xent of `encoder` and `head` (eval mode) over `x` in batches of `batch`, with views
    drawn from a fixed seed: a score that compares encoders on the same pairs."""
    was = encoder.training, head.training
    encoder.eval()
    head.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, x.shape[0] - 1, batch):
        chunk = x[start : start + batch]
        if chunk.shape[0] < 2:
            break
        a, b = _views(chunk, gen, flip, crop)
        total += float(nt_xent(head(encoder(a)), head(encoder(b)), temperature)) * chunk.shape[0]
        count += chunk.shape[0]
    encoder.train(was[0])
    head.train(was[1])
    return total / max(count, 1)
