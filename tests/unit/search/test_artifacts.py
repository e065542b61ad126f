"""Where a study's trial artifacts live, and the dashboard's pure parts (loopback check, the spec note)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from aeopt.config import StudySpec
from aeopt.search.dashboard import is_loopback, spec_markdown
from aeopt.search.storage import Storage, redact
from aeopt.search.studies import artifact_dir, default_artifact_dir


def _storage(url: str) -> Storage:
    return Storage(optuna.storages.InMemoryStorage(), url, redact(url))


def test_default_artifact_dir_is_beside_a_sqlite_file():
    assert str(default_artifact_dir(_storage("sqlite:///studies/aeopt.db"))) == "studies/artifacts"
    assert str(default_artifact_dir(_storage("sqlite:////abs/x/y.db"))) == "/abs/x/artifacts"
    assert str(default_artifact_dir(_storage("sqlite:///data/a@b/x.db"))) == "data/a@b/artifacts"
    assert str(default_artifact_dir(_storage("sqlite:///:memory:"))) == "artifacts"
    assert str(default_artifact_dir(_storage("postgresql+psycopg://u:pw@h/db"))) == "artifacts"
    assert str(default_artifact_dir(None)) == "artifacts"


def test_artifact_dir_env_wins_over_the_study_attr(tmp_path, monkeypatch):
    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    study = optuna.create_study()
    assert artifact_dir(study) is None
    study.set_user_attr("aeopt:artifacts", str(tmp_path / "a"))
    assert artifact_dir(study) == tmp_path / "a"
    monkeypatch.setenv("AEOPT_ARTIFACTS", str(tmp_path / "b"))
    assert artifact_dir(study) == tmp_path / "b"


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                       ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                       ("192.168.1.5", False), ("example.org", False)])
def test_loopback(host, loop):
    assert is_loopback(host) is loop


def test_spec_note_holds_the_spec_as_yaml():
    lr = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
    spec = StudySpec.model_validate({"name": "n", "description": "why this study", "model": {"kind": "vae"},
                                     "space": {"optim.lr": lr}})
    note = spec_markdown(spec)
    assert note.startswith("## n") and "why this study" in note
    block = note.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert StudySpec.model_validate(yaml.safe_load(block)) == spec
