"""Progress bars in a terminal, plain log lines otherwise (CI logs, files, pipes)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("aeopt")


def interactive() -> bool:
    return sys.stderr.isatty()


class _TqdmHandler(logging.Handler):
    """Writes log records above the bar instead of through it (a plain write would tear it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class Progress:
    """`update(postfix)` advances one step; a tqdm bar on a TTY, a log line per step elsewhere."""

    def __init__(self, total: int | None, desc: str, unit: str = "epoch", enabled: bool = True):
        self.desc, self.total, self.n = desc, total, 0
        self.bar = None
        if enabled and interactive():
            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
            self._swapped = []
            for h in list(log.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    th = _TqdmHandler(h.level)
                    th.setFormatter(h.formatter)
                    log.removeHandler(h)
                    log.addHandler(th)
                    self._swapped.append((h, th))
        self.enabled = enabled

    def update(self, postfix: dict[str, object] | None = None, n: int = 1) -> None:
        self.n += n
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in (postfix or {}).items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(n)
        elif self.enabled:
            total = f"/{self.total}" if self.total else ""
            log.info("%s %d%s %s", self.desc, self.n, total, text)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            for h, th in self._swapped:
                log.removeHandler(th)
                log.addHandler(h)
            self._swapped = []


@contextmanager
def progress(total: int | None, desc: str, unit: str = "epoch", enabled: bool = True) -> Iterator[Progress]:
    p = Progress(total, desc, unit, enabled)
    try:
        yield p
    finally:
        p.close()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
