"""A key YAML does not read as a name (`no: 3` is {False: 3} in YAML 1.1, `1: 2` is {1: 2}) is one line
naming the key as written, for every command that reads a YAML file; not a TypeError from the key checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from aeopt.config import load_baseline_config, load_finetune_config, load_run_config, load_study_spec
from aeopt.errors import ConfigError
from tests.conftest import run_cli

LOADERS = [load_run_config, load_finetune_config, load_study_spec, load_baseline_config]


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def _one_line(loader, path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        loader(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("loader", LOADERS)
def test_a_top_level_key_read_as_a_boolean_is_named_as_written(tmp_path, loader):
    p = _file(tmp_path, "model: {kind: conv_ae}\nno: 3\n")
    assert _one_line(loader, p) == (f"{p}: line 2: YAML reads the key no as false (yes/no/on/off are "
                                    "booleans), not a name; quote it: 'no'")


@pytest.mark.parametrize("loader", LOADERS)
def test_a_top_level_number_key_is_named(tmp_path, loader):
    p = _file(tmp_path, "1: 2\n")
    assert _one_line(loader, p) == f"{p}: line 1: YAML reads the key 1 as a number, not a name; quote it: '1'"


@pytest.mark.parametrize("text,where", [("model: {kind: conv_ae, on: 3}\n", "(in model)"),
                                        ("enqueue:\n  - {off: 1}\n", "(in enqueue[0])")])
def test_a_nested_key_names_its_section(tmp_path, text, where):
    message = _one_line(load_study_spec, _file(tmp_path, text))
    assert where in message and "quote it" in message, message


def test_quoted_and_merge_keys_are_names(tmp_path):
    p = _file(tmp_path, "x: &b {latent_dim: 7}\nmodel:\n  <<: *b\n  kind: vae\n'no': 3\n")
    message = _one_line(load_run_config, p)
    assert "unknown key" in message and "YAML reads" not in message, message


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_the_commands_answer_one_line_without_a_traceback(tmp_path, command):
    _file(tmp_path, "no: 3\n")
    r = run_cli(command, "cfg.yaml", cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: cfg.yaml: line 1: YAML reads the key no as false (yes/no/on/off are booleans), not a name; "
        "quote it: 'no'"], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # nothing written
