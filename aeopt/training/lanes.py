"""Lanes: independent training work run side by side on the CPU, one thread pool worker each.

Why not torch's own threads alone: on the 2-core development machine a fold's epoch of the report's
conv AE (batch 256) ran only 1.3-1.6x faster on two torch threads than on one (oneDNN's convolutions
with 16-32 channels split poorly over OpenMP threads), while two folds' epochs side by side, each in
its own Python thread holding one torch thread, ran 1.7-2.1x faster than one after another on one
thread: torch releases the GIL inside its kernels, and each lane keeps its core busy with whole
convolutions. Over a 5-fold epoch that is 1.10-1.21x the sequential path on two threads for the
report's network, 0.91-1.11x for a wide one (benchmarks/fused_folds.py, BENCHMARKS.md "Fused folds").

A lane holds one torch thread (more where cores outnumber the work) for its whole life. A
one-thread lane never spin-waits at an OpenMP barrier, so a busy neighbour costs it only its share
of a core; that is what made torch's multi-threaded default slow beside busy processes
(aeopt.threads).

Each lane's work must draw its random numbers from its own generator (the engine's `Trainer` does:
`aeopt.training.kinds.base.random_stream`), or a seeded run would depend on thread timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import TypeVar

import torch

from aeopt import threads
from aeopt.switches import turned_off

T = TypeVar("T")
R = TypeVar("R")


def lane_count(work: int, budget: int | None = None) -> int:
    """How many lanes `work` independent pieces get: one per core of the budget
    (`threads.lane_budget`), at most one per piece."""
    budget = threads.lane_budget() if budget is None else budget
    return max(1, min(work, budget))


class LaneCancelled(Exception):
    """Raised by `Lanes.check` in a lane's work once another item of the same `map` has failed."""


class Lanes:
    """A pool of `n` worker threads, each holding `threads_each` torch threads.

    Use as a context manager; `map` runs a function over items, `n` at a time, and returns the
    results in order. When an item raises, the items not yet started are dropped, and long work
    that calls `check()` between its steps (a fine-tune fold, between epochs; every training loop
    between batches, through `threads.tick`) stops there; `map` raises the first error once every
    started item has returned, so no lane is still writing when the caller moves on. An exception
    raised in the caller while it waits (a stop signal) cancels the lanes the same way.
    """

    def __init__(self, n: int, threads_each: int = 1):
        self.n, self.threads_each = n, max(1, threads_each)
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="aeopt-lane", initializer=self._init)
        self._failed = threading.Event()

    def _init(self) -> None:
        # OpenMP's thread count is per calling thread: this sets the lane's own.
        torch.set_num_threads(self.threads_each)
        threads.on_lane_step(self.check)  # between batches, every training loop's `threads.tick()`

    def check(self) -> None:
        """Raise LaneCancelled when another item of this map has failed, or the caller's wait was
        interrupted (a stop signal). Called between the training steps of a lane's work too
        (`threads.tick`), so a cancelled lane stops within a batch, not at its epoch's end."""
        if self._failed.is_set():
            raise LaneCancelled

    def _run(self, fn: Callable[[T], R], item: T) -> R:
        self.check()
        try:
            return fn(item)
        except BaseException:
            self._failed.set()
            raise

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        self._failed.clear()
        futures = [self._pool.submit(self._run, fn, item) for item in items]
        try:
            errors = [f.exception() for f in futures]  # waits for every item
        except BaseException:
            # A stop signal raised in this (main) thread while it waited (aeopt.search.stopping: "a long
            # epoch stops at once"): the lanes stop at their next step, and this waits for that much
            # only, so that no lane is still writing when the stop goes on up.
            self._failed.set()
            futures_wait(futures)
            raise
        # The error that stopped the others, not a lane it cancelled (item order among real errors).
        for error in errors:
            if error is not None and not isinstance(error, LaneCancelled):
                raise error
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lanes(work: int, budget: int | None = None) -> Lanes | None:
    """Lanes for `work` pieces on the CPU, or None where one lane would do (one piece, one core)."""
    budget = threads.lane_budget() if budget is None else budget
    n = lane_count(work, budget)
    if n < 2:
        return None
    return Lanes(n, threads_each=budget // n)


def fold_lanes(folds: int, device: torch.device, concurrent: bool | None = None) -> Lanes | None:
    """Lanes for k unfused fold models on the CPU (None: one after another). As asked, else
    wherever this process may use more than one core (AEOPT_CONCURRENT_FOLDS=0 turns that off: the
    benchmarks' sequential path). Measured on 2 cores, report's network: 1.10-1.21x the sequential
    path on two threads (BENCHMARKS.md, "Fused folds")."""
    if device.type != "cpu" or concurrent is False:
        return None
    if concurrent is None and turned_off("AEOPT_CONCURRENT_FOLDS"):
        return None
    # Asked for explicitly: two lanes at least, even on one core (the tests' way to run them).
    return open_lanes(folds, budget=max(2, threads.lane_budget()) if concurrent else None)
