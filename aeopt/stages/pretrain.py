"""The one way a classifier's autoencoder comes to be: loaded, trained now, or freshly initialised.

Used by the fine-tune stage (`aeopt finetune`) and by the classifier study's objective (each worker
pretrains once), so both start from the same autoencoder for the same config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from aeopt.config import FinetuneRun, run_config
from aeopt.errors import ConfigError
from aeopt.stages.train import fit_autoencoder, train_run
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import prepare
from aeopt.training.engine import set_seed
from aeopt.training.models import Autoencoder, build_model

log = logging.getLogger(__name__)


def autoencoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the weights: every fine-tune run (and every fold) starts from it."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _from_checkpoint(cfg: FinetuneRun, checkpoint: str | Path,
                     device: torch.device) -> tuple[Autoencoder, dict[str, Any]]:
    model, ckpt_cfg, payload = load_checkpoint(checkpoint, device)
    if ckpt_cfg.model != cfg.model:
        raise ConfigError(f"{checkpoint}: its model section ({ckpt_cfg.model.kind}) differs from the "
                          f"config's ({cfg.model.kind}); use the checkpoint's own config or a checkpoint "
                          "of this model")
    return model, {"source": "checkpoint", "checkpoint": str(checkpoint), **(payload.get("metrics") or {})}


def pretrained_autoencoder(
    cfg: FinetuneRun,
    *,
    device: torch.device,
    checkpoint: str | Path | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    amp: bool = False,
    show_progress: bool = False,
    evaluate_test: bool = True,
) -> tuple[Autoencoder, dict[str, Any]]:
    """The autoencoder a fine-tune starts from, and where it came from (`{"source": ...}`).

    `finetune.init = random`: the network freshly initialised from `cfg.seed`. Otherwise loaded from
    `checkpoint` (its model section must match `cfg`'s), or trained now on `cfg`'s 80/20 split as
    `aeopt train` does, writing its outputs to `out`. A study passes `evaluate_test=False`: the
    autoencoder is trained without the test split being touched (and nothing is written)."""
    if cfg.finetune.init == "random":
        set_seed(cfg.seed)
        return build_model(run_config(cfg)).to(device), {"source": "random init"}
    if checkpoint is not None:
        return _from_checkpoint(cfg, checkpoint, device)
    ae_cfg = run_config(cfg)
    if not evaluate_test:
        model, result = fit_autoencoder(ae_cfg, prepare(ae_cfg.data, data_dir), device, amp=amp,
                                        show_progress=show_progress)
        log.info("autoencoder ready: validation loss %.5g after %d epochs", result.best_val, result.epochs)
        return model, {"source": "trained", "val_loss": result.best_val, "epochs": result.epochs,
                       "best_epoch": result.best_epoch, "seconds": round(result.seconds, 3)}
    model, metrics = train_run(ae_cfg, data_dir=data_dir, device=str(device), out=out, amp=amp,
                               show_progress=show_progress)
    return model, {"source": "trained", **{k: v for k, v in metrics.items() if k != "history"}}
