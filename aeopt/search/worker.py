"""A worker: load the study and its spec from the storage, then run trials until the target.

`n_trials` is a study-wide target: the worker stops once the study holds that many finished
(complete or pruned) trials, so several workers together finish exactly N, not N each.
"""

from __future__ import annotations

import enum
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from aeopt.config import SearchSpec
from aeopt.progress import Progress, progress
from aeopt.search.objective import TRIAL_ERRORS
from aeopt.search.records import StudyCounts, TrialRecord, best_value_text
from aeopt.search.samplers import build_pruner, build_sampler
from aeopt.search.space import grid_size
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study
from aeopt.search.tasks import make_objective

log = logging.getLogger(__name__)


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
    if counts.finished + counts.running >= target and not counts.waiting:
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


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_sigterm() -> None:
    # SIGTERM (from `aeopt launch`, a scheduler, or docker stop) ends the current trial as FAIL
    # and stops the worker cleanly, like Ctrl-C.
    try:
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread (tests calling run_worker from a thread)
        pass


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
    worker_index: int = 0,
    threads: int | None = None,
    amp: bool = False,
    poll_seconds: float = 2.0,
    show_progress: bool = True,
) -> WorkerSummary:
    """Run trials of the study until the study-wide target, the timeout, or the grid's end."""
    if threads:
        torch.set_num_threads(threads)
    _stop_on_sigterm()
    study, spec = load_study(storage, study_name)
    study.sampler = build_sampler(spec, worker_index)
    study.pruner = build_pruner(spec)
    target = study_target(spec, n_trials)
    objective = make_objective(spec, data_dir=data_dir, device=device, amp=amp, target_trials=target,
                               storage=storage)
    log.info("worker %d on %s: study '%s' (%s), target %s finished trials", worker_index, objective.device,
             study_name, spec.model.kind, target if target else "unlimited")
    summary = WorkerSummary()
    with progress(target, f"study {study_name}", unit="trial", enabled=show_progress) as bar:
        summary.stopped_because = run_trials(study, objective, target=target, heartbeat=storage.heartbeat,
                                             timeout=timeout, poll_seconds=poll_seconds,
                                             callbacks=[_TrialLines(summary, bar)])
    log.info("worker %d done: %s (%s)", worker_index, summary.counts.text(), summary.stopped_because)
    return summary


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], *, target: int | None,
               heartbeat: bool, timeout: float | None = None, poll_seconds: float = 2.0,
               callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None) -> str:
    """Trials one at a time, asking `next_step` before each; returns why it stopped."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if deadline and time.monotonic() >= deadline:
            return "timeout"
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        decision = next_step(StudyCounts.of(study), target, heartbeat)
        if decision.step is Step.STOP:
            return decision.reason
        if decision.step is Step.WAIT:
            time.sleep(poll_seconds)
            continue
        remaining = deadline - time.monotonic() if deadline else None
        study.optimize(objective, n_trials=1, timeout=remaining, catch=TRIAL_ERRORS, callbacks=callbacks)
        if _grid_exhausted(study):
            return "the sampler has no more points"


def _grid_exhausted(study: optuna.Study) -> bool:
    # Every grid point has finished (a failed one included): the grid sampler would repeat points.
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


class _TrialLines:
    """Optuna callback: one line per finished trial, above the progress bar or as a log line."""

    def __init__(self, summary: WorkerSummary, bar: Progress):
        self.summary, self.bar = summary, bar

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.summary.trials.append(trial)
        line, best = trial_line(trial), best_value_text(study)
        if self.bar.bar is None:  # not a terminal: one plain line per trial
            log.info("[%d finished by this worker] %s (best %s)", self.summary.counts.finished, line, best)
            return
        self.bar.update({"best": best}, n=StudyCounts.of([trial]).finished)
        self.bar.write(line)


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
