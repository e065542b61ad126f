"""Self-describing checkpoints: config, weights, metrics and versions in one file.

Everything in it is a tensor, string, number, list or dict, so it loads with
`torch.load(..., weights_only=True)` (no pickled code runs on load).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.models import Autoencoder, build_model

FORMAT = "aeopt.checkpoint/1"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("aeopt", "torch", "torchvision", "optuna", "optuna-dashboard", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _umask_mode() -> int:
    # Read once at import: os.umask can only be read by setting it, which is racy in threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file 0600; outputs are shared (dashboards, containers), so give them
        # the mode a plain open() would.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


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
