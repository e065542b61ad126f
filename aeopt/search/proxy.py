"""What `aeopt storage proxy` serves: the study storage, with trial reads shared among its clients and
writes that do not queue behind one another.

Optuna's recipe for its gRPC server is the RDB storage inside its `_CachedStorage`, which reads a
study's unfinished trials and writes every suggested parameter while holding one lock for all
studies. With N workers behind one proxy that is N reads of N running trials per epoch period, and
every ask's 6 parameter writes queued one at a time: at 128 simulated workers on 2 cores requests
waited over a minute, and at 256 the simultaneous start's 1,536 parameter writes took minutes (the
profile is in BENCHMARKS.md, "Storage load").

`ProxyStorage` serves the storage behind it with its own cache and no lock held across a database
call:

- **Trial reads are shared and incremental.** A study has at most one read in flight; the requests
  that arrive while it runs share the next one, which serves every request that arrived before it
  started, so no client gets an older view than a read of its own would have given it
  (read-your-writes holds). A read fetches only the trials not finished at the last read and the
  trials created since (on an RDB storage, as `_CachedStorage` does); finished trials are cached.
- **Writes go straight to the database**, each on its own pooled connection (the proxy asks for one
  per gRPC handler thread). A parameter write checks its distribution against the study's cached
  one, as `_CachedStorage` does, instead of reading an older trial's parameter first.
- A trial read again unchanged keeps its object, so the gRPC server (search/proxy_grpc.py) encodes
  its answer once, not once per request.
- A study's directions never change: they are read once.

Optuna's gRPC client caches finished trials itself and asks for the unfinished ones and those
finished since its last read; the answers served here carry the same trials a direct read would.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage  # what open_storage wraps an RDB storage in
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from aeopt.search.retry import RetryingStorage
from aeopt.search.storage import Storage

DEFAULT_THREADS = 16  # gRPC handler threads, and as many database connections


def _forward(name: str) -> Callable[..., Any]:
    def method(self: _Forwarding, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


# Every abstract call of Optuna's storage contract goes to the wrapped storage unchanged.
_Forwarding = type("_Forwarding", (BaseStorage,), {n: _forward(n) for n in BaseStorage.__abstractmethods__})


@dataclass
class _Study:
    """One study's cache: its trials by number, what the next read must fetch, its shared reads."""

    trials: dict[int, FrozenTrial] = field(default_factory=dict)
    unfinished: set[int] = field(default_factory=set)  # trial ids to read again
    last_finished: int = -1  # trials with a larger id are read too (created since)
    ordered: list[FrozenTrial] | None = None  # `trials` by number, until the next merge
    issued: int = 0  # tickets handed to requests
    covered: int = 0  # the newest ticket a finished read serves
    reading: bool = False
    directions: list[StudyDirection] | None = None
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)


class ProxyStorage(_Forwarding):
    """`inner` (an RDB storage, or any Optuna storage) for many concurrent proxy clients (module doc)."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner
        self._rdb = inner if isinstance(inner, RDBStorage) else None
        self._cond = threading.Condition()  # guards the caches; never held across a database call
        self._studies: dict[int, _Study] = {}
        self._trial_study: dict[int, int] = {}  # trial id -> study id (from its creation or a read)
        self._trial_key: dict[int, tuple[int, int]] = {}  # trial id -> (study id, number), from reads
        self.database_reads = 0  # trial reads that reached `inner` (for tests and benchmarks)

    # Trial reads.
    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._shared_read(study_id)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def _shared_read(self, study_id: int) -> list[FrozenTrial]:
        with self._cond:
            study = self._studies.setdefault(study_id, _Study())
            study.issued += 1
            ticket = study.issued
            while True:
                if study.covered >= ticket:
                    return self._ordered(study)  # a read that started after this request arrived
                if not study.reading:
                    study.reading, covers = True, study.issued
                    unfinished, last = set(study.unfinished), study.last_finished
                    break
                self._cond.wait()
        fresh = None
        try:
            fresh = self._fetch(study_id, unfinished, last)
        finally:
            with self._cond:
                # A failed read covers no one: each waiter then reads (and fails or not) on its own.
                study.reading = False
                self.database_reads += 1
                if fresh is not None:
                    self._merge(study_id, study, fresh)
                    study.covered = covers
                self._cond.notify_all()
        with self._cond:
            return self._ordered(study)

    def _fetch(self, study_id: int, unfinished: set[int], last: int) -> list[FrozenTrial]:
        if self._rdb is not None:
            # Optuna's incremental read (what _CachedStorage does): raises KeyError for an unknown study.
            return self._rdb._get_trials(study_id, None, unfinished, last)
        return [t for t in self._inner.get_all_trials(study_id, deepcopy=True)
                if t._trial_id in unfinished or t._trial_id > last]

    def _merge(self, study_id: int, study: _Study, fresh: list[FrozenTrial]) -> None:
        changed = False
        for trial in fresh:
            old = study.trials.get(trial.number)
            if old is not None and old == trial:
                continue  # the same object as before (its answer stays encoded): most running trials
            changed = True
            study.trials[trial.number] = trial
            self._trial_study[trial._trial_id] = study_id
            self._trial_key[trial._trial_id] = (study_id, trial.number)
            if trial.state.is_finished():
                study.last_finished = max(study.last_finished, trial._trial_id)
                study.unfinished.discard(trial._trial_id)
            else:
                study.unfinished.add(trial._trial_id)
        if changed:
            study.ordered = None

    @staticmethod
    def _ordered(study: _Study) -> list[FrozenTrial]:
        if study.ordered is None:  # samplers expect trials by number
            study.ordered = sorted(study.trials.values(), key=lambda t: t.number)
        return study.ordered

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._cond:
            key = self._trial_key.get(trial_id)
            study = self._studies.get(key[0]) if key is not None else None
            cached = study.trials.get(key[1]) if study is not None and key is not None else None
        if cached is not None and cached.state.is_finished():
            return cached  # a finished trial never changes
        return self._inner.get_trial(trial_id)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._cond:
            study = self._studies.get(study_id)
            trial = study.trials.get(trial_number) if study is not None else None
        if trial is not None:
            return trial._trial_id
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        with self._cond:
            study = self._studies.get(study_id)
            directions = study.directions if study is not None else None
        if directions is None:
            directions = self._inner.get_study_directions(study_id)
            with self._cond:
                self._studies.setdefault(study_id, _Study()).directions = directions
        return list(directions)

    # Writes: straight to the storage, on the calling thread's own connection.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._inner.create_new_trial(study_id, template_trial)
        with self._cond:
            self._trial_study[trial_id] = study_id
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        with self._cond:
            study_id = self._trial_study.get(trial_id)
            study = self._studies.get(study_id) if study_id is not None else None
            known = study.distributions.get(param_name) if study is not None else None
        if self._rdb is None:
            self._inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        else:
            # With a known distribution Optuna checks compatibility against it instead of reading an
            # older trial's parameter; without one it reads (the first write of a name in this proxy).
            self._rdb._set_trial_param(trial_id, param_name, param_value_internal, distribution, known)
        if known is None and study_id is not None:
            with self._cond:
                study = self._studies.setdefault(study_id, _Study())
                study.distributions.setdefault(param_name, distribution)

    def delete_study(self, study_id: int) -> None:
        self._inner.delete_study(study_id)
        with self._cond:
            self._studies.pop(study_id, None)
            self._trial_study = {t: s for t, s in self._trial_study.items() if s != study_id}
            self._trial_key = {t: k for t, k in self._trial_key.items() if k[0] != study_id}


def proxy_storage(storage: Storage) -> BaseStorage:
    """What `aeopt storage proxy` serves for an opened storage: `ProxyStorage` over the RDB storage
    (not Optuna's `_CachedStorage`), inside the same outage-riding wrapper every aeopt storage has."""
    optuna_storage = storage.optuna
    inner = optuna_storage.inner if isinstance(optuna_storage, RetryingStorage) else optuna_storage
    if isinstance(inner, _CachedStorage):
        inner = inner._backend
    return RetryingStorage(ProxyStorage(inner), display=storage.display, reached=True, url=storage.url)


def serve(storage: BaseStorage, host: str, port: int, threads: int = DEFAULT_THREADS) -> None:
    """Serve `storage` (see `proxy_storage`) over gRPC; blocks until stopped."""
    # grpcio is an optional dependency ('aeopt[grpc]'): `aeopt` runs without it until a proxy starts.
    from aeopt.search.proxy_grpc import make_server  # noqa: PLC0415

    server = make_server(storage, host, port, threads)
    server.start()
    server.wait_for_termination()
