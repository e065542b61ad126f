"""The proxy's shared reads (aeopt.search.proxy) and the gRPC client's per-study caches."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from aeopt.search.proxy import SharedReadStorage


class SlowStorage(InMemoryStorage):
    """Optuna's in-memory storage whose trial reads take `delay` s, counted (a database under load)."""

    def __init__(self, delay: float = 0.2, fail_first: int = 0):
        super().__init__()
        self.delay, self.reads, self.fail_first = delay, 0, fail_first
        self.direction_reads = 0
        self._count = threading.Lock()

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        with self._count:
            self.reads += 1
            failing = self.reads <= self.fail_first
        time.sleep(self.delay)
        if failing:
            raise ConnectionError("connection reset")
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_study_directions(self, study_id):
        self.direction_reads += 1
        return super().get_study_directions(study_id)


def _study(inner):
    study_id = inner.create_new_study([StudyDirection.MINIMIZE], "s")
    for _ in range(3):
        inner.create_new_trial(study_id)
    return study_id


def _together(fn, n):
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results, errors


def test_concurrent_reads_share_at_most_two_database_reads():
    inner = SlowStorage(delay=0.3)
    study_id = _study(inner)
    shared = SharedReadStorage(inner)
    results, errors = _together(lambda: shared.get_all_trials(study_id, deepcopy=False), 24)
    assert not errors
    # One read starts; every request that arrived during it shares the next one.
    assert inner.reads <= 2, inner.reads
    assert all([t.number for t in r] == [0, 1, 2] for r in results)
    # Without sharing, each request is a read of its own.
    alone = SlowStorage(delay=0.01)
    _together(lambda: alone.get_all_trials(study_id, deepcopy=False), 24)
    assert alone.reads == 24


def test_a_write_before_the_request_is_always_seen():
    inner = SlowStorage(delay=0.4)
    study_id = _study(inner)
    shared = SharedReadStorage(inner)
    early = threading.Thread(target=shared.get_all_trials, args=(study_id,))
    early.start()
    time.sleep(0.1)  # that read is running and has not seen what follows
    trial_id = inner.create_new_trial(study_id)
    inner.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    seen = shared.get_all_trials(study_id, states=(TrialState.COMPLETE,))
    early.join()
    assert [t.number for t in seen] == [3]
    assert inner.reads == 2


def test_states_filter_and_copies():
    inner = SlowStorage(delay=0.0)
    study_id = _study(inner)
    inner.set_trial_state_values(inner.get_trial_id_from_study_id_trial_number(study_id, 1), TrialState.FAIL)
    shared = SharedReadStorage(inner)
    assert [t.number for t in shared.get_all_trials(study_id, states=(TrialState.RUNNING,))] == [0, 2]
    copy = shared.get_all_trials(study_id)
    copy[0].user_attrs["x"] = 1  # a deep copy: the shared read is not changed by a caller
    assert "x" not in shared.get_all_trials(study_id, deepcopy=False)[0].user_attrs


def test_a_failed_read_is_not_shared_and_others_read_again():
    inner = SlowStorage(delay=0.2, fail_first=1)
    study_id = _study(inner)
    shared = SharedReadStorage(inner)
    results, errors = _together(lambda: shared.get_all_trials(study_id, deepcopy=False), 8)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)  # the one whose read failed
    assert all(len(r) == 3 for r in results if r is not None)
    assert sum(r is not None for r in results) == 7


def test_unknown_study_raises_key_error():
    shared = SharedReadStorage(SlowStorage(delay=0.0))
    with pytest.raises(KeyError):
        shared.get_all_trials(99)


def test_directions_read_once_until_the_study_is_deleted():
    inner = SlowStorage(delay=0.0)
    study_id = _study(inner)
    shared = SharedReadStorage(inner)
    for _ in range(5):
        assert shared.get_study_directions(study_id) == [StudyDirection.MINIMIZE]
    assert inner.direction_reads == 1
    shared.delete_study(study_id)
    with pytest.raises(KeyError):
        shared.get_study_directions(study_id)
    with pytest.raises(KeyError):
        shared.get_all_trials(study_id)


def test_a_study_runs_on_the_shared_storage():
    shared = SharedReadStorage(SlowStorage(delay=0.0))
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(storage=shared, sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2, n_trials=8, n_jobs=4)
    assert len(study.trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
