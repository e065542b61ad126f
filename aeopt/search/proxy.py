"""What `aeopt storage proxy` serves: the study storage, with trial reads shared among its clients.

Every worker's ask, stale-trial check and `should_prune` reads the study's trials; Optuna's gRPC client
asks for the unfinished ones and those finished since its last read, and the proxy's storage reads
them from the database under one lock. With N workers that is N reads of N running trials per epoch
period: the proxy's work grows with the square of the workers, and at 128 simulated workers on 2 cores
requests queued behind that lock for over a minute (profile in BENCHMARKS.md, "Storage load").

`SharedReadStorage` lets the requests that arrive while a read of a study is running share the next
one: at most one read per study in flight, each serving every request that arrived before it
started. No client gets an older view than a read of its own would have given it (the read began
after its request arrived), so read-your-writes holds as before. A study's directions never change:
they are read once.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from optuna.storages import BaseStorage, run_grpc_proxy_server
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

DEFAULT_THREADS = 16  # gRPC handler threads: requests waiting for a shared read must not starve writes


def _forward(name: str) -> Callable[..., Any]:
    def method(self: _Forwarding, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


# Every abstract call of Optuna's storage contract goes to the wrapped storage unchanged.
_Forwarding = type("_Forwarding", (BaseStorage,), {n: _forward(n) for n in BaseStorage.__abstractmethods__})


@dataclass
class _Reads:
    """One study's shared reads: tickets handed out, the newest ticket a finished read covers."""

    issued: int = 0
    covered: int = 0
    reading: bool = False
    trials: list[FrozenTrial] | None = None


class SharedReadStorage(_Forwarding):
    """`inner` with `get_all_trials` shared among concurrent callers and directions read once."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner
        self._cond = threading.Condition()
        self._reads: dict[int, _Reads] = {}
        self._directions: dict[int, list[StudyDirection]] = {}
        self.database_reads = 0  # reads that reached `inner` (for tests and benchmarks)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._shared_read(study_id)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def _shared_read(self, study_id: int) -> list[FrozenTrial]:
        with self._cond:
            reads = self._reads.setdefault(study_id, _Reads())
            reads.issued += 1
            ticket = reads.issued
            while True:
                if reads.covered >= ticket and reads.trials is not None:
                    return reads.trials  # a read that started after this request arrived
                if not reads.reading:
                    reads.reading, covers = True, reads.issued
                    break
                self._cond.wait()
        trials = None
        try:
            trials = self._inner.get_all_trials(study_id, deepcopy=False)
            return trials
        finally:
            with self._cond:
                # A failed read covers no one: each waiter then reads (and fails or not) on its own.
                reads.reading = False
                self.database_reads += 1
                if trials is not None:
                    reads.covered, reads.trials = covers, trials
                self._cond.notify_all()

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        directions = self._directions.get(study_id)
        if directions is None:
            directions = self._directions[study_id] = self._inner.get_study_directions(study_id)
        return list(directions)

    def delete_study(self, study_id: int) -> None:
        self._inner.delete_study(study_id)
        with self._cond:
            self._reads.pop(study_id, None)
            self._directions.pop(study_id, None)


def serve(storage: BaseStorage, host: str, port: int, threads: int = DEFAULT_THREADS) -> None:
    """Serve `storage` over gRPC (Optuna's proxy server) with shared reads; blocks until stopped."""
    run_grpc_proxy_server(SharedReadStorage(storage), host=host, port=port,
                          thread_pool=ThreadPoolExecutor(max_workers=threads))
