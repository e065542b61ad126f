"""`aeopt launch --workers auto` on this machine's CPU: real worker processes, a tiny study."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from aeopt.threads import usable_cores
from tests.conftest import run_cli, tiny_spec

pytestmark = pytest.mark.slow

SPEC = tiny_spec(name="s", data={"train_subset": 400}, budget={"max_epochs": 2})


def test_auto_workers_on_cpu_finish_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    create_study(open_storage(url), StudySpec.model_validate(SPEC), "s")
    r = run_cli("launch", "--study", "s", "--storage", url, "--workers", "auto", "--n-trials", "3",
                cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr
    # The plan is logged with what it saw; at least one CPU worker, at most one per core.
    line = next(ln for ln in r.stderr.splitlines() if "--workers auto:" in ln)
    n = int(line.split("--workers auto: ")[1].split(" on cpu")[0])
    assert 1 <= n <= usable_cores() and f"({usable_cores()} cores" in line
    logs = sorted((tmp_path / "logs" / "s").glob("worker-*.log"))
    assert len(logs) == n
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 3
