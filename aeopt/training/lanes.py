"""Lanes: independent training work run side by side on the CPU, one thread pool worker each.

Why not torch's own threads: on the 2-core development machine, one training step of the report's
conv AE (batch 256) took 41 ms on one torch thread and 39-53 ms on two: oneDNN's convolutions with
16-32 channels split poorly over OpenMP threads. Two fold models stepped at the same time, each in
its own Python thread holding one torch thread, took 22-24 ms per step each (1.7-1.9x): torch
releases the GIL inside its kernels, and each lane keeps its core busy with whole convolutions
(benchmarks/fused_folds.py, BENCHMARKS.md "Fused folds").

A lane holds one torch thread (more where cores outnumber the work) for its whole life. A
one-thread lane never spin-waits at an OpenMP barrier, so a busy neighbour costs it only its share
of a core; that is what made torch's multi-threaded default slow beside busy processes
(aeopt.threads).

Each lane's work must draw its random numbers from its own generator (the engine's `Trainer` does:
`aeopt.training.kinds.base.random_stream`), or a seeded run would depend on thread timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from aeopt import threads

T = TypeVar("T")
R = TypeVar("R")


def lane_count(work: int, budget: int | None = None) -> int:
    """How many lanes `work` independent pieces get: one per core of the budget
    (`threads.lane_budget`), at most one per piece."""
    budget = threads.lane_budget() if budget is None else budget
    return max(1, min(work, budget))


class Lanes:
    """A pool of `n` worker threads, each holding `threads_each` torch threads.

    Use as a context manager; `map` runs a function over items, `n` at a time, and returns the
    results in order (the first exception is raised after every item has finished, so no lane is
    still writing when the caller moves on).
    """

    def __init__(self, n: int, threads_each: int = 1):
        self.n, self.threads_each = n, max(1, threads_each)
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="aeopt-lane", initializer=self._init)

    def _init(self) -> None:
        # OpenMP's thread count is per calling thread: this sets the lane's own.
        torch.set_num_threads(self.threads_each)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        futures = [self._pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]  # waits for every item
        for error in errors:
            if error is not None:
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
