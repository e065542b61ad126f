"""Self-describing checkpoints: config, weights, metrics and versions in one file.

Two formats, each a save/load pair with its tag in the file:
- "aeopt.checkpoint/1": an autoencoder (`aeopt train --out`, a study's trial checkpoints);
- "aeopt.classifier/1": a classifier (`aeopt finetune --out`, `aeopt baseline cnn --out`): a head on
  an autoencoder's encoder (its config is a fine-tune config: the autoencoder plus `finetune:`) or
  the baseline CNN (a baseline config).

Everything in them is a tensor, string, number, list or dict, so they load with
`torch.load(..., weights_only=True)` (no pickled code runs on load), and the loaders rebuild the
model from the stored config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from aeopt.config import BaselineRun, FinetuneRun, RunConfig, run_config, validate
from aeopt.errors import AeoptError
from aeopt.files import atomic_write_bytes, versions
from aeopt.training.layout import for_device
from aeopt.training.models import Autoencoder, build_model
from aeopt.training.supervised import BaselineCNN, build_classifier

FORMAT = "aeopt.checkpoint/1"
CLASSIFIER_FORMAT = "aeopt.classifier/1"

_HINTS = {
    FORMAT: "an autoencoder checkpoint (DIR/checkpoint.pt of `aeopt train --out DIR`)",
    CLASSIFIER_FORMAT: "a classifier checkpoint (DIR/classifier.pt of `aeopt finetune --out DIR` "
                       "or `aeopt baseline cnn --out DIR`)",
}

# The file each format has in a run folder (`--out DIR`): a folder given for a checkpoint means that file.
_IN_RUN = {FORMAT: "checkpoint.pt", CLASSIFIER_FORMAT: "classifier.pt"}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _read(path: str | Path, fmt: str, device: torch.device | str) -> tuple[Path, dict[str, Any]]:
    """The payload of a checkpoint of format `fmt`; anything else is one line that says what it is."""
    p = Path(path)
    if p.is_dir():
        # A run folder stands for the checkpoint it holds, as `aeopt report --checkpoint` takes it.
        if not (p / _IN_RUN[fmt]).is_file():
            raise AeoptError(f"{p} is a folder without {_IN_RUN[fmt]}; pass the checkpoint file")
        p = p / _IN_RUN[fmt]
    if not p.is_file():
        looked = p.expanduser().absolute()
        raise AeoptError(f"{p}: no such checkpoint (looked for {looked}); pass {_HINTS[fmt]}")
    try:
        payload = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # unpickling errors differ by torch version
        why = type(exc).__name__
        raise AeoptError(f"{p}: not a readable aeopt checkpoint ({why}); pass {_HINTS[fmt]}") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found in _HINTS and found != fmt:
        raise AeoptError(f"{p}: {_HINTS[found].split(' (')[0]} ({found}), not {fmt}; pass {_HINTS[fmt]}")
    if found != fmt:
        raise AeoptError(f"{p}: not an aeopt checkpoint (format {found or '?'}); pass {_HINTS[fmt]}")
    return p, payload


def _load_weights(p: Path, model: nn.Module, payload: dict[str, Any]) -> None:
    try:
        # A state dict that is not a dict (a crafted or damaged file) raises TypeError or AttributeError.
        model.load_state_dict(payload.get("state_dict") or {})
    except (RuntimeError, TypeError, AttributeError):
        written_by = payload.get("versions", {}).get("aeopt", "?")
        raise AeoptError(f"{p}: its weights do not fit the model its config describes; the file is damaged "
                         f"or from another aeopt version ({written_by})") from None


# ----- autoencoders ------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: RunConfig,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    payload = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "state_dict": _state(model),
        "metrics": metrics or {},
        "versions": versions(),
        **(extra or {}),
    }
    atomic_write_bytes(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[Autoencoder, RunConfig, dict[str, Any]]:
    p, payload = _read(path, FORMAT, device)
    # A checkpoint from another aeopt version may not fit this one's schema: say so in one line.
    cfg = validate(RunConfig, payload.get("config"), f"{p} (its config)")
    model = build_model(cfg)
    _load_weights(p, model, payload)
    return for_device(model, device), cfg, payload  # the layout it trained in (training.layout)


# ----- classifiers -------------------------------------------------------------------------------


ClassifierConfig = FinetuneRun | BaselineRun


def build_classifier_model(cfg: ClassifierConfig, n_classes: int) -> nn.Module:
    """The untrained classifier a config describes: the baseline CNN, or a head on the encoder of
    the autoencoder a fine-tune config describes."""
    if isinstance(cfg, BaselineRun):
        return BaselineCNN(cfg.model, n_classes)
    return build_classifier(build_model(run_config(cfg)), cfg.finetune, n_classes)


def save_classifier_checkpoint(path: str | Path, model: nn.Module, cfg: ClassifierConfig, *,
                               classes: list[str], metrics: dict[str, Any] | None = None,
                               data_source: str | None = None) -> None:
    """classifier.pt: the weights, the config that rebuilds the network, the class names, metrics."""
    payload = {
        "format": CLASSIFIER_FORMAT,
        "task": "baseline" if isinstance(cfg, BaselineRun) else "finetune",
        "config": cfg.model_dump(mode="json"),
        "classes": list(classes),
        "data_source": data_source,
        "state_dict": _state(model),
        "metrics": metrics or {},
        "versions": versions(),
    }
    atomic_write_bytes(Path(path), lambda tmp: torch.save(payload, tmp))


def _n_classes(payload: dict[str, Any]) -> int:
    if payload.get("classes"):
        return len(payload["classes"])
    # Files written before the class names were stored: the last layer's output size.
    matrices = [v for v in (payload.get("state_dict") or {}).values() if getattr(v, "ndim", 0) == 2]
    return int(matrices[-1].shape[0]) if matrices else 10


def load_classifier_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                               ) -> tuple[nn.Module, ClassifierConfig, dict[str, Any]]:
    """(model in eval mode, its config, the payload) of a classifier.pt."""
    p, payload = _read(path, CLASSIFIER_FORMAT, device)
    raw = payload.get("config")
    task: Literal["finetune", "baseline"] = payload.get("task") or (
        "baseline" if isinstance(raw, dict) and "train" in raw else "finetune")
    schema = BaselineRun if task == "baseline" else FinetuneRun
    cfg = validate(schema, raw, f"{p} (its config)")
    model = build_classifier_model(cfg, _n_classes(payload))
    _load_weights(p, model, payload)
    return for_device(model, device).eval(), cfg, payload
