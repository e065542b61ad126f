"""A real worker run with a pruner: every finished trial, pruned ones too, has its reconstruction PNG,
and a pruned trial's PNG is titled with the value Optuna records for it (its last reported one)."""

from __future__ import annotations

import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from aeopt.search.worker import run_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_pruned_trials_upload_their_png(tmp_path, monkeypatch):
    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    torch.set_num_threads(1)
    spec = StudySpec.model_validate({
        "name": "pr",
        "model": {"kind": "conv_ae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "noise_std": 0.0},
        "data": {"dataset": "synthetic", "train_subset": 200},
        "budget": {"max_epochs": 3, "batch_size": 64},
        "cv": {"folds": 2},
        "sampler": {"name": "random", "seed": 0},
        # Every trial after the first that is worse than the median at an epoch is pruned there.
        "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        "space": {"optim.lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True}},
    })
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = create_study(storage, spec, artifacts=str(tmp_path / "artifacts"))
    run_worker(storage, "pr", n_trials=6, device="cpu", show_progress=False)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(trials) == 6 and pruned, [t.state for t in trials]
    for t in trials:
        names = [m.filename for m in get_all_artifact_meta(t, storage=storage.optuna)]
        assert f"reconstructions_trial{t.number}.png" in names, (t.number, t.state, names)
    for t in pruned:  # no checkpoint: a pruned trial is never the best
        names = [m.filename for m in get_all_artifact_meta(t, storage=storage.optuna)]
        assert not any(n.endswith(".pt") for n in names)
