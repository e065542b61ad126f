"""The gRPC proxy's client (HeartbeatGrpcStorage) through a real in-process proxy server."""

from __future__ import annotations

import socket

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from aeopt.search.heartbeat import HEARTBEAT_ATTR, HeartbeatGrpcStorage
from aeopt.search.proxy import ProxyStorage
from aeopt.search.proxy_grpc import make_server  # what `aeopt storage proxy` serves


class Counting(ProxyStorage):
    """What the proxy's servicer asks its storage for: one call per RPC."""

    def __init__(self, url: str):
        super().__init__(RDBStorage(url))
        self.calls: dict[str, int] = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def get_study_directions(self, study_id):
        self._count("directions")
        return super().get_study_directions(study_id)

    def get_study_id_from_name(self, study_name):
        self._count("id")
        return super().get_study_id_from_name(study_name)


@pytest.fixture
def proxied(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inner = Counting(f"sqlite:///{tmp_path}/proxied.db")
    server = make_server(inner, "127.0.0.1", port, threads=4)
    server.start()
    inner.servicer = server.servicer
    client = HeartbeatGrpcStorage(host="127.0.0.1", port=port, heartbeat_interval=1, grace_period=3)
    client.wait_server_ready(timeout=30)
    yield inner, client
    client.close()
    server.stop(0)


def test_study_id_and_directions_asked_once_per_study(proxied):
    inner, client = proxied
    study = optuna.create_study(study_name="s", storage=client, pruner=optuna.pruners.HyperbandPruner(1, 4))

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        for step in range(1, 4):
            trial.report(x * x + 1 / step, step)
            if trial.should_prune():  # Hyperband builds a study per bracket: an id lookup each time
                raise optuna.TrialPruned()
        return x * x

    study.optimize(objective, n_trials=6)
    assert len([t for t in study.trials if t.state.is_finished()]) == 6
    assert inner.calls.get("directions", 0) == 1
    assert inner.calls.get("id", 0) <= 1
    # The lease still travels as a trial system attr: the heartbeat thread beat for every trial.
    assert all(HEARTBEAT_ATTR in t.system_attrs for t in study.trials)


def test_deleted_study_forgets_its_id(proxied):
    _, client = proxied
    first = optuna.create_study(study_name="s", storage=client)
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna.delete_study(study_name="s", storage=client)
    second = optuna.create_study(study_name="s", storage=client)
    # SQLite may give the new study the deleted one's id: neither the client's caches nor the proxy's
    # may then serve the deleted study's trials.
    assert optuna.load_study(study_name="s", storage=client)._study_id == second._study_id
    assert second.trials == []
    assert client.get_all_trials(second._study_id, states=(TrialState.RUNNING,)) == []


def test_an_unchanged_trial_is_encoded_once_and_a_change_is_seen(proxied):
    inner, client = proxied
    study = optuna.create_study(study_name="s", storage=client)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    running = study.ask()  # a worker's running trial
    other = HeartbeatGrpcStorage(host=client._host, port=client._port, heartbeat_interval=1, grace_period=3)
    watcher = optuna.load_study(study_name="s", storage=other)  # another worker, reading each epoch
    try:
        assert len(watcher.get_trials()) == 4
        encoded = inner.servicer.encoded
        for _ in range(3):  # the running trial is sent each time, unchanged: not encoded again
            assert watcher.get_trials()[-1].intermediate_values == {}
        assert inner.servicer.encoded == encoded
        running.report(0.5, 1)
        assert watcher.get_trials()[-1].intermediate_values == {1: 0.5}
        assert inner.servicer.encoded == encoded + 1
    finally:
        other.close()
