"""Run configs: the shipped files, `--set` overrides, and one-line errors naming the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeopt.config import (
    ConvAEConfig,
    RunConfig,
    VAEConfig,
    apply_overrides,
    dump_yaml,
    load_run_config,
    load_study_spec,
    parse_override,
)
from aeopt.errors import AeoptError, ConfigError

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_conv_ae_config_is_exactly_the_reports_best() -> None:
    cfg = load_run_config(CONFIGS / "conv_ae.yaml")
    m = cfg.model
    assert isinstance(m, ConvAEConfig) and m.kind == "conv_ae"
    assert (m.c1, m.c2, m.c3, m.fc, m.latent_dim) == (16, 32, 32, 32, 10)
    assert m.dropout == 0.2 and m.activation == "relu" and m.noise_std == 0
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-3, 1e-5)
    assert (cfg.budget.max_epochs, cfg.budget.patience) == (50, 8)
    assert cfg.data.dataset == "fashion_mnist" and cfg.data.val_fraction == 0.2
    assert cfg.data.train_subset is None and cfg.data.test_subset is None


def test_denoising_and_vae_configs_load() -> None:
    dae = load_run_config(CONFIGS / "denoising_ae.yaml")
    assert dae.model.kind == "denoising_ae" and dae.model.noise_std > 0
    vae = load_run_config(CONFIGS / "vae.yaml")
    assert isinstance(vae.model, VAEConfig)
    assert (vae.model.hidden1, vae.model.hidden2, vae.model.latent_dim, vae.model.beta) == (512, 256, 2, 1.0)


def test_run_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_run_config(CONFIGS / "vae.yaml", ["model.latent_dim=8", "optim.name=adamw", "seed=3"])
    path = tmp_path / "again.yaml"
    path.write_text(dump_yaml(cfg.model_dump(mode="json")))
    assert load_run_config(path) == cfg


def test_set_overrides_by_dotted_path_with_yaml_values() -> None:
    cfg = load_run_config(
        CONFIGS / "conv_ae.yaml",
        ["data.train_subset=6000", "optim.lr=3e-4", "model.batch_norm=true", "model.activation=gelu",
         "data.test_subset=null"],
    )
    assert cfg.data.train_subset == 6000
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.batch_norm is True and cfg.model.activation == "gelu"
    assert cfg.data.test_subset is None
    # The file is untouched by the overrides.
    assert load_run_config(CONFIGS / "conv_ae.yaml").data.train_subset is None


def test_the_same_set_works_on_an_export_and_a_study_spec(tmp_path: Path) -> None:
    # An export is a run config plus metrics and provenance; a study spec is a run config plus the search.
    run = yaml.safe_load((CONFIGS / "conv_ae.yaml").read_text())
    export = tmp_path / "best.yaml"
    export.write_text(dump_yaml({**run, "metrics": {"test_loss": 0.02}, "provenance": {"study": "x"}}))
    spec = tmp_path / "study.yaml"
    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    spec.write_text(dump_yaml({**run, "name": "s", "space": space}))

    assert load_run_config(export, ["data.train_subset=6000"]).data.train_subset == 6000
    assert load_study_spec(spec, ["data.train_subset=6000"]).data.train_subset == 6000


def test_parse_override() -> None:
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=x:y") == ("a", "x:y")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("data.train_subset")
    with pytest.raises(ConfigError, match="key is empty"):
        parse_override("=3")


def test_apply_overrides_does_not_mutate_its_input() -> None:
    raw = {"data": {"dataset": "digits"}}
    out = apply_overrides(raw, ["data.train_subset=100"], RunConfig)
    assert raw == {"data": {"dataset": "digits"}}
    assert out["data"] == {"dataset": "digits", "train_subset": 100}


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_run_config(path, overrides)
    message = str(info.value)
    assert isinstance(info.value, AeoptError) and info.value.exit_code == 2
    return message


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["optim.lr=-0.01"], ["optim.lr", "-0.01"]),
        (["model.kind=resnet"], ["model.kind", "resnet"]),
        (["budget.max_epochs=0"], ["budget.max_epochs", "0"]),
        (["model.c1=abc"], ["model.c1", "abc"]),
        (["data.dataset=cifar10"], ["data.dataset", "cifar10"]),
        (["model.noise_std=0.3"], ["noise_std"]),
        (["model.colour=red"], ["model.colour"]),
        (["optimizer.lr=0.1"], ["optimizer"]),
        (["model.c1.deep=1"], ["model.c1.deep"]),
        (["budget"], ["budget", "KEY=VALUE"]),
    ],
)
def test_invalid_overrides_give_one_line_naming_field_and_value(overrides: list[str],
                                                                needles: list[str]) -> None:
    message = _error(CONFIGS / "conv_ae.yaml", overrides)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "no such file" in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  kind: conv_ae\n  c1: [16\n")
    message = _error(path)
    assert "bad.yaml" in message and "not valid YAML" in message and "line" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("- a\n- b\n", "mapping"), ("model: {kind: conv_ae}\nepochs: 3\n", "epochs"),
     ("\xff\xfe", "YAML")],
    ids=["empty", "list", "unknown-top-level", "binary"],
)
def test_malformed_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1"))
    message = _error(path)
    assert needle in message and "\n" not in message


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  kind: conv_ae\n  latentdim: 4\n")
    message = _error(path)
    assert "model.latentdim" in message


def test_model_kind_decides_the_fields() -> None:
    # VAE fields under a conv AE are a mistake, not silently dropped.
    with pytest.raises(ConfigError, match="hidden1"):
        load_run_config(CONFIGS / "conv_ae.yaml", ["model.hidden1=128"])
    assert RunConfig.model_validate({"model": {"kind": "vae", "latent_dim": 5}}).model.latent_dim == 5


def test_denoising_needs_noise() -> None:
    with pytest.raises(ConfigError, match="noise_std"):
        load_run_config(CONFIGS / "denoising_ae.yaml", ["model.noise_std=0"])


def test_cross_field_errors_name_the_section_not_its_whole_value() -> None:
    message = _error(CONFIGS / "conv_ae.yaml", ["model.noise_std=0.3"])
    assert message.endswith("model: noise_std is only for kind: denoising_ae; set it to 0 or change kind")
    assert "'c1'" not in message
