"""A worker: load the study and its spec from the storage, then run trials until the target.

`n_trials` is a study-wide target: the worker stops once the study holds that many finished
(complete or pruned) trials, so several workers together finish exactly N, not N each.

A worker never loops on failures: it stops with `TooManyFailuresError` (the CLI: one line, exit 2)
after `max_consecutive_failures` failed trials in a row of its own, or before starting a trial in a
study that holds more failed trials than its failure budget. Every trial it fails carries a
`fail_reason`; a dead worker's trials are failed ("worker lost") and re-queued by the next worker,
which looks for them when it starts and before each trial (`aeopt.search.heartbeat`). A trial a stop
signal ends is failed ("stopped by signal N") and re-queued the same way (`_requeue_stopped`).

A `timeout` is a wall-clock budget from the worker's start: no trial starts after it, and the
running trial stops at the first epoch boundary past it (`aeopt.search.objective.stop_at_deadline`).
After each finished trial the worker logs an estimate of the time the study has left.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from aeopt.config import SearchSpec
from aeopt.errors import AeoptError, StorageError
from aeopt.progress import Progress, duration_text, progress, time_left
from aeopt.search.env import env_int
from aeopt.search.heartbeat import FAIL_REASON, LOST_REASON, fail_stale_trials
from aeopt.search.objective import (
    DEADLINE_REASON,
    STOPPED_BY,
    TRIAL_ERRORS,
    SurplusTrialError,
    fail_reason,
)
from aeopt.search.records import StudyCounts, TrialRecord, best_value_text
from aeopt.search.samplers import build_pruner, build_sampler
from aeopt.search.space import grid_size
from aeopt.search.stopping import (
    StopSignal,
    clear_stop_requests,
    install_stop_handlers,
    raise_if_stop_requested,
)
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study
from aeopt.search.tasks import make_objective
from aeopt.threads import hold_threads

log = logging.getLogger(__name__)

DEFAULT_MAX_CONSECUTIVE_FAILURES = 5


class TooManyFailuresError(AeoptError):
    """Trials keep failing: this worker's last K in a row, or more than the study's failure budget."""


@dataclass(frozen=True)
class FailureLimits:
    """When a worker gives up on failing trials (None: no limit of that kind).

    `consecutive`: this worker's own failed trials in a row. `study`: the failed trials the whole
    study may hold before no worker starts another (default: max(10, 2 x the target), where the
    target is `n_trials`, or the finished trials so far when there is none)."""

    consecutive: int | None = DEFAULT_MAX_CONSECUTIVE_FAILURES
    study: int | None = None

    @classmethod
    def from_env(cls, consecutive: int | None = None, study: int | None = None) -> FailureLimits:
        """Arguments first, then AEOPT_MAX_CONSECUTIVE_FAILURES / AEOPT_MAX_FAILED_TRIALS, then defaults."""
        consecutive = (consecutive or env_int("AEOPT_MAX_CONSECUTIVE_FAILURES")
                       or DEFAULT_MAX_CONSECUTIVE_FAILURES)
        return cls(consecutive=consecutive, study=study or env_int("AEOPT_MAX_FAILED_TRIALS"))

    def study_budget(self, target: int | None, finished: int) -> int:
        return self.study or max(10, 2 * (target or finished))


class Step(enum.Enum):
    RUN = "run a trial"
    WAIT = "wait for other workers"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str = ""


def next_step(counts: StudyCounts, target: int | None, heartbeat: bool) -> Decision:
    """What a worker does next, given the study's counts and the study-wide target.

    Run a trial while the study is short of `target` finished trials. When the trials still
    needed are all running in other workers, wait if the storage has heartbeats (should one of
    those workers die, its trial turns stale and is re-queued as WAITING, and this worker takes
    it), else stop: without heartbeats a dead worker's trial would be waited for forever.
    """
    if not target:
        return Decision(Step.RUN)
    if counts.finished >= target:
        return Decision(Step.STOP, f"the study holds {counts.finished} finished trials")
    # Waiting trials past the target (enqueued points) stay for a later, larger target: run now, they
    # would fail as surplus. A dead worker's re-queued copy is within it: the original is FAIL.
    if counts.finished + counts.running >= target:
        if heartbeat:
            return Decision(Step.WAIT, "the remaining trials are running in other workers")
        return Decision(Step.STOP, "the remaining trials are running in other workers")
    return Decision(Step.RUN)


@dataclass
class WorkerSummary:
    trials: list[FrozenTrial] = field(default_factory=list)  # the trials this worker ran
    stopped_because: str = ""

    @property
    def counts(self) -> StudyCounts:
        return StudyCounts.of(self.trials)


def study_target(spec: SearchSpec, n_trials: int | None) -> int | None:
    """The study-wide target: `n_trials`, capped by the grid's size for the grid sampler."""
    if spec.sampler.name == "grid":
        return min(n_trials or grid_size(spec), grid_size(spec))
    return n_trials


def run_worker(
    storage: Storage,
    study_name: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    worker_index: int | None = 0,
    threads: int | None = None,
    amp: bool = False,
    poll_seconds: float = 2.0,
    show_progress: bool = True,
    max_consecutive_failures: int | None = None,
    max_failed_trials: int | None = None,
    shared_deadline: bool = False,
) -> WorkerSummary:
    """Run trials of the study until the study-wide target, the timeout, or the grid's end.

    `shared_deadline`: the timeout is what was left of a deadline shared by several workers (`aeopt
    launch --timeout`) when this one started, so the messages name the deadline, not a budget of
    their own that the user never gave.

    Raises `TooManyFailuresError` when trials keep failing (see `FailureLimits`; None here: the
    env vars, else the defaults). Stopped by a signal, it logs what it finished and raises `StopSignal`."""
    # The budget counts from here: loading the data and the study is part of it.
    deadline = time.monotonic() + timeout if timeout else None
    index = 0 if worker_index is None else worker_index  # None: started without an index (see _seed_salt)
    if threads:
        hold_threads(threads)  # the user's count: the thread governor leaves it alone
    clear_stop_requests()  # a stop from an earlier run in this process (tests) is not this one's
    install_stop_handlers()
    limits = FailureLimits.from_env(max_consecutive_failures, max_failed_trials)
    study, spec = load_study(storage, study_name)
    # A dead worker's trial first: failed and re-queued before this worker asks for anything.
    fail_stale_trials(study, storage.optuna)
    study.sampler = build_sampler(spec, index, _seed_salt(study, worker_index))
    study.pruner = build_pruner(spec)
    target = study_target(spec, n_trials)
    objective = make_objective(spec, data_dir=data_dir, device=device, amp=amp, target_trials=target,
                               storage=storage)
    _give_deadline(objective, deadline, spec.task)
    log.info("worker %d on %s: study '%s' (%s), target %s finished trials%s", index, objective.device,
             study_name, spec.model.kind, target if target else "unlimited",
             _budget_text(timeout, shared_deadline))
    summary = WorkerSummary()
    try:
        with progress(target, f"study {study_name}", unit="trial", enabled=show_progress) as bar:
            heartbeat = storage.optuna if storage.heartbeat else None
            remaining = max(0.0, deadline - time.monotonic()) if deadline is not None else None
            summary.stopped_because = run_trials(
                study, objective, target=target, heartbeat=heartbeat, timeout=remaining,
                poll_seconds=poll_seconds, callbacks=[_TrialLines(summary, bar, target)], limits=limits)
            raise_if_stop_requested()  # a stop noted during the last trial's final storage writes
    except StopSignal as stop:
        summary.stopped_because = f"{STOPPED_REASON} {signal.Signals(stop.signum).name}"
        log.warning("worker %d stopped: %s (%s)", index, summary.counts.text(),
                    summary.stopped_because)
        raise
    if summary.stopped_because == TIMEOUT_REASON:
        # Under a second: what was left of `aeopt launch`'s deadline when this worker was ready.
        if shared_deadline:
            summary.stopped_because = "the launch's time budget ran out"
        else:
            summary.stopped_because = (f"the time budget of {duration_text(timeout)} ran out" if timeout >= 1
                                       else "the time budget ran out before this worker was ready")
    log.info("worker %d done: %s (%s)", index, summary.counts.text(), summary.stopped_because)
    return summary


TIMEOUT_REASON = "timeout"  # what run_trials returns when its time is up


def _seed_salt(study: optuna.Study, worker_index: int | None) -> tuple[int, ...]:
    """What this worker mixes into its sampler's seed (`samplers.sampler_seed`): the trials the study
    already holds, so that a restarted worker, or a rerun of `aeopt launch` or the quickstart, does
    not propose the points of the first run again; without an index (workers started by hand or as
    container replicas, all at index 0), also its host and process, so that no two propose alike."""
    salt = [len(study.get_trials(deepcopy=False))]
    if worker_index is None:
        salt += [zlib.crc32(socket.gethostname().encode()), os.getpid()]
    return tuple(salt) if any(salt) else ()


def _budget_text(timeout: float | None, shared_deadline: bool) -> str:
    if not timeout:
        return ""
    if shared_deadline:
        return f", {duration_text(timeout)} left of the launch's time budget"
    return f", {duration_text(timeout)} budget"


def _give_deadline(objective: object, deadline: float | None, task: str) -> None:
    """Hand the budget to the objective, which stops a running trial there."""
    if deadline is None:
        return
    if hasattr(objective, "deadline"):
        objective.deadline = deadline
    else:  # an objective that does not stop mid-trial: the budget holds between trials only
        log.warning("%s trials do not stop at the deadline: the running one finishes first", task)


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], *, target: int | None,
               heartbeat: BaseStorage | None, timeout: float | None = None, poll_seconds: float = 2.0,
               callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
               limits: FailureLimits | None = None) -> str:
    """Trials one at a time, asking `next_step` before each; returns why it stopped.

    Raises `TooManyFailuresError` past `limits` (None: no limits)."""
    limits = limits or FailureLimits(consecutive=None)
    streak = _FailureStreak()
    # 0 is a budget already spent, not "no budget": no trial starts.
    deadline = time.monotonic() + timeout if timeout is not None else None
    quiet = _NoTrialTracebacks()
    logging.getLogger(_OPTUNA_TRIAL_LOGGER).addFilter(quiet)
    try:
        return _trial_loop(study, objective, target, heartbeat, deadline, poll_seconds,
                           [streak, *(callbacks or [])], limits, streak)
    finally:
        logging.getLogger(_OPTUNA_TRIAL_LOGGER).removeFilter(quiet)


def _trial_loop(study: optuna.Study, objective: Callable[[optuna.Trial], float], target: int | None,
                heartbeat: BaseStorage | None, deadline: float | None, poll_seconds: float,
                callbacks: list[Callable[[optuna.Study, FrozenTrial], None]], limits: FailureLimits,
                streak: _FailureStreak) -> str:
    while True:
        raise_if_stop_requested()
        if deadline is not None and time.monotonic() >= deadline:
            return TIMEOUT_REASON
        if heartbeat is not None:
            fail_stale_trials(study, heartbeat)
        trials = study.get_trials(deepcopy=False)
        decision = next_step(StudyCounts.of(trials), target, heartbeat is not None)
        if decision.step is Step.STOP:
            return decision.reason
        if decision.step is Step.WAIT:
            time.sleep(poll_seconds)
            continue
        _check_study_budget(study.study_name, trials, limits, target)
        remaining = deadline - time.monotonic() if deadline is not None else None
        recorded = _Recorded(objective)
        try:
            study.optimize(recorded, n_trials=1, timeout=remaining, catch=TRIAL_ERRORS, callbacks=callbacks)
        except KeyboardInterrupt:
            # Here, not in `_Recorded`: Optuna has now told the trial FAIL, so its copy cannot be taken
            # by another worker while the original still counts as running (it would fail as surplus).
            _requeue_stopped(study, recorded.number)
            raise
        except (ValueError, AssertionError, optuna.exceptions.UpdateFinishedTrialError):
            # Optuna cannot tell a trial another worker has failed meanwhile ("Cannot tell a FAIL
            # trial", then an assertion in its cleanup): this worker was silent for the grace period.
            if not _lost_while_running(study, recorded.number):
                raise
        if limits.consecutive and streak.count >= limits.consecutive:
            raise TooManyFailuresError(
                f"{streak.count} trials in a row failed in this worker, the last: {streak.last_reason}; "
                "fix the spec or the data (AEOPT_MAX_CONSECUTIVE_FAILURES sets the limit)")
        if _grid_exhausted(study):
            return "the sampler has no more points"


def _lost_while_running(study: optuna.Study, number: int | None) -> bool:
    """Whether the trial this worker was running has been failed as stale by another worker."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.FAIL:
        return False
    reason = TrialRecord.of(trial).fail_reason or ""
    # No reason at all: Optuna's own stale check (inside another worker's `study.optimize`) failed it
    # without one; nothing else fails a trial this worker is running.
    if reason and not reason.startswith(LOST_REASON):
        return False
    reason = reason or "failed as stale by Optuna's heartbeat check"
    # A process stalled (swapping, a paused machine) or a storage outage longer than the grace period.
    log.warning("trial %d was failed by another worker while this one ran it (%s): its result is "
                "dropped and its re-queued copy runs instead; consider a longer AEOPT_GRACE_PERIOD",
                number, reason)
    return True


_OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"  # where Optuna logs "Trial N failed ..."


class _NoTrialTracebacks(logging.Filter):
    """Optuna logs a failed trial with the traceback of its error: a NaN, an OOM or a stop signal is
    an expected outcome, already one line with its `fail_reason`; the line stays, the traceback goes.
    An error that stops the worker still propagates, with its traceback, from `study.optimize`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


STOPPED_REASON = "stopped by signal"  # how a trial ended by Ctrl-C / SIGTERM's fail_reason begins


def _not_the_trials_fault(trial: FrozenTrial) -> bool:
    """A failed trial that says nothing of the study: a surplus trial failed on purpose (two workers
    raced for the last one), one the time budget ended before it reported anything, one stopped by a
    signal (Ctrl-C, `aeopt launch` stopping, a preempted machine), or a dead worker's (re-queued, at
    most 3 times: storage.py's RetryHeartbeatStaleTrialCallback)."""
    reason = TrialRecord.of(trial).fail_reason or ""
    return (reason.startswith((SurplusTrialError.__name__, STOPPED_REASON, LOST_REASON))
            or reason == DEADLINE_REASON)


def _check_study_budget(name: str, trials: list[FrozenTrial], limits: FailureLimits,
                        target: int | None) -> None:
    failed = [t for t in trials if t.state == TrialState.FAIL and not _not_the_trials_fault(t)]
    budget = limits.study_budget(target, StudyCounts.of(trials).finished)
    if len(failed) > budget:
        last = TrialRecord.of(max(failed, key=lambda t: t.number)).fail_reason or "no reason recorded"
        raise TooManyFailuresError(
            f"study '{name}' holds {len(failed)} failed trials (more than {budget}), the last: {last}; "
            "fix the spec or the data (AEOPT_MAX_FAILED_TRIALS sets the limit)")


class _FailureStreak:
    """Optuna callback: this worker's failed trials in a row, and the last one's reason."""

    def __init__(self) -> None:
        self.count, self.last_reason = 0, ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:  # noqa: ARG002
        if trial.state != TrialState.FAIL:
            self.count = 0
        elif not _not_the_trials_fault(trial):
            self.count += 1
            self.last_reason = TrialRecord.of(trial).fail_reason or "no reason recorded"


class _Recorded:
    """The objective, with a `fail_reason` on every trial it fails: a signal, or an error the
    objective did not record itself (objectives record their TRIAL_ERRORS with what they know)."""

    def __init__(self, objective: Callable[[optuna.Trial], float]):
        self.objective = objective
        self.number: int | None = None  # the trial it runs

    def __call__(self, trial: optuna.Trial) -> float:
        self.number = trial.number
        if trial.user_attrs.get(FAIL_REASON):
            # A re-queued trial carries its failed predecessor's attrs: the reason is not this run's.
            # Cleared directly: TrialRecord.write stores set fields only, and None reads as unset.
            trial.set_user_attr(FAIL_REASON, None)
        try:
            raise_if_stop_requested()  # one noted while Optuna set this trial up (aeopt.search.stopping)
            return self.objective(trial)
        except (optuna.TrialPruned, StorageError):
            # A storage down past its outage window: a reason cannot be recorded there either.
            raise
        except KeyboardInterrupt as exc:
            _record_reason(trial, f"{STOPPED_REASON} {getattr(exc, 'signum', signal.SIGINT.value)}")
            raise
        except Exception as exc:
            _record_reason(trial, fail_reason(exc))
            raise


MAX_RETRIES = 3  # as storage.py's RetryHeartbeatStaleTrialCallback(max_retry=3): one cap for both kinds
_RUN_ATTRS = {f.name for f in fields(TrialRecord)} | {STOPPED_BY}  # what the stopped run measured


def _requeue_stopped(study: optuna.Study, number: int | None) -> None:
    """Queue a trial a stop signal failed again (WAITING, its parameters fixed), so that the next worker
    re-runs it: an enqueued known-good point is not lost to a Ctrl-C, `aeopt launch` stopping or a
    preempted machine. The copy is what Optuna's RetryHeartbeatStaleTrialCallback makes of a dead
    worker's trial (system attrs `failed_trial`, `retry_history`; at most MAX_RETRIES in one history).

    A WAITING trial counts neither as finished nor as running, so it cannot take the study past its
    target (`next_step`, `check_surplus`): a worker runs it only while the study is short."""
    if number is None:
        return
    try:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        # Not FAIL: its tell never reached the storage and it is still RUNNING, for the heartbeat check
        # to re-queue. Failed for another reason (a NaN, then the signal in a callback): nothing to re-run.
        if (trial is None or trial.state != TrialState.FAIL
                or not (TrialRecord.of(trial).fail_reason or "").startswith(STOPPED_REASON)):
            return
        system_attrs = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
        # A new list: with deepcopy=False the stored one is the storage's cached copy.
        history = [*system_attrs["retry_history"], trial.number]
        if len(history) > MAX_RETRIES:
            log.warning("trial %d was stopped %d times: not re-queued again", trial.number, len(history))
            return
        if not trial.params and "fixed_params" not in system_attrs:
            return  # stopped before it had parameters: a new trial samples as well
        system_attrs["retry_history"] = history
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in _RUN_ATTRS},
            system_attrs=system_attrs))
        log.warning("trial %d is re-queued with its parameters: the next worker re-runs it", trial.number)
    except Exception as exc:  # the storage may be why it stopped: the stop itself matters more
        log.warning("trial %d: could not re-queue it after the stop: %s", number, fail_reason(exc))


def _record_reason(trial: optuna.Trial, reason: str) -> None:
    try:
        if not trial.user_attrs.get(FAIL_REASON):  # the objective's own reason says more
            TrialRecord(fail_reason=reason).write(trial)
    except Exception as exc:  # the storage may be what failed: the original error matters more
        log.warning("trial %d: could not record why it failed (%s): %s", trial.number, reason,
                    fail_reason(exc))


def _grid_exhausted(study: optuna.Study) -> bool:
    # Every grid point has finished (a failed one included): the grid sampler would repeat points.
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


class _TrialLines:
    """Optuna callback: one line per finished trial, above the progress bar or as a log line, then
    the study's estimated time left (when it has a target)."""

    def __init__(self, summary: WorkerSummary, bar: Progress, target: int | None = None):
        self.summary, self.bar, self.target = summary, bar, target

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.summary.trials.append(trial)
        line, best = trial_line(trial), best_value_text(study)
        if self.bar.bar is None:  # not a terminal: one plain line per trial
            log.info("[%d finished by this worker] %s (best %s)", self.summary.counts.finished, line, best)
        else:
            self.bar.update({"best": best}, n=StudyCounts.of([trial]).finished)
            self.bar.write(line)
        left = study_eta_line(study.get_trials(deepcopy=False), self.target)
        if left:
            log.info(left)


def study_eta_line(trials: list[FrozenTrial], target: int | None) -> str | None:
    """'study: 5 of 12 trials finished, about 4 min 10 s left (2 workers)', or None without a target
    or a finished trial. Workers: this one plus those running a trial now."""
    if not target:
        return None
    counts = StudyCounts.of(trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished
               if t.datetime_complete and t.datetime_start]
    remaining = max(0, target - counts.finished)
    workers = counts.running + 1
    left = time_left(seconds, remaining, workers)
    if left is None or not remaining:
        return None
    # The trials now running elsewhere are part-done: the estimate is an upper bound by that much.
    return (f"study: {counts.finished} of {target} trials finished, about {duration_text(left)} left "
            f"({workers} worker{'s' if workers > 1 else ''})")


def trial_line(t: FrozenTrial) -> str:
    """'trial 3 complete: 0.0213 +- 0.0004 (10 epochs, 12.1 s) c1=16 lr=0.003' and the like."""
    record = TrialRecord.of(t)
    secs = 0.0
    if t.datetime_complete and t.datetime_start:
        secs = (t.datetime_complete - t.datetime_start).total_seconds()
    if t.state == TrialState.COMPLETE:
        return (f"trial {t.number} complete: {t.value:.5g} +- {record.cv_std or 0:.2g} "
                f"({record.epochs} epochs, {secs:.1f} s) {_params(t.params)}")
    if t.state == TrialState.PRUNED:
        step = t.last_step if t.last_step is not None else "?"
        return f"trial {t.number} pruned at epoch {step} ({secs:.1f} s) {_params(t.params)}"
    return f"trial {t.number} {t.state.name.lower()}: {record.fail_reason or 'see the worker log'}"


def _params(params: dict) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                    for k, v in params.items())
