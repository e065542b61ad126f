"""Progress bars in a terminal, plain log lines otherwise (CI logs, files, pipes)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def duration_text(seconds: float) -> str:
    """'45 s', '12 min 5 s', '2 h 03 min': short enough for a status line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def time_left(trial_seconds: list[float], remaining: int, workers: int) -> float | None:
    """Seconds until `remaining` more trials finish: the mean of the finished trials' seconds times
    the trials left, divided among the `workers` running them (None before any trial finished)."""
    if not trial_seconds or remaining < 0:
        return None
    mean = sum(trial_seconds) / len(trial_seconds)
    # Trials run one per worker: 3 trials left on 2 workers take two trial-lengths, not 1.5.
    rounds = -(-remaining // max(1, workers))
    return mean * rounds


class Ticker:
    """Logs `line()` every `interval` seconds in which `touch()` was not called, from a daemon thread:
    a slow step still says it is alive (an epoch on a busy CPU can take minutes)."""

    def __init__(self, line: Callable[[], str], interval: float = 10.0, enabled: bool = True):
        self.line, self.interval = line, interval
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aeopt-ticker", daemon=True)
        if enabled:
            self._thread.start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            if time.monotonic() - self._last >= self.interval:
                try:
                    log.info(self.line())
                except Exception:  # noqa: BLE001 (a status line must never end the run it reports on)
                    pass
                self.touch()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


@contextmanager
def ticker(line: Callable[[], str], interval: float = 10.0, enabled: bool = True) -> Iterator[Ticker]:
    t = Ticker(line, interval, enabled)
    try:
        yield t
    finally:
        t.close()
