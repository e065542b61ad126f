"""Self-describing checkpoints: config, weights, metrics and versions in one file.

Everything in it is a tensor, string, number, list or dict, so it loads with
`torch.load(..., weights_only=True)` (no pickled code runs on load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.files import atomic_write_bytes, versions
from aeopt.training.models import Autoencoder, build_model

FORMAT = "aeopt.checkpoint/1"


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: RunConfig, metrics: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    payload = {
        "format": FORMAT,
        "config": cfg.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics or {},
        "versions": versions(),
        **(extra or {}),
    }
    atomic_write_bytes(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[Autoencoder, RunConfig, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise AeoptError(f"{p}: no such checkpoint; train one with `aeopt train CONFIG.yaml --out DIR`")
    try:
        payload = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # unpickling errors differ by torch version
        raise AeoptError(f"{p}: not a readable aeopt checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AeoptError(f"{p}: not an aeopt checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'})")
    from aeopt.config import validate

    # A checkpoint from another aeopt version may not fit this one's schema: say so in one line.
    cfg = validate(RunConfig, payload.get("config"), f"{p} (its config)")
    model = build_model(cfg)
    try:
        model.load_state_dict(payload.get("state_dict") or {})
    except RuntimeError:
        raise AeoptError(f"{p}: its weights do not fit the model its config describes; the file is damaged "
                         f"or from another aeopt version ({payload.get('versions', {}).get('aeopt', '?')})") from None
    return model.to(device), cfg, payload
