"""The task registry: every spec task has an objective, and every objective is built the same way."""

from __future__ import annotations

import inspect

import optuna

from aeopt.config import ClassifierStudySpec, StudySpec
from aeopt.search.objective import AutoencoderObjective, ObjectiveFactory
from aeopt.search.storage import Storage
from aeopt.search.tasks import TASKS, make_objective


def test_every_spec_task_has_an_objective():
    assert set(TASKS) == {schema.model_fields["task"].default for schema in (StudySpec, ClassifierStudySpec)}


def test_every_objective_takes_the_factory_keywords():
    expected = list(inspect.signature(ObjectiveFactory.__call__).parameters)[1:]  # without self
    for task, factory in TASKS.items():
        assert list(inspect.signature(factory).parameters) == expected, task


def test_make_objective_builds_the_specs_objective_with_its_storage():
    spec = StudySpec.model_validate({"model": {"kind": "conv_ae"}, "data": {"dataset": "synthetic",
                                                                            "train_subset": 100}})
    storage = Storage(optuna.storages.InMemoryStorage(), "memory", "memory")
    objective = make_objective(spec, device="cpu", storage=storage, target_trials=3)
    assert type(objective) is AutoencoderObjective
    assert objective.device.type == "cpu" and objective.storage is storage and objective.target_trials == 3
    assert make_objective(spec, device="cpu", storage=storage, upload_artifacts=False).storage is None
