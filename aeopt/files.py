"""Writing outputs safely (never a half-written file) and recording the versions that made them."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aeopt.errors import AeoptError


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


@contextmanager
def staged_folder(out: Path, *, keep_existing: bool = True) -> Iterator[Path]:
    """A temporary folder beside `out` to write into; its files join `out` only if the block completes.

    Stopped (Ctrl-C, an error) part-way, `out` is as it was: never a half-written set of outputs.
    With `keep_existing`, the temporary folder starts with `out`'s files (hard links, else copies),
    so that a run can reuse what an earlier one left there (a downloaded checkpoint, say). Files are
    replaced one by one (each whole) when `out` exists; a new `out` appears with one rename."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AeoptError(f"{out}: a file, not a folder; pass a folder for the outputs")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the folder gets the mode a plain mkdir gives (mkdtemp's is 0700).
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    if keep_existing and out.is_dir():
        shutil.copytree(out, tmp, copy_function=_link_or_copy)
    else:
        tmp.mkdir()
    try:
        yield tmp
        if not out.exists():
            os.replace(tmp, out)
        else:
            _merge(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _merge(src: Path, dst: Path) -> None:
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if item.is_dir() and target.is_dir():
            _merge(item, target)
        else:
            os.replace(item, target)
