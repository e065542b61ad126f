"""Writing outputs safely (never a half-written file) and recording the versions that made them.

Every output path a user gives goes through here, so that one that cannot be written (a folder where
a file should go, a file where a folder should, no permission, a full disk) is one line naming the
path and what to do, not a traceback: `output_file` / `output_folder` check it before the work starts,
and the writers below turn an OSError into the same kind of line if it happens anyway."""

from __future__ import annotations

import errno
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


_A_FOLDER = "it is a folder; give a file name (inside it, or elsewhere)"
_ELSEWHERE = "choose another path, or move that file away"


def _in_the_way(path: Path) -> Path | None:
    """The nearest of `path`'s parents that exists and is not a folder (nothing can be made below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _nearest_existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def cannot_write(path: Path, exc: OSError) -> AeoptError:
    """One line for an OSError met writing `path`: what is wrong and what to do."""
    blocker = _in_the_way(path)
    if blocker is not None:
        return AeoptError(f"cannot write {path}: {blocker} is a file, not a folder; {_ELSEWHERE}")
    hints = {errno.EISDIR: _A_FOLDER,
             errno.EACCES: "permission denied; choose a folder you can write to",
             errno.EPERM: "permission denied; choose a folder you can write to",
             errno.EROFS: "read-only file system; choose a folder on another disk",
             errno.ENOSPC: "no space left on the disk; free some, or choose another disk",
             errno.EDQUOT: "disk quota exceeded; free some space, or choose another disk",
             errno.ENAMETOOLONG: "file name too long; choose a shorter path"}
    why = hints.get(exc.errno or 0, f"{exc.strerror or type(exc).__name__}; choose another path")
    return AeoptError(f"cannot write {path}: {why}")


def output_file(path: str | Path) -> Path:
    """`path` checked, before any work, as a file to write: not a folder, and in a folder that is or
    can be made, and written to. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise AeoptError(f"cannot write {path}: {_A_FOLDER}")
    _check_parent(path)
    return path


def output_folder(path: str | Path) -> Path:
    """`path` checked, before any work, as a folder to write outputs into (it may not exist yet).
    Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AeoptError(f"{path}: a file, not a folder; pass a folder for the outputs")
    _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    blocker = _in_the_way(path)
    if blocker is not None:
        raise AeoptError(f"cannot write {path}: {blocker} is a file, not a folder; {_ELSEWHERE}")
    # Outputs are written beside `path` first (a temporary name in its folder), then renamed.
    existing = _nearest_existing(path.parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AeoptError(f"cannot write {path}: permission denied in {existing}; choose a folder you can "
                         "write to")


def make_folder(folder: Path) -> Path:
    """mkdir -p, with a failure as one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(folder, exc) from exc
    return folder


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    if path.is_dir():
        raise AeoptError(f"cannot write {path}: {_A_FOLDER}")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        # mkstemp makes the file 0600; outputs are shared (dashboards, containers), so give them
        # the mode a plain open() would.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder made at `path` meanwhile, permissions
        raise cannot_write(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
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
    out = output_folder(out)
    # mkdir, not mkdtemp: the folder gets the mode a plain mkdir gives (mkdtemp's is 0700).
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if keep_existing and out.is_dir():
                shutil.copytree(out, tmp, copy_function=_link_or_copy)
            else:
                tmp.mkdir()
        except OSError as exc:
            raise cannot_write(out, exc) from exc
        yield tmp
        try:
            if not out.exists():
                os.replace(tmp, out)
            else:
                _merge(tmp, out)
        except OSError as exc:  # e.g. a folder inside `out` where a new file goes
            raise cannot_write(Path(exc.filename2) if exc.filename2 else out, exc) from exc
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
