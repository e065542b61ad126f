"""Writing outputs safely (never a half-written file) and recording the versions that made them."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import tempfile
from pathlib import Path


def versions() -> dict[str, str]:
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
