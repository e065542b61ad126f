"""Errors that say what was meant: an unknown key gets the closest known key and the valid keys of its
section, in `--set` and in YAML files alike; space mistakes are one line in the user's terms."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeopt.config import (
    ClassifierStudySpec,
    OptimConfig,
    RunConfig,
    StudySpec,
    load_run_config,
    load_study_spec,
)
from aeopt.config.keys import first_unknown, section_keys, unknown_key_message
from aeopt.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "conv_ae.yaml"
SPEC = REPO / "studies" / "conv_ae.yaml"
OPTIM_KEYS = ", ".join(OptimConfig.model_fields)


def _error(load, path, overrides=()) -> str:
    with pytest.raises(ConfigError) as err:
        load(path, list(overrides))
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    for internal in ("tagged-union", "function-", "Input should be a valid dictionary", "[type="):
        assert internal not in message, message
    return message


@pytest.mark.parametrize("override,expected", [
    ("optim.lrr=0.01", f"--set optim.lrr: unknown key; did you mean 'lr'? valid keys: {OPTIM_KEYS}"),
    ("optmi.lr=0.01", "--set optmi.lr: unknown key 'optmi'; did you mean 'optim'? "
                      "valid keys: model, data, budget, optim, contrastive, seed"),
    ("model.latentdim=3", "--set model.latentdim: unknown key; did you mean 'latent_dim'? "
                          "valid keys: kind, c1, "),
    ("budget.max_epoch=3", "--set budget.max_epoch: unknown key; did you mean 'max_epochs'? "),
    ("nope.x=1", "--set nope.x: unknown key 'nope'; "
                 "valid keys: model, data, budget, optim, contrastive, seed"),
    ("optim.lr.x=1", "--set optim.lr.x: optim.lr is a value (0.001), not a section; set it whole: "
                     "--set optim.lr=VALUE"),
])
def test_set_unknown_key_says_what_was_meant(override, expected):
    assert _error(load_run_config, CONFIG, [override]).startswith(expected)


def test_the_valid_keys_follow_the_model_kind():
    # After `model.kind=vae` the model section is the VAE's: its keys, not the conv AE's.
    message = _error(load_run_config, CONFIG, ["model.kind=vae", "model.hiden1=3"])
    assert message == ("--set model.hiden1: unknown key; did you mean 'hidden1'? valid keys: "
                       "kind, hidden1, hidden2, latent_dim, activation, beta")


def test_no_guess_when_nothing_is_close():
    message = _error(load_run_config, CONFIG, ["optim.zzzz=1"])
    assert message == f"--set optim.zzzz: unknown key; valid keys: {OPTIM_KEYS}"


@pytest.mark.parametrize("override,expected", [
    ("space.model.c1.hgh=32", "--set space.model.c1.hgh: unknown key; did you mean 'high'? "
                              "valid keys: type, low, high, step, log"),
    ("space.optim.name.choice=[adam]", "--set space.optim.name.choice: unknown key; did you mean 'choices'? "
                                       "valid keys: type, choices"),
    ("space.model.c11.high=32", "--set space.model.c11.high: space.model.c11 is not in the space yet "
                                "(did you mean 'space.model.c1'?); add it whole"),
    ("space.model.c11={type: int, low: 1, high: 3}",
     f"{SPEC}: space.model.c11: not a field of the run config; did you mean 'model.c1'? valid keys of model: "
     "kind, c1, c2, c3, fc,"),
    ("space.modle.c1={type: int, low: 1, high: 3}",
     f"{SPEC}: space.modle.c1: 'modle' is not a run config section; did you mean 'model'? "
     "valid keys: model, data, budget, optim, contrastive, seed"),
    ("sampler.nme=tpe", "--set sampler.nme: unknown key; did you mean 'name'? "
                        "valid keys: name, seed, n_startup_trials"),
])
def test_space_and_search_key_typos_are_one_line_in_the_users_terms(override, expected):
    assert _error(load_study_spec, SPEC, [override]).startswith(expected)


def _write(tmp_path: Path, source: Path, edit) -> Path:
    raw = yaml.safe_load(source.read_text())
    edit(raw)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("edit,expected", [
    (lambda r: r["optim"].update(lrr=0.01),
     f"optim.lrr: unknown key; did you mean 'lr'? valid keys: {OPTIM_KEYS}"),
    (lambda r: r["model"].update(c1x=3),
     "model.c1x: unknown key; did you mean 'c1'? valid keys: kind, c1, c2,"),
    (lambda r: r.update(optimm={}), "optimm: unknown key; did you mean 'optim'? "
                                    "valid keys: model, data, budget, optim, contrastive, seed"),
])
def test_yaml_unknown_keys_say_what_was_meant(tmp_path, edit, expected):
    path = _write(tmp_path, CONFIG, edit)
    assert _error(load_run_config, path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("edit,expected", [
    (lambda r: r["space"]["model.c1"].update(hgh=32),
     "space.model.c1.hgh: unknown key; did you mean 'high'? valid keys: type, low, high, step, log"),
    (lambda r: r["space"]["optim.name"].update(choice=["adam"]),
     "space.optim.name.choice: unknown key; did you mean 'choices'? valid keys: type, choices"),
    (lambda r: r["cv"].update(fold=3) if "cv" in r else r.update(cv={"fold": 3}),
     "cv.fold: unknown key; did you mean 'folds'? valid keys: folds, seed"),
    (lambda r: r.update(model={"kind": "vae", "hiden1": 3}),
     "model.hiden1: unknown key; did you mean 'hidden1'? valid keys: kind, hidden1, hidden2,"),
])
def test_spec_file_unknown_keys_say_what_was_meant(tmp_path, edit, expected):
    path = _write(tmp_path, SPEC, edit)
    assert _error(load_study_spec, path).startswith(f"{path}: {expected}")


def test_section_keys_walks_unions_by_tag_and_by_the_raw_value():
    by_raw = section_keys(RunConfig, ["model"], {"model": {"kind": "vae"}})
    assert section_keys(RunConfig, ["model", "vae"]) == by_raw
    assert "beta" in section_keys(RunConfig, ["model", "vae"])
    assert "noise_std" in section_keys(RunConfig, ["model"])  # no kind given: the default conv AE
    assert section_keys(StudySpec, ["space"]) is None  # keyed by dotted paths: any key
    raw = {"space": {"x": {"type": "categorical"}}}
    assert section_keys(StudySpec, ["space", "x"], raw) == ["type", "choices"]
    assert section_keys(RunConfig, ["optim", "lr"]) is None  # a value, not a section
    assert "finetune" in section_keys(ClassifierStudySpec, [])
    assert first_unknown(RunConfig, ["optim", "lr"], {}) is None
    assert first_unknown(RunConfig, ["data", "datset"], {}) == 1


def test_unknown_key_message_shapes():
    message = unknown_key_message("lrr", ["lr", "name"])
    assert message == "unknown key; did you mean 'lr'? valid keys: lr, name"
    assert unknown_key_message("zzz", ["lr"]) == "unknown key; valid keys: lr"
    assert unknown_key_message("x", None) == "unknown key"


def test_a_missing_file_says_where_aeopt_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error(load_run_config, "runs/best.yaml")
    assert message.startswith(f"runs/best.yaml: no such file (looked for {tmp_path}/runs/best.yaml)")
    # A run config's YAML that names an autoencoder file that is not there (a classifier spec).
    spec = tmp_path / "clf.yaml"
    spec.write_text("task: classifier\nautoencoder: gone.yaml\n")
    message = _error(load_study_spec, spec)
    assert f"autoencoder = 'gone.yaml': no such file (looked for {tmp_path}/gone.yaml" in message
    assert "shipped run config (aae, aae_critic, conv_ae, denoising_ae, vae)" in message


def test_an_export_of_the_top_k_feeds_a_classifier_spec_and_is_named_when_trained(tmp_path):
    best = RunConfig().model_dump(mode="json")
    second = {**best, "model": {"kind": "vae"}}
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump([best, second]))
    spec = tmp_path / "clf.yaml"
    spec.write_text("task: classifier\nautoencoder: top.yaml\n")
    assert load_study_spec(spec).model.kind == "conv_ae"  # the best (first) entry
    message = _error(load_run_config, top)
    assert message == (f"{top}: a list of 2 configs (an `aeopt export --top K` file?); export one with "
                       "`aeopt export --study NAME -o best.yaml`")


@pytest.mark.parametrize("override,expected", [
    ("cv=3", "cv = 3: expected a section with keys folds, seed"),
    ("sampler=tpe", "sampler = 'tpe': expected a section with keys name, seed, n_startup_trials"),
    ("space=3", "space = 3: expected a section (a mapping)"),
])
def test_a_value_where_a_section_belongs_names_no_pydantic_class(override, expected):
    message = _error(load_study_spec, SPEC, [override])
    assert message == f"{SPEC}: {expected}"
    assert "Config" not in message and "instance of" not in message


def test_keys_left_over_from_another_model_kind_are_one_line():
    message = _error(load_run_config, CONFIG, ["model.kind=vae"])
    assert message == (f"{CONFIG}: model: unknown keys c1, c2, c3, fc, dropout, batch_norm for model kind "
                       "'vae'; valid keys: kind, hidden1, hidden2, latent_dim, activation, beta")


@pytest.mark.parametrize("override,expected", [
    ("data.dataset=fashion", "data.dataset = 'fashion': Input should be 'fashion_mnist', 'mnist', "
                             "'digits' or 'synthetic'; did you mean 'fashion_mnist'?"),
    ("model.kind=conv", "model.kind = 'conv': expected one of 'conv_ae', 'denoising_ae', 'vae', 'aae'; "
                        "did you mean 'conv_ae'?"),
    ("optim.name=adma", "optim.name = 'adma': Input should be 'adam', 'adamw' or 'sgd'; "
                        "did you mean 'adam'?"),
    ("model.kind=resnet", "model.kind = 'resnet': expected one of 'conv_ae', 'denoising_ae', 'vae', 'aae'"),
])
def test_a_value_outside_the_choices_names_the_closest(override, expected):
    assert _error(load_run_config, CONFIG, [override]) == f"{CONFIG}: {expected}"
