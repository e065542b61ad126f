"""A worker: load the study and its spec from the storage, then run trials until the target.

`n_trials` is a study-wide target: the worker stops once the study holds that many finished
(complete or pruned) trials, so several workers together finish exactly N, not N each.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import TrialState

from aeopt.progress import progress
from aeopt.search.objective import TRIAL_ERRORS, make_objective
from aeopt.search.space import grid_size
from aeopt.search.storage import open_storage
from aeopt.search.studies import FINISHED, build_pruner, build_sampler, load_study

log = logging.getLogger(__name__)


@dataclass
class WorkerSummary:
    trials: Counter = field(default_factory=Counter)  # this worker's trials by state
    stopped_because: str = ""


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def run_worker(
    study_name: str,
    storage_url: str | None = None,
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
    if threads:
        torch.set_num_threads(threads)
    # SIGTERM (from `aeopt launch`, a scheduler, or docker stop) ends the current trial as FAIL
    # and stops the worker cleanly, like Ctrl-C.
    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        except ValueError:  # not the main thread (tests calling run_worker from a thread)
            pass
    storage = open_storage(storage_url)
    study, spec = load_study(storage_url, study_name, storage=storage.optuna)
    study.sampler = build_sampler(spec, worker_index)
    study.pruner = build_pruner(spec)
    target = n_trials
    if spec.sampler.name == "grid":
        target = min(target or grid_size(spec), grid_size(spec))
    objective = make_objective(spec, data_dir=data_dir, device=device, amp=amp, target_trials=target)
    summary = WorkerSummary()
    deadline = time.monotonic() + timeout if timeout else None
    log.info("worker %d on %s: study '%s' (%s), target %s finished trials", worker_index, objective.device, study_name,
             spec.model.kind, target if target else "unlimited")

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        summary.trials[trial.state.name] += 1
        line = _trial_line(trial)
        if bar.bar is None:  # not a terminal: one plain line per trial
            log.info("[%s] %s (best %s)", _count(summary), line, _best(study))
            return
        bar.update({"best": _best(study)}, n=1 if trial.state in FINISHED else 0)
        bar.write(line)

    with progress(target, f"study {study_name}", unit="trial", enabled=show_progress) as bar:
        while True:
            if deadline and time.monotonic() >= deadline:
                summary.stopped_because = "timeout"
                break
            if storage.heartbeat:
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            states = Counter(t.state for t in trials)
            finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            if target and finished >= target:
                summary.stopped_because = f"the study holds {finished} finished trials"
                break
            in_flight = states[TrialState.RUNNING]
            if target and finished + in_flight >= target and not states[TrialState.WAITING]:
                # Others are running the last trials. Wait rather than exit: if one of them dies,
                # its trial turns stale and is re-queued, and this worker should pick it up.
                if not storage.heartbeat:
                    summary.stopped_because = "the remaining trials are running in other workers"
                    break
                time.sleep(poll_seconds)
                continue
            remaining = deadline - time.monotonic() if deadline else None
            study.optimize(objective, n_trials=1, timeout=remaining, catch=TRIAL_ERRORS, callbacks=[on_trial])
            if getattr(study, "_stop_flag", False):  # e.g. the grid sampler ran out of points
                summary.stopped_because = "the sampler has no more points"
                break
    log.info("worker %d done: %s (%s)", worker_index, dict(summary.trials) or "no trials", summary.stopped_because)
    return summary


def _count(summary: WorkerSummary) -> str:
    return f"{summary.trials['COMPLETE'] + summary.trials['PRUNED']} finished by this worker"


def _best(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.5g}"
    except ValueError:
        return "-"


def _trial_line(t: optuna.trial.FrozenTrial) -> str:
    attrs = t.user_attrs
    secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else 0
    if t.state == TrialState.COMPLETE:
        return (f"trial {t.number} complete: {t.value:.5g} +- {attrs.get('cv_std', 0):.2g} "
                f"({attrs.get('epochs')} epochs, {secs:.1f} s) {_params(t.params)}")
    if t.state == TrialState.PRUNED:
        step = t.last_step if t.last_step is not None else "?"
        return f"trial {t.number} pruned at epoch {step} ({secs:.1f} s) {_params(t.params)}"
    return f"trial {t.number} {t.state.name.lower()}: {attrs.get('fail_reason', 'see the worker log')}"


def _params(params: dict) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in params.items())
