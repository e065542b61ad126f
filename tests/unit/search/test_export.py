"""export_best / write_export on studies built with plain Optuna (in memory), following the contract:
spec in the study's "aeopt:spec" user attr, params keyed by dotted run-config paths, CV attrs."""

from __future__ import annotations

import json
import statistics

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from aeopt.config import RunConfig, StudySpec, load_run_config
from aeopt.errors import AeoptError, StudyError
from aeopt.search.export import export_best, write_export

SPEC = {
    "name": "unit",
    "model": {"kind": "conv_ae", "c1": 16, "c2": 32, "c3": 32, "fc": 32, "latent_dim": 10},
    "data": {"dataset": "digits", "train_subset": 500},
    "budget": {"max_epochs": 7, "batch_size": 128},
    "optim": {"name": "adam", "lr": 1e-3},
    "seed": 3,
    "cv": {"folds": 3, "seed": 11},
    "sampler": {"name": "random", "seed": 42},
    "space": {
        "model.c1": {"type": "int", "low": 4, "high": 64, "log": True},
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.activation": {"type": "categorical", "choices": ["relu", "gelu"]},
        # A fixed value in the space: applied to every trial without being searched.
        "model.dropout": 0.05,
    },
}
DISTS = {
    "model.c1": IntDistribution(4, 64, log=True),
    "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "model.activation": CategoricalDistribution(["relu", "gelu"]),
}


def _study(values: list[tuple[float | None, TrialState]],
           name: str = "unit") -> tuple[optuna.Study, StudySpec]:
    spec = StudySpec.model_validate(SPEC)
    study = optuna.create_study(study_name=name, direction="minimize")
    study.set_user_attr("aeopt:spec", spec.model_dump(mode="json"))
    for i, (value, state) in enumerate(values):
        folds = [value + 0.001 * k for k in range(3)] if value is not None else []
        attrs = {"fold_losses": folds, "epochs": 5 + i, "best_epoch": 4 + i, "seconds": 1.5, "device": "cpu",
                 "host": "h"}
        if folds:
            attrs["cv_std"] = statistics.pstdev(folds)
        params = {"model.c1": 8 + i, "optim.lr": 1e-3 * (i + 1),
                  "model.activation": "gelu" if i % 2 else "relu"}
        study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                     params=params,
                                     distributions=DISTS, user_attrs=attrs,
                                     intermediate_values={1: value} if value is not None else {}))
    return study, spec


def test_best_trial_becomes_a_complete_run_config_with_metrics_and_provenance():
    study, spec = _study([(0.05, TrialState.COMPLETE), (0.02, TrialState.COMPLETE), (0.01, TrialState.PRUNED),
                          (0.03, TrialState.COMPLETE)])
    export = export_best(study, spec)

    # Trial 1 is the best complete one (trial 2 is pruned, so its value cannot win).
    assert export["provenance"]["trial"] == 1
    run = RunConfig.model_validate({k: v for k, v in export.items() if k not in ("metrics", "provenance")})
    assert run == spec.run_config(study.trials[1].params)
    assert run.model.c1 == 9 and run.optim.lr == pytest.approx(2e-3) and run.model.activation == "gelu"
    assert run.model.dropout == 0.05  # the fixed space entry
    assert run.seed == 3 and run.data.train_subset == 500 and run.budget.max_epochs == 7

    m = export["metrics"]
    assert m["cv_mean"] == pytest.approx(0.02)
    assert m["fold_losses"] == pytest.approx([0.02, 0.021, 0.022])
    assert m["cv_std"] == pytest.approx(statistics.pstdev([0.02, 0.021, 0.022]))
    assert m["epochs"] == 6 and m["best_epoch"] == 5

    p = export["provenance"]
    assert p["study"] == "unit" and p["rank"] == 1 and p["complete_trials"] == 3
    assert p["sampler"] == {"name": "random", "seed": 42}
    assert p["cv"] == {"folds": 3, "seed": 11}
    assert p["dataset"]["name"] == "digits" and p["dataset"]["train_subset"] == 500
    assert "torch" in p["versions"] and "optuna" in p["versions"]
    assert p["exported_at"].endswith("+00:00")


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_written_file_is_what_train_reads(tmp_path, suffix):
    study, spec = _study([(0.04, TrialState.COMPLETE), (0.03, TrialState.COMPLETE)])
    path = write_export(export_best(study, spec), tmp_path / f"best{suffix}")
    text = path.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed["provenance"]["trial"] == 1
    # load_run_config reads YAML (JSON is YAML) and ignores metrics / provenance.
    assert load_run_config(path) == spec.run_config(study.trials[1].params)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_top_k_is_best_first_and_capped_by_complete_trials(tmp_path):
    study, spec = _study([(0.05, TrialState.COMPLETE), (0.02, TrialState.COMPLETE), (None, TrialState.FAIL),
                          (0.03, TrialState.COMPLETE)])
    top = export_best(study, spec, top_k=2)
    assert isinstance(top, list) and [e["provenance"]["trial"] for e in top] == [1, 3]
    assert [e["provenance"]["rank"] for e in top] == [1, 2]
    assert [e["provenance"]["trial"] for e in export_best(study, spec, top_k=10)] == [1, 3, 0]
    parsed = yaml.safe_load(write_export(top, tmp_path / "top.yaml").read_text())
    assert [e["metrics"]["cv_mean"] for e in parsed] == pytest.approx([0.02, 0.03])


def test_no_complete_trial_is_one_clear_line():
    study, spec = _study([(None, TrialState.FAIL), (0.01, TrialState.PRUNED)], name="empty")
    with pytest.raises(StudyError) as err:
        export_best(study, spec)
    msg = str(err.value)
    assert "'empty' has no complete trial" in msg and "1 fail" in msg and "1 pruned" in msg
    assert "aeopt worker --study empty" in msg and "\n" not in msg


def test_bad_suffix_and_bad_top_k(tmp_path):
    study, spec = _study([(0.04, TrialState.COMPLETE)])
    with pytest.raises(AeoptError, match="name the file .yaml, .yml or .json"):
        write_export(export_best(study, spec), tmp_path / "best.txt")
    with pytest.raises(AeoptError, match="--top 0"):
        export_best(study, spec, top_k=0)


def test_export_holds_no_storage_url(tmp_path):
    # The export is built from the study and its trials only; nothing names where it is stored.
    study, spec = _study([(0.04, TrialState.COMPLETE)])
    text = write_export(export_best(study, spec), tmp_path / "best.yaml").read_text()
    for needle in ("sqlite", "postgres", "://", "storage"):
        assert needle not in text


def test_a_penalized_trial_exports_its_loss_and_penalty_apart():
    import optuna as _optuna

    from aeopt.search.export import trial_metrics

    study = _optuna.create_study()
    trial = study.ask()
    for key, value in {"fold_losses": [0.02, 0.04], "prior_mmd": 0.3, "penalty": 0.25}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.28)
    m = trial_metrics(study.best_trial)
    assert m["value"] == 0.28 and m["penalty"] == 0.25 and m["prior_mmd"] == 0.3
    assert abs(m["cv_mean"] - 0.03) < 1e-12 and m["objective"].endswith("+ prior penalty")


def test_a_classifier_studys_export_names_its_objective_an_error():
    from aeopt.config import ClassifierStudySpec

    spec = ClassifierStudySpec.model_validate({"name": "clf", "data": {"dataset": "digits"}})
    study = optuna.create_study(study_name="clf")
    study.set_user_attr("aeopt:spec", spec.model_dump(mode="json"))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.26, params={}, distributions={},
                                 user_attrs={"fold_losses": [0.25, 0.27]}))
    export = export_best(study, spec)
    assert export["metrics"]["objective"] == "mean cross-validated validation error (1 - accuracy)"
    assert export_best(*_study([(0.04, TrialState.COMPLETE)]))["metrics"]["objective"] == (
        "mean cross-validated validation loss")


def test_a_multi_objective_study_is_listed_without_a_best_and_refused_in_one_line(tmp_path):
    from aeopt.search.records import best_trial
    from aeopt.search.storage import open_storage
    from aeopt.search.studies import list_studies

    study, spec = _study([(0.04, TrialState.COMPLETE)])
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    # Another program's study in a shared storage: two objectives, no aeopt spec.
    other = optuna.create_study(study_name="other", storage=storage.optuna,
                                directions=["minimize", "maximize"])
    other.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.1, 0.9], params={}, distributions={}))
    [summary] = list_studies(storage)
    assert summary.name == "other" and summary.best_value is None and summary.best_text == "-"
    assert best_trial(other) is None
    two = optuna.create_study(study_name="two", directions=["minimize", "minimize"])
    two.set_user_attr("aeopt:spec", spec.model_dump(mode="json"))
    with pytest.raises(StudyError, match="'two' has 2 objectives and so no single best trial"):
        export_best(two, spec)
