"""`aeopt study create | list | show | delete` and `aeopt export` on a real SQLite storage."""

from __future__ import annotations

import json

import optuna
import yaml
from optuna_dashboard import get_note

from aeopt.search.storage import open_storage
from aeopt.search.studies import load_study
from tests.conftest import run_cli, tiny_spec

SPEC = tiny_spec(name="cli", description="a study made by the CLI test")


def _add_trials(url: str) -> None:
    """Finished trials written through Optuna alone: these commands only read them."""
    study, _ = load_study(open_storage(url), "cli")
    lr = optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)
    for value, state in [(0.05, "COMPLETE"), (0.03, "COMPLETE"), (None, "PRUNED"), (None, "FAIL")]:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value, params={"optim.lr": 3e-3},
            distributions={"optim.lr": lr}, intermediate_values={1: 0.9} if state == "PRUNED" else {},
            user_attrs={"fold_losses": [value, value + 0.002], "cv_std": 0.001, "epochs": 1} if value
            else {}))


def test_study_commands(tmp_path):
    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    url = f"sqlite:///{tmp_path}/s.db"
    r = run_cli("study", "create", str(spec), "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"study 'cli' ready in {url}",
                                     f"run workers with: aeopt worker --study cli --n-trials 50 --storage "
                                     f"{url}"]
    study, _ = load_study(open_storage(url), "cli")
    note = get_note(study)
    assert "a study made by the CLI test" in note and "```yaml" in note  # the spec, as the dashboard's note
    assert study.user_attrs["aeopt:artifacts"] == f"{tmp_path}/artifacts"  # beside the database

    _add_trials(url)
    r = run_cli("study", "list", "--storage", url, cwd=tmp_path)
    header, row = r.stdout.splitlines()
    assert header.split() == ["study", "model", "complete", "pruned", "failed", "running", "best"]
    assert row.split() == ["cli", "conv_ae", "2", "1", "1", "0", "0.03", "(trial", "1)"]
    listed = json.loads(run_cli("study", "list", "--storage", url, "--json", cwd=tmp_path).stdout)
    assert listed[0]["counts"] == {"complete": 2, "pruned": 1, "failed": 1, "running": 0, "waiting": 0}
    assert listed[0]["best_trial"] == 1 and listed[0]["n_trials"] == 4

    r = run_cli("study", "show", "cli", "--storage", url, cwd=tmp_path)
    assert r.stdout.splitlines() == [
        "study cli: conv_ae on synthetic, 2-fold CV, sampler random, pruner none",
        "trials: 2 complete, 1 pruned, 1 failed",
        "best: trial 1, mean CV loss 0.03 +- 0.001",
        "  optim.lr = 0.003",
    ]

    r = run_cli("export", "--study", "cli", "--storage", url, "-o", "best.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote best.yaml: study 'cli' trial 1, CV loss 0.03 +- 0.001"

    r = run_cli("study", "delete", "cli", "--storage", url, "--yes", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "deleted study 'cli'"
    assert run_cli("study", "list", "--storage", url, cwd=tmp_path).stdout.startswith("no studies yet")


def test_skip_if_exists_keeps_the_stored_spec_says_so_and_notes_it(tmp_path):
    # Workers train the stored spec: a new one given with --skip-if-exists is not run, so a warning says
    # so, and the dashboard note ("the spec below is what every worker trains") stays the stored one.
    spec = tmp_path / "keep.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(name="keep")))
    url = f"sqlite:///{tmp_path}/s.db"
    assert run_cli("study", "create", str(spec), "--storage", url, cwd=tmp_path).returncode == 0
    same = run_cli("study", "create", str(spec), "--storage", url, "--skip-if-exists", cwd=tmp_path)
    assert same.returncode == 0 and "another spec" not in same.stderr  # the same spec: nothing to say

    r = run_cli("study", "create", str(spec), "--storage", url, "--skip-if-exists",
                "--set", "budget.max_epochs=7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"study 'keep' ready in {url}\n")
    assert r.stderr.splitlines() == [
        "study 'keep' already exists with another spec (budget.max_epochs: 1 stored, 7 given): it keeps its "
        "stored spec, which is what every worker trains; for the new one use a new --study-name, or "
        f"`aeopt study delete keep --storage {url}` first"]
    study, stored = load_study(open_storage(url), "keep")
    assert stored.budget.max_epochs == 1
    note = get_note(study)
    assert "max_epochs: 1\n" in note and "max_epochs: 7" not in note


def test_delete_takes_a_study_whose_spec_does_not_validate_or_that_optuna_made(tmp_path):
    """Another aeopt version's spec (an unknown key) or none at all: only the name must exist."""
    from aeopt.search.studies import SPEC_ATTR

    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    old = optuna.create_study(study_name="old", storage=storage.optuna)
    old.set_user_attr(SPEC_ATTR, {**SPEC, "model": {**SPEC["model"], "old_field": 1}})
    optuna.create_study(study_name="plain", storage=storage.optuna)  # by Optuna, no spec inside
    for name in ("old", "plain"):
        r = run_cli("study", "delete", name, "--yes", "--storage", url, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout == f"deleted study '{name}'\n", r.stderr
    assert optuna.get_all_study_summaries(storage.optuna) == []
    r = run_cli("study", "delete", "gone", "--yes", "--storage", url, cwd=tmp_path)
    gone = f"error: no study named 'gone' in {url} (there are none: run `aeopt study create SPEC.yaml`)"
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [gone], r.stderr


def test_a_relative_artifacts_folder_is_stored_absolute(tmp_path):
    """Workers and the dashboard run in other folders: 'arts' must mean the folder where create ran."""
    from aeopt.search.studies import ARTIFACTS_ATTR

    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    url = f"sqlite:///{tmp_path}/s.db"
    r = run_cli("study", "create", str(spec), "--storage", url, "--artifacts", "arts", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, _ = load_study(open_storage(url), "cli")
    assert study.user_attrs[ARTIFACTS_ATTR] == str((tmp_path / "arts").resolve())


def test_a_refused_name_with_skip_if_exists_creates_no_storage(tmp_path):
    """The name is checked before the storage is opened; a study of that name already there is reused."""
    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    url = f"sqlite:///{tmp_path}/new.db"
    args = ("study", "create", str(spec), "--storage", url, "--study-name", "bad/name", "--skip-if-exists")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad/name" in r.stderr, r.stderr
    assert not (tmp_path / "new.db").exists()
    # A study of that name made before names were checked (or by Optuna) is still reused.
    from aeopt.search.studies import SPEC_ATTR

    old = optuna.create_study(study_name="bad/name", storage=open_storage(url).optuna)
    old.set_user_attr(SPEC_ATTR, {**SPEC, "name": "bad/name"})
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0 and "study 'bad/name' ready" in r.stdout, r.stderr


def test_hints_name_the_storage_to_paste_but_never_a_password(tmp_path, monkeypatch):
    from aeopt.search.storage import Storage
    from aeopt.search.studies import storage_flag

    url = f"sqlite:///{tmp_path}/s.db"
    assert run_cli("study", "create", "conv_ae", "-n", "demo", "--storage", url, cwd=tmp_path).returncode == 0
    r = run_cli("study", "show", "demo", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Without --storage the command would open the default storage, not this one.
    assert f"no complete trial yet: aeopt worker --study demo --storage {url}" in r.stdout.splitlines()

    monkeypatch.delenv("AEOPT_STORAGE", raising=False)
    secret = "postgresql+psycopg://aeopt:hunter2@db/aeopt"
    assert storage_flag(Storage(None, secret, "postgresql+psycopg://aeopt:***@db/aeopt")) == " --storage URL"
    spaced = f"sqlite:///{tmp_path}/my dir/s.db"
    assert storage_flag(Storage(None, spaced, spaced)) == f" --storage 'sqlite:///{tmp_path}/my dir/s.db'"


def test_the_same_option_names_as_the_other_commands(tmp_path, monkeypatch, capfd):
    # study show / delete take --study / -s / AEOPT_STUDY as worker and export do (NAME still works);
    # export takes --out as every other command (--output still works); quickstart takes -w as launch.
    from aeopt.cli import main

    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    _add_trials(url)
    capfd.readouterr()
    for argv, env in ((["study", "show", "-s", "cli"], None), (["study", "show", "--study", "cli"], None),
                      (["study", "show"], "cli"), (["study", "show", "cli"], "other"),
                      (["study", "show", "cli", "-s", "cli"], None)):
        if env is None:
            monkeypatch.delenv("AEOPT_STUDY", raising=False)
        else:
            monkeypatch.setenv("AEOPT_STUDY", env)
        assert main([*argv, "--storage", url]) == 0, (argv, env, capfd.readouterr())
        assert capfd.readouterr().out.startswith("study cli: conv_ae"), (argv, env)
    monkeypatch.delenv("AEOPT_STUDY", raising=False)
    assert main(["export", "--study", "cli", "--out", "a.yaml", "--storage", url]) == 0
    assert main(["export", "--study", "cli", "--output", "b.yaml", "--storage", url]) == 0
    assert (tmp_path / "a.yaml").is_file() and (tmp_path / "b.yaml").is_file()
    assert main(["quickstart", "-w", "0"]) == 2
    assert "Invalid value for '--workers' / '-w'" in capfd.readouterr().err
    assert main(["study", "delete", "--study", "cli", "--yes", "--storage", url]) == 0
    assert capfd.readouterr().out.strip() == "deleted study 'cli'"
