"""Study specs: the shipped ones load, bad fields give one line each, --set reaches space keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeopt.config import IntParam, StudySpec, load_study_spec
from aeopt.errors import ConfigError
from aeopt.search.space import grid, grid_size

STUDIES = Path(__file__).resolve().parents[3] / "studies"


@pytest.mark.parametrize("name", ["conv_ae", "denoising_ae", "vae", "seed_grid"])
def test_shipped_specs_validate(name):
    spec = load_study_spec(STUDIES / f"{name}.yaml")
    assert spec.name == name
    # The default studies use 2 folds to fit real budgets (issue 13); the report's grid keeps its 5.
    assert spec.cv.folds == (5 if name == "seed_grid" else 2)
    cfg = spec.run_config({})
    assert cfg.model.kind == {"vae": "vae", "denoising_ae": "denoising_ae"}.get(name, "conv_ae")


def test_seed_grid_is_the_reports_grid():
    spec = load_study_spec(STUDIES / "seed_grid.yaml")
    assert spec.sampler.name == "grid" and spec.pruner.name == "none"
    assert grid(spec) == {"model.c1": [8, 16], "model.c2": [16, 32], "model.c3": [16, 32]}
    assert grid_size(spec) == 8
    cfg = spec.run_config({"model.c1": 8, "model.c2": 16, "model.c3": 16})
    assert (cfg.model.fc, cfg.model.latent_dim, cfg.model.dropout) == (32, 10, 0.2)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-3, 1e-5)
    assert (cfg.budget.max_epochs, cfg.budget.patience) == (50, 8)


def _write(tmp_path, data) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_bad_fields_one_line_each(tmp_path):
    p = _write(tmp_path, {"name": "x", "cv": {"folds": 1}, "sampler": {"name": "annealing"},
                          "optim": {"lr": -1}})
    with pytest.raises(ConfigError) as err:
        load_study_spec(p)
    lines = str(err.value).splitlines()
    assert any("cv.folds" in line and "1" in line for line in lines)
    assert any("sampler.name" in line and "annealing" in line for line in lines)
    assert any("optim.lr" in line and "-1" in line for line in lines)


def test_space_key_must_be_a_run_field(tmp_path):
    p = _write(tmp_path, {"name": "x", "space": {"model.nope": {"type": "int", "low": 1, "high": 2}}})
    with pytest.raises(ConfigError, match="model.nope"):
        load_study_spec(p)


def test_space_range_outside_field_limits_is_rejected(tmp_path):
    space = {"model.dropout": {"type": "float", "low": 0.0, "high": 1.5}}
    p = _write(tmp_path, {"name": "x", "space": space})
    with pytest.raises(ConfigError, match="model.dropout"):
        load_study_spec(p)


def test_grid_needs_finite_space(tmp_path):
    p = _write(tmp_path, {"name": "x", "sampler": {"name": "grid"},
                          "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}})
    with pytest.raises(ConfigError, match="grid"):
        load_study_spec(p)


def test_set_reaches_dotted_space_keys():
    overrides = ["space.model.c1.high=32", "data.train_subset=6000", "cv.folds=3"]
    spec = load_study_spec(STUDIES / "conv_ae.yaml", overrides)
    assert isinstance(spec.space["model.c1"], IntParam) and spec.space["model.c1"].high == 32
    assert spec.data.train_subset == 6000 and spec.cv.folds == 3


def test_set_unknown_key_names_it():
    with pytest.raises(ConfigError, match="nonsense"):
        load_study_spec(STUDIES / "conv_ae.yaml", ["nonsense.x=1"])


def test_fixed_space_values_apply():
    space = {"model.fc": 64, "model.c1": {"type": "int", "low": 4, "high": 8}}
    spec = StudySpec.model_validate({"name": "x", "space": space})
    cfg = spec.run_config({"model.c1": 5})
    assert cfg.model.fc == 64 and cfg.model.c1 == 5



def _enqueue_spec(*points: dict) -> dict:
    space = {"model.c1": {"type": "int", "low": 8, "high": 32, "log": True},
             "model.batch_norm": {"type": "categorical", "choices": [False, True]},
             "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "model.fc": 64}
    return {"name": "x", "space": space, "enqueue": list(points)}


def test_enqueued_points_inside_the_space_are_kept_fixed_paths_dropped():
    point = {"model.c1": 29, "model.batch_norm": True, "optim.lr": 2e-3}
    spec = StudySpec.model_validate(_enqueue_spec({**point, "model.fc": 64}))
    assert spec.enqueued_points() == ([point], [])


def test_enqueued_point_with_a_path_not_in_space_is_left_out():
    spec = StudySpec.model_validate(_enqueue_spec({"model.c1": 16}, {"model.c11": 16}))
    assert spec.enqueued_points() == ([{"model.c1": 16}], [
        "enqueue[1] left out: model.c11 is not a key of space; did you mean 'model.c1'? "
        "valid keys: model.c1, model.batch_norm, optim.lr, model.fc"])


@pytest.mark.parametrize("point", [{"model.c1": 64}, {"model.c1": 16.5}, {"optim.lr": 0.5},
                                   {"model.batch_norm": 1}])  # 1 is not True
def test_enqueued_point_outside_the_space_is_left_out_with_the_reason(point):
    spec = StudySpec.model_validate(_enqueue_spec(point, {"model.c1": 9}))
    points, skipped = spec.enqueued_points()
    assert points == [{"model.c1": 9}]
    (path, value), = point.items()
    assert skipped == [f"enqueue[0] left out: {path} = {value!r} outside the space"]


def test_narrowing_the_shipped_space_leaves_its_enqueued_point_out():
    spec = load_study_spec(STUDIES / "conv_ae.yaml", ["space.model.c1.high=16", "space.model.dropout=0"])
    points, skipped = spec.enqueued_points()
    assert points == [] and len(skipped) == 1 and "model.c1 = " in skipped[0]
    assert load_study_spec(STUDIES / "conv_ae.yaml").enqueued_points()[0][0]["model.batch_norm"] is True


def test_enqueued_numbers_yaml_leaves_as_strings_are_read_as_numbers(tmp_path):
    # PyYAML reads 2e-3 and 1e1 as strings (YAML 1.1 wants 2.0e-3): the point was left out as "outside".
    p = tmp_path / "spec.yaml"
    written = "enqueue:\n- {optim.lr: 2e-3, model.c1: 1e1}"
    p.write_text(yaml.safe_dump(_enqueue_spec()).replace("enqueue: []", written))
    points, skipped = load_study_spec(p).enqueued_points()
    assert (points, skipped) == ([{"optim.lr": 0.002, "model.c1": 10}], [])
    assert type(points[0]["model.c1"]) is int


def test_categorical_choices_written_like_1e_3_are_numbers(tmp_path):
    p = tmp_path / "spec.yaml"
    space = "space:\n  optim.lr: {type: categorical, choices: [1e-3, 3e-3]}\n  model.activation: " \
            "{type: categorical, choices: [relu, gelu]}\nenqueue:\n- {optim.lr: 3e-3}\n"
    p.write_text("name: x\n" + space)
    spec = load_study_spec(p)
    assert spec.space["optim.lr"].choices == [0.001, 0.003]  # not '1e-3', which Optuna would store
    assert spec.space["model.activation"].choices == ["relu", "gelu"]
    assert spec.enqueued_points() == ([{"optim.lr": 0.003}], [])
    assert grid(spec)["optim.lr"] == [0.001, 0.003]


def test_a_stored_spec_keeps_its_choices_as_created():
    # Optuna refuses a categorical whose choices changed: a study created with the strings keeps them.
    spec = StudySpec.model_validate({"name": "x", "space": {
        "optim.lr": {"type": "categorical", "choices": ["1e-3", "3e-3"]}}})
    assert spec.space["optim.lr"].choices == ["1e-3", "3e-3"]
