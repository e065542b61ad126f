"""What a model kind is: `Kind` (schema, model, loss, reconstruction, noise, training step) and
`Autoencoder`, the base class of every kind's model.

Imports nothing of `aeopt.training` (the registry and the engine import this module).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """A fresh activation module for a schema's `activation` name."""
    return _ACTIVATIONS[name]()


_STREAM = threading.local()


@contextmanager
def random_stream(generator: torch.Generator | None) -> Iterator[None]:
    """Draw the models' own randomness (dropout masks, a VAE's samples) from `generator` in this
    thread while the block runs.

    torch's default generator is one per process: fold models trained concurrently in threads
    (aeopt.training.lanes) would take its numbers in whatever order the threads ran, so a seeded
    run would not repeat. With each trainer's own generator here, every fold draws the same numbers
    whichever thread runs it and whatever runs beside it. Outside such a block (the vmapped fused
    step, inference) the default generator is used, as torch's own modules do.
    """
    previous = getattr(_STREAM, "generator", None)
    _STREAM.generator = generator
    try:
        yield
    finally:
        _STREAM.generator = previous


def current_stream() -> torch.Generator | None:
    return getattr(_STREAM, "generator", None)


class Dropout(nn.Dropout):
    """`nn.Dropout` that draws its mask from the thread's `random_stream` when one is set.
    Same state (none) and the same scaling; only the source of the random numbers differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = current_stream()
        if g is None or not self.training or self.p == 0.0:
            return super().forward(x)
        if self.p >= 1.0:
            return torch.zeros_like(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=g)
        return x * keep * (1.0 / (1.0 - self.p))


def normal_like(x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like `x`, from the thread's `random_stream` when one is set."""
    g = current_stream()
    if g is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=g)


def hand_written_cpu_ok(*tensors: torch.Tensor) -> bool:
    """Whether aeopt's hand-written CPU kernels (`Stride2Transposed`, `bce_with_logits_sum`) may take
    these tensors: all on the CPU, none inside vmap (the fused fold step, which needs torch's own
    batching rules) and no CPU autocast (torch's kernels handle its dtypes; aeopt autocasts on CUDA only)."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return (all(t.device.type == "cpu" and not wrapped(t) for t in tensors)
            and not torch.is_autocast_enabled("cpu"))


class Autoencoder(nn.Module):
    """The base of every kind's model.

    `cfg` is its model schema (`cfg.kind` names its kind); `encoder` is the module the fine-tune
    stage reuses (calling it gives the code); `decode` maps codes to images in [0, 1].
    """

    cfg: Any
    encoder: nn.Module

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class StepContext(Protocol):
    """What a training step may use of the engine's `Trainer`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the run's random stream (batches, noise, prior samples)
    kind_state: dict[str, Any]  # a kind's own training state across steps (extra optimizers, say)

    def autocast(self) -> AbstractContextManager[Any]: ...


class LossFn(Protocol):
    def __call__(self, model: nn.Module, x_in: torch.Tensor, target: torch.Tensor, *,
                 beta: float | None = None) -> torch.Tensor: ...


TrainStep = Callable[["Kind", StepContext, torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_step(kind: Kind, ctx: StepContext, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the kind's loss (the forward pass under autocast, the backward outside);
    returns the detached batch loss."""
    with ctx.autocast():
        loss = kind.loss(ctx.model, x_in, target)
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.optimizer.step()
    return loss.detach()


def decode_code(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reconstructions in [0, 1]: decode the encoder's code (for a VAE its mean, no sampling)."""
    return model.decode(model.encode(x))


def no_noise(_cfg: BaseModel) -> float:
    return 0.0


@dataclass(frozen=True)
class Kind:
    """One model kind: its schema (from `aeopt.config.models`) and the functions that train it.

    - `build(model_cfg)`: a fresh `Autoencoder` for a schema instance.
    - `loss(model, x_in, target, *, beta=None)`: the batch-mean training loss of `model` on inputs
      `x_in` against clean `target`. `beta` weights a KL term where the kind has one: None means
      the model's own training value; evaluation passes 1.0 so validation losses compare across
      trials. Kinds without such a term ignore it.
    - `reconstruct(model, x)`: images in [0, 1] for the figures and the test MSE.
    - `noise_std(model_cfg)`: the std of the Gaussian noise added to training inputs (0: none).
    - `train_step(kind, ctx, x_in, target)`: one optimization step on a batch, returning the
      detached loss; `gradient_step` unless the kind trains otherwise (an adversarial AE's
      discriminator step, say).
    - `score(model, x_val)`: None, or (penalty, measures) for a trained model on validation
      images: what the validation loss alone cannot see (an adversarial AE's codes against its
      prior). A study adds the penalty to the trial's value and records the measures.
    """

    name: str
    schema: type[BaseModel]
    build: Callable[[Any], Autoencoder]
    loss: LossFn
    reconstruct: Callable[[nn.Module, torch.Tensor], torch.Tensor] = decode_code
    noise_std: Callable[[Any], float] = no_noise
    train_step: TrainStep = gradient_step
    score: Callable[[nn.Module, torch.Tensor], tuple[float, dict[str, float]]] | None = None

    def step(self, ctx: StepContext, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.train_step(self, ctx, x_in, target)
