"""What `aeopt storage proxy` serves (aeopt.search.proxy): shared, incremental trial reads and writes that
do not queue behind one lock, on Optuna's in-memory storage, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from aeopt.search.proxy import ProxyStorage
from aeopt.search.storage import open_storage


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
    shared = ProxyStorage(inner)
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
    shared = ProxyStorage(inner)
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
    shared = ProxyStorage(inner)
    assert [t.number for t in shared.get_all_trials(study_id, states=(TrialState.RUNNING,))] == [0, 2]
    copy = shared.get_all_trials(study_id)
    copy[0].user_attrs["x"] = 1  # a deep copy: the shared read is not changed by a caller
    assert "x" not in shared.get_all_trials(study_id, deepcopy=False)[0].user_attrs


def test_a_failed_read_is_not_shared_and_others_read_again():
    inner = SlowStorage(delay=0.2, fail_first=1)
    study_id = _study(inner)
    shared = ProxyStorage(inner)
    results, errors = _together(lambda: shared.get_all_trials(study_id, deepcopy=False), 8)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)  # the one whose read failed
    assert all(len(r) == 3 for r in results if r is not None)
    assert sum(r is not None for r in results) == 7


def test_unknown_study_raises_key_error():
    shared = ProxyStorage(SlowStorage(delay=0.0))
    with pytest.raises(KeyError):
        shared.get_all_trials(99)


def test_directions_read_once_until_the_study_is_deleted():
    inner = SlowStorage(delay=0.0)
    study_id = _study(inner)
    shared = ProxyStorage(inner)
    for _ in range(5):
        assert shared.get_study_directions(study_id) == [StudyDirection.MINIMIZE]
    assert inner.direction_reads == 1
    shared.delete_study(study_id)
    with pytest.raises(KeyError):
        shared.get_study_directions(study_id)
    with pytest.raises(KeyError):
        shared.get_all_trials(study_id)


def test_a_study_runs_on_the_shared_storage():
    shared = ProxyStorage(SlowStorage(delay=0.0))
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(storage=shared, sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2, n_trials=8, n_jobs=4)
    assert len(study.trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


# ----- over an RDB storage, as `aeopt storage proxy` serves it ---------------------------------------


class SlowRDB(RDBStorage):
    """Optuna's RDB storage on SQLite whose parameter writes take `delay` s (a database under load),
    and which records how many trials each read fetched and the most parameter writes in flight at once."""

    def __init__(self, url: str, delay: float = 0.0):
        super().__init__(url)
        self.delay, self.fetched = delay, []
        self.in_flight, self.most_in_flight, self._count = 0, 0, threading.Lock()

    def _set_trial_param(self, *args, **kwargs):
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
        finally:
            with self._count:
                self.in_flight -= 1
        return super()._set_trial_param(*args, **kwargs)

    def _get_trials(self, *args, **kwargs):
        trials = super()._get_trials(*args, **kwargs)
        self.fetched.append(len(trials))
        return trials


X = FloatDistribution(0.0, 1.0)


def _params_at_once(storage, study_id, n):
    trial_ids = [storage.create_new_trial(study_id) for _ in range(n)]
    storage.set_trial_param(trial_ids[0], "x", 0.5, X)  # the study's first "x": its distribution is known
    ids = iter(trial_ids)
    lock = threading.Lock()

    def write():
        with lock:
            trial_id = next(ids)
        storage.set_trial_param(trial_id, "y", 0.25, X)

    _, errors = _together(write, n)
    assert not errors


def test_parameter_writes_do_not_queue_behind_one_another(tmp_path):
    # Optuna's _CachedStorage (what its gRPC server is meant to serve) writes each parameter under its
    # one lock: one write in the database at a time. The proxy's storage writes them side by side.
    # Counted, not timed: a loaded machine stretches times (CI once saw 1.6 s for 8 x 0.3 s side by side).
    delay, n = 0.3, 8
    slow = SlowRDB(f"sqlite:///{tmp_path}/cached.db", delay)
    cached = _CachedStorage(slow)
    _params_at_once(cached, cached.create_new_study([StudyDirection.MINIMIZE], "s"), n)
    assert slow.most_in_flight == 1
    slow = SlowRDB(f"sqlite:///{tmp_path}/proxy.db", delay)
    proxy = ProxyStorage(slow)
    study_id = proxy.create_new_study([StudyDirection.MINIMIZE], "s")
    _params_at_once(proxy, study_id, n)
    assert slow.most_in_flight >= n // 2, slow.most_in_flight
    expected = [{"x": 0.5, "y": 0.25}] + [{"y": 0.25}] * (n - 1)
    assert [t.params for t in slow.get_all_trials(study_id)] == expected


def test_reads_fetch_only_unfinished_and_new_trials_and_see_every_write(tmp_path):
    rdb = SlowRDB(f"sqlite:///{tmp_path}/p.db")
    proxy = ProxyStorage(rdb)
    study_id = proxy.create_new_study([StudyDirection.MINIMIZE], "s")
    ids = [proxy.create_new_trial(study_id) for _ in range(5)]
    for trial_id in ids[:3]:
        proxy.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    done, running = TrialState.COMPLETE, TrialState.RUNNING
    assert [t.state for t in proxy.get_all_trials(study_id)] == [done] * 3 + [running] * 2
    proxy.set_trial_param(ids[4], "x", 0.75, X)
    proxy.set_trial_intermediate_value(ids[3], 1, 0.5)
    trials = proxy.get_all_trials(study_id)
    assert rdb.fetched == [5, 2]  # the second read fetched the two running trials only
    assert trials[4].params == {"x": 0.75} and trials[3].intermediate_values == {1: 0.5}
    proxy.set_trial_state_values(ids[4], TrialState.PRUNED)
    new = proxy.create_new_trial(study_id)
    assert [t.number for t in proxy.get_all_trials(study_id, states=(running,))] == [3, 5]
    assert rdb.fetched[-1] == 3  # the two last running trials and the new one
    assert proxy.get_trial(ids[4]).state == TrialState.PRUNED and proxy.get_trial(new).number == 5
    assert proxy.get_trial_id_from_study_id_trial_number(study_id, 5) == new
    assert [t.number for t in proxy.get_all_trials(study_id)] == list(range(6))


def test_an_incompatible_distribution_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    proxy = ProxyStorage(RDBStorage(url))
    study_id = proxy.create_new_study([StudyDirection.MINIMIZE], "s")
    proxy.set_trial_param(proxy.create_new_trial(study_id), "x", 0.5, X)
    bad = CategoricalDistribution(["a", "b"])
    with pytest.raises(ValueError):  # checked against the distribution the proxy knows
        proxy.set_trial_param(proxy.create_new_trial(study_id), "x", 0, bad)
    fresh = ProxyStorage(RDBStorage(url))  # another proxy on the same database: read from it
    with pytest.raises(ValueError):
        fresh.set_trial_param(fresh.create_new_trial(study_id), "x", 0, bad)


@pytest.mark.postgres
def test_a_study_on_postgresql_through_the_proxy_storage_with_many_threads(pg_url):
    """Eight threads ask, write and tell at once on PostgreSQL through one ProxyStorage, each on its own
    pooled connection: what the database holds is what the threads did."""
    rdb = open_storage(pg_url, pool_size=8).optuna.inner._backend
    proxy = ProxyStorage(rdb)
    name = f"proxy_{time.monotonic_ns()}"
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True, constant_liar=True)
    study = optuna.create_study(study_name=name, storage=proxy, sampler=sampler)

    def objective(trial):
        x, y = trial.suggest_float("x", -1, 1), trial.suggest_int("y", 0, 4)
        trial.report(x, 1)
        trial.set_user_attr("seen", x)
        return (x - 0.2) ** 2 + y

    study.optimize(objective, n_trials=24, n_jobs=8)
    direct = RDBStorage(pg_url).get_all_trials(study._study_id)
    assert [t.state for t in direct] == [TrialState.COMPLETE] * 24
    assert [(t.params, t.user_attrs, t.value) for t in direct] == \
        [(t.params, t.user_attrs, t.value) for t in study.trials]
    assert all(t.user_attrs["seen"] == t.params["x"] == t.intermediate_values[1] for t in direct)
