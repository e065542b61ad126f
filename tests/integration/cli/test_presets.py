"""Shipped presets from outside the checkout: `aeopt train conv_ae` and `aeopt study create conv_ae` in an
empty folder, `aeopt configs` listing every YAML of configs/ and studies/, and a built wheel that carries
those YAML files and nothing else of those folders (no database, no artifacts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[3]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _yaml_names(folder: str) -> list[str]:
    return sorted(p.stem for p in (REPO / folder).glob("*.yaml"))


@pytest.mark.slow
def test_train_a_preset_by_name_from_an_empty_folder(tmp_path):
    r = run_cli("train", "conv_ae", "--set", "data.dataset=digits", "--set", "budget.max_epochs=1",
                "--device", "cpu", cwd=tmp_path, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "conv_ae"
    assert (tmp_path / "runs" / "conv_ae" / "checkpoint.pt").is_file()  # runs/<preset name>


def test_study_create_a_preset_by_name_from_an_empty_folder(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    r = run_cli("study", "create", "conv_ae", "--storage", url, "--set", "data.dataset=digits", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"study 'conv_ae' ready in {url}"
    r = run_cli("study", "show", "conv_ae", "--storage", url, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "x.db" in os.listdir(tmp_path) and not (tmp_path / "studies").exists()
    # The default storage is relative to the working folder: never inside the package beside the presets.
    r = run_cli("study", "create", "vae", "--set", "data.dataset=digits", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "studies" / "aeopt.db").is_file()


def test_a_missing_path_outside_the_checkout_points_at_the_preset(tmp_path):
    r = run_cli("train", "configs/conv_ae.yaml", cwd=tmp_path)
    assert r.returncode == 2
    looked = tmp_path / "configs" / "conv_ae.yaml"
    assert r.stderr == (f"error: configs/conv_ae.yaml: no such file (looked for {looked}); "
                        "the shipped run config of that name runs with `aeopt train conv_ae`\n")
    assert os.listdir(tmp_path) == []


def test_configs_lists_every_shipped_yaml(tmp_path):
    r = run_cli("configs", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    for folder in ("configs", "studies"):
        entries = [e for e in listed if e["kind"] == folder]
        assert sorted(e["name"] for e in entries) == _yaml_names(folder)
        for e in entries:
            assert Path(e["path"]).read_text() == (REPO / folder / f"{e['name']}.yaml").read_text()
            assert e["description"]
    spec = yaml.safe_load((REPO / "studies" / "vae.yaml").read_text())
    text = run_cli("configs", cwd=tmp_path).stdout
    assert spec["description"] in text and str(REPO / "studies" / "vae.yaml") in text
    assert text.startswith("run configs (aeopt train NAME):")
    assert "study specs (aeopt study create NAME):" in text


def _source_copy(dest: Path) -> Path:
    """The files a wheel is built from, plus the junk a working checkout collects in studies/."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for folder in ("aeopt", "configs", "studies"):
        shutil.copytree(REPO / folder, dest / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.db", "artifacts"))
    (dest / "studies" / "aeopt.db").write_bytes(b"SQLite format 3\0")  # the default storage
    (dest / "studies" / "artifacts").mkdir()
    (dest / "studies" / "artifacts" / "trial.png").write_bytes(b"png")
    (dest / "configs" / "notes.txt").write_text("not a config")
    return dest


@pytest.mark.slow
def test_the_wheel_carries_every_yaml_and_no_junk(tmp_path):
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "whl"), "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "whl").glob("aeopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = sorted(n for n in names if not n.endswith(".py") and not n.startswith("aeopt-"))
    expected = sorted([f"aeopt/presets/configs/{n}.yaml" for n in _yaml_names("configs")]
                      + [f"aeopt/presets/studies/{n}.yaml" for n in _yaml_names("studies")])
    assert data == expected  # every YAML, and nothing else that is not code
    assert not any(n.endswith((".db", ".png")) for n in names)

    # Installed (not editable), the package finds its presets from any folder.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    probe = ("from aeopt.config.presets import RUN_CONFIG, resolve\n"
             "from aeopt.config import load_study_spec\n"
             "print(resolve('conv_ae', RUN_CONFIG)); print(load_study_spec('classifier').model.kind)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
    assert run.returncode == 0, run.stderr
    path, kind = run.stdout.split()
    assert path == str(target / "aeopt" / "presets" / "configs" / "conv_ae.yaml")
    assert kind == "conv_ae"
