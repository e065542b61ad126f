"""The registry of model kinds: `KINDS` maps each `model.kind` name to its `Kind`.

A kind is its config schema (in `aeopt.config.models`, the bottom package), its model, its loss,
how it reconstructs, the input noise it trains with, and its training step where that differs
from one gradient step on the loss (`base.Kind` documents each). Everything else dispatches
through here: `build_model`, `reconstruct`, `reconstruction_loss`, `noise_std` and the engine's
`Trainer` look the kind up by name (`kind_of`) instead of testing classes.

Adding a kind (the adversarial autoencoder is next) touches:
1. `aeopt/config/models.py`: its schema class, with `kind: Literal["<name>"]`, joined to the
   `ModelConfig` union.
2. One module here, `aeopt/training/kinds/<name>.py`: the model (an `Autoencoder` subclass with
   `cfg`, `encoder` and `decode`), its loss, and `KINDS = (Kind(...),)`; below, its import and
   its `KINDS` in the registry (one line each).
3. One study spec, `studies/<name>.yaml`: its search space over the schema's fields.
The unit test `tests/unit/training/test_kinds.py` fails until schema and registry agree.
"""

from __future__ import annotations

from typing import Any

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.training.kinds import aae, conv, vae
from aeopt.training.kinds.base import Autoencoder, Kind, StepContext, gradient_step

# One tuple of kinds per module; a new module's KINDS joins here.
KINDS: dict[str, Kind] = {kind.name: kind for family in (conv.KINDS, vae.KINDS, aae.KINDS) for kind in family}


def kind_of(obj: Any) -> Kind:
    """The `Kind` of a run config, a model config (anything with `.kind`) or a model (`.cfg.kind`)."""
    cfg = obj.model if isinstance(obj, RunConfig) else getattr(obj, "cfg", obj)
    name = getattr(cfg, "kind", None)
    if name not in KINDS:
        raise AeoptError(f"model.kind {name!r} is not a kind aeopt can train (known: {', '.join(KINDS)})")
    return KINDS[name]


__all__ = ["KINDS", "Autoencoder", "Kind", "StepContext", "gradient_step", "kind_of"]
