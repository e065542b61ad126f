"""Heartbeats on every storage: a lease for Optuna's journal storages, and stale trials failed with a reason.

Optuna 5 records heartbeats only in its RDB storage (`RDBStorage` is the one `BaseHeartbeat`);
`JournalStorage` has none and the gRPC proxy's client forwards none, so a SIGKILLed worker's trial
stayed RUNNING forever on a journal file, Redis or behind `aeopt storage proxy`.
`HeartbeatJournalStorage` and `HeartbeatGrpcStorage` implement Optuna's `BaseHeartbeat` contract
with a lease (`LeaseHeartbeat`): the running trial's system attr `aeopt:heartbeat` holds the time of its last
beat, written every `heartbeat_interval` s by the heartbeat thread Optuna's `study.optimize` already
starts for heartbeat storages; a RUNNING trial whose last beat (or start) is older than
`grace_period` s is stale. Everything built on the contract then works unchanged: Optuna's
`fail_stale_trials`, and `RetryHeartbeatStaleTrialCallback`, which re-queues the trial.

The lease compares wall-clock times written by different processes: workers of one journal file
share a clock; workers of one Redis on several machines need their clocks in sync (NTP) to well
within the grace period.

`fail_stale_trials` here is Optuna's with one step added: before a stale trial is failed, its
`fail_reason` says so ("worker lost: no heartbeat for 60 s"); a finished trial takes no attrs.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, GrpcStorageProxy

# Optuna's heartbeat contract lives in a private module; RDBStorage implements it the same way.
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "aeopt:heartbeat"  # system attr of a running journal trial: time.time() of its last beat
FAIL_REASON = "fail_reason"  # the user attr of aeopt.search.records.TrialRecord.fail_reason
LOST_REASON = "worker lost"  # how a stale trial's fail_reason begins

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class LeaseHeartbeat(BaseHeartbeat):
    """Optuna's heartbeat contract through a lease in the running trial's system attrs: works on any
    storage that stores trial system attrs (journal file, Redis journal, the gRPC proxy's client)."""

    def _init_lease(self, heartbeat_interval: int, grace_period: int,
                    heartbeat_stale_trial_callback: StaleCallback | None) -> None:
        if heartbeat_interval <= 0 or grace_period <= 0:
            raise ValueError("heartbeat_interval and grace_period must be positive")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except (UpdateFinishedTrialError, KeyError):
            # Another worker judged this trial stale and failed it (this process stalled longer than
            # the grace period): the trial is over, there is nothing left to beat for.
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # The later of the last beat and the start: a re-queued trial carries its dead
            # predecessor's last beat in its copied system attrs until its own first beat.
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = max(float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
            if now - last > self.grace_period:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, trial.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.heartbeat_stale_trial_callback


class HeartbeatJournalStorage(LeaseHeartbeat, JournalStorage):
    """Optuna's journal storage (file or Redis backend) with heartbeats, as `RDBStorage` has them."""

    def __init__(self, backend: BaseJournalBackend, *, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: StaleCallback | None = None) -> None:
        JournalStorage.__init__(self, backend)
        self._init_lease(heartbeat_interval, grace_period, heartbeat_stale_trial_callback)


class HeartbeatGrpcStorage(LeaseHeartbeat, GrpcStorageProxy):
    """The client of a gRPC storage proxy (`aeopt storage proxy`) with heartbeats: Optuna's proxy
    forwards no heartbeat calls, so the lease travels as a trial system attr like any other write."""

    def __init__(self, *, host: str, port: int, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: StaleCallback | None = None) -> None:
        GrpcStorageProxy.__init__(self, host=host, port=port)
        self._init_lease(heartbeat_interval, grace_period, heartbeat_stale_trial_callback)
        # A study's id and directions never change while it exists, yet Optuna asks for them in every
        # ask, tell and should_prune (Hyperband builds a study per bracket): 16 of a trial's ~50
        # calls through the proxy. Each is asked once per study here.
        self._study_ids: dict[str, int] = {}
        self._directions: dict[int, list[StudyDirection]] = {}

    def get_study_id_from_name(self, study_name: str) -> int:
        study_id = self._study_ids.get(study_name)
        if study_id is None:
            study_id = self._study_ids[study_name] = GrpcStorageProxy.get_study_id_from_name(self, study_name)
        return study_id

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        directions = self._directions.get(study_id)
        if directions is None:
            directions = self._directions[study_id] = GrpcStorageProxy.get_study_directions(self, study_id)
        return list(directions)

    def delete_study(self, study_id: int) -> None:
        GrpcStorageProxy.delete_study(self, study_id)
        self._directions.pop(study_id, None)
        self._study_ids = {name: i for name, i in self._study_ids.items() if i != study_id}


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether a dead worker's trial on this storage turns stale and is failed (and re-queued)."""
    return is_heartbeat_enabled(storage)


def grace_seconds(storage: BaseStorage) -> int | None:
    """The storage's grace period in seconds (Optuna's RDB default: twice the interval), or None."""
    if not is_heartbeat_enabled(storage):
        return None
    # A study wraps an RDBStorage in Optuna's _CachedStorage, which forwards the heartbeat calls
    # but not the grace period: read it from the wrapped storage.
    inner = getattr(storage, "_backend", None)
    inner = inner if isinstance(inner, BaseHeartbeat) else storage
    grace = getattr(inner, "grace_period", None)
    return int(grace) if grace is not None else 2 * int(storage.get_heartbeat_interval())


def fail_stale_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Fail the study's RUNNING trials whose worker is gone, each with a `fail_reason`, and run the
    storage's stale-trial callback (which re-queues them); returns the numbers of the trials failed here.
    `storage` is the Optuna storage the study was loaded from (`Storage.optuna`).

    Safe against other workers doing the same at once: a trial failed by another is skipped."""
    if not is_heartbeat_enabled(storage):
        return []
    assert isinstance(storage, BaseHeartbeat)
    reason = f"{LOST_REASON}: no heartbeat for {grace_seconds(storage)} s"
    failed: list[FrozenTrial] = []
    for trial_id in storage._get_stale_trial_ids(storage.get_study_id_from_name(study.study_name)):
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(copy.deepcopy(storage.get_trial(trial_id)))
        except UpdateFinishedTrialError:
            pass  # another worker failed it first (and re-queues it)
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in failed:
        log.warning("trial %d failed: %s; %s", trial.number, reason,
                    "re-queued" if callback is not None else "not re-run")
        if callback is not None:
            callback(study, trial)
    return [t.number for t in failed]
