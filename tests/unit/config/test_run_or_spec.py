"""A run config given where a study spec is wanted, and the reverse, is one line that names what the file
is and the command that takes it (a run config made a study whose every trial trained the same config; a
study spec given to `aeopt train` said "name: unknown key")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeopt.cli import main
from aeopt.config import (
    RunConfig,
    dump_yaml,
    load_baseline_config,
    load_finetune_config,
    load_run_config,
    load_study_spec,
)
from aeopt.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "conv_ae.yaml"
SPEC = REPO / "studies" / "conv_ae.yaml"


def _error(loader, *args) -> str:
    with pytest.raises(ConfigError) as err:
        loader(*args)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_a_run_config_is_not_a_study(tmp_path):
    assert _error(load_study_spec, CONFIG) == (
        f"{CONFIG} is a run config (no `space:` to search): train it with `aeopt train {CONFIG}`, or add a "
        "`space:` section (--set space.model.c1='{type: int, low: 8, high: 64}') to make it a study spec")
    export = tmp_path / "best.yaml"  # an export is a run config too
    export.write_text(dump_yaml({**RunConfig().model_dump(mode="json"), "metrics": {}, "provenance": {}}))
    assert "is a run config" in _error(load_study_spec, export)


def test_a_run_config_with_a_space_from_set_is_a_study():
    spec = load_study_spec(CONFIG, ["space.model.c1={type: int, low: 8, high: 16}"])
    assert spec.space["model.c1"].high == 16


def test_a_spec_of_search_keys_without_a_space_still_loads(tmp_path):
    # `name:`, `sampler:`, a classifier's `task:`: the file was meant as a spec; only a run config is refused.
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "data": {"dataset": "digits"}}))
    assert load_study_spec(p).space == {}


@pytest.mark.parametrize("loader,command", [(load_run_config, "aeopt train"),
                                            (load_finetune_config, "aeopt finetune"),
                                            (load_baseline_config, "aeopt baseline cnn --config")])
def test_a_study_spec_is_not_a_run_config(loader, command):
    message = _error(loader, SPEC)
    assert message.startswith(f"{SPEC} is a study spec (it has `space:`): use `aeopt study create {SPEC}`; "
                              f"`{command}` takes a"), message


def test_a_shipped_spec_name_given_to_train_says_it_is_a_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "seed_grid is a shipped study spec: `aeopt study create seed_grid`" in _error(
        load_run_config, "seed_grid")


def test_study_create_of_a_run_config_writes_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "create", str(CONFIG), "--storage", f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capfd.readouterr().err
    assert err.startswith(f"error: {CONFIG} is a run config") and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_train_of_a_study_spec_writes_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(SPEC)]) == 2
    err = capfd.readouterr().err
    assert err.startswith(f"error: {SPEC} is a study spec") and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
