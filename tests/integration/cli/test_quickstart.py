"""`aeopt quickstart` end to end on scikit-learn's bundled digits (no Fashion-MNIST on disk)."""

from __future__ import annotations

import json

import pytest
from optuna_dashboard import get_note

from aeopt.config import load_run_config
from aeopt.search.quickstart import quickstart_spec
from aeopt.search.records import StudyCounts
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, load_study
from aeopt.training.engine import resolve_device
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_quickstart_on_digits_two_trials(tmp_path, no_data):
    url = f"sqlite:///{tmp_path}/qs.db"
    # No data folder: the quickstart falls back to the bundled digits (the cache is a temp folder).
    # (A --data-dir without the data would be an error: a folder the user named is never passed over.)
    r = run_cli("quickstart", "--n-trials", "2", "--max-epochs", "2", "--storage", url,
                "--device", "cpu", "--out", str(tmp_path / "qs"), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "bundled digits" in r.stderr

    study, spec = load_study(open_storage(url), "quickstart")
    assert spec.data.dataset == "digits"
    counts = StudyCounts.of(study)
    assert counts.finished == 2 and counts.failed == 0 and counts.total == 2

    best = tmp_path / "qs" / "best.yaml"
    cfg = load_run_config(best)
    assert cfg.data.dataset == "digits" and cfg.budget.max_epochs == 2
    assert cfg == spec.run_config(study.best_trial.params)

    # The summary the README shows, and where to go next.
    assert r.stdout.startswith(f"2 trials: {counts.complete} complete, {counts.pruned} pruned, 0 failed\n")
    assert f"best config: {best}  (retrain it: aeopt train {best})" in r.stdout
    # It ends with the refit of the best config, tested once (search/refit.py), on the search's images.
    refit = tmp_path / "qs" / "refit"
    assert (refit / "checkpoint.pt").is_file() and (refit / "refit.json").is_file()
    record = json.loads((refit / "refit.json").read_text())
    assert record["trial"] == study.best_trial.number and record["test_mse"] > 0
    assert (f"refit:       {record['summary']}  ({refit / 'checkpoint.pt'}; on the full training split: "
            f"aeopt refit --study quickstart --storage {url})") in r.stdout
    assert f"dashboard:   aeopt dashboard --storage {url}" in r.stdout
    assert f"report:      aeopt report --study quickstart --storage {url} -o report\n" in r.stdout
    assert f"storage:     {url}" in r.stdout
    # The study keeps its artifacts beside the database; the best trial uploaded its checkpoint.
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").iterdir())


@pytest.fixture
def no_data(monkeypatch) -> None:
    """No Fashion-MNIST for the quickstart: run_cli passes this process's environment on (CI sets
    AEOPT_DATA_DIR), and the session's cache is an empty folder, offline: it picks the bundled digits."""
    for name in ("AEOPT_DATA_DIR", "AEOPT_DEVICE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("made", "error"), [
    (quickstart_spec("digits", None, 1),
     "was made with --max-epochs 1, not --max-epochs 2: rerun with --max-epochs 1 to continue it, or start "
     "afresh with `aeopt study delete quickstart --storage {url}`"),
    # Made on Fashion-MNIST, rerun where only the digits are: it cannot continue on the images it used.
    (quickstart_spec("fashion_mnist", 5000, 2),
     "ran on fashion_mnist, and this run would use digits: start afresh on digits with "
     "`aeopt study delete quickstart --storage {url}`, or pass another --storage"),
])
def test_a_quickstart_rerun_with_other_settings_is_refused(tmp_path, made, error, no_data):
    # Its workers would train the stored spec, not the options given: refused before any trial, and the
    # study (its spec and dashboard note) is left as it was.
    url = f"sqlite:///{tmp_path}/qs.db"
    study = create_study(open_storage(url), made, "quickstart")
    r = run_cli("quickstart", "--n-trials", "1", "--max-epochs", "2", "--no-refit", "--storage", url,
                "--device", "cpu", "--out", str(tmp_path / "qs"), cwd=tmp_path,
                timeout=600)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == f"error: study 'quickstart' in {url} {error.format(url=url)}"
    assert "Traceback" not in r.stderr
    study, stored = load_study(open_storage(url), "quickstart")
    assert stored == made.model_copy(update={"name": "quickstart"}) and not study.trials
    assert get_note(study) == ""  # create_study alone writes no note; the refused rerun wrote none
    assert not (tmp_path / "qs").exists()


def test_quickstart_workers_run_on_the_default_device(tmp_path, no_data):
    # --device auto, as no --device, means cuda when available for every worker process too: not the
    # CPU (launch's own default), and not `--devices auto: 'auto' is not a device`.
    url = f"sqlite:///{tmp_path}/qs.db"
    r = run_cli("quickstart", "--workers", "2", "--device", "auto", "--n-trials", "2", "--max-epochs", "1",
                "--no-refit", "--storage", url, "--out", str(tmp_path / "qs"),
                cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    device = str(resolve_device(None))
    assert f"launched 2 workers ({device}, {device})" in r.stderr
    for i in range(2):
        log = (tmp_path / "logs" / "quickstart" / f"worker-{i}.log").read_text()
        assert f"worker {i} on {device}: " in log
    assert StudyCounts.of(load_study(open_storage(url), "quickstart")[0]).finished == 2
