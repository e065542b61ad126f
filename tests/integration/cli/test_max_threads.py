"""A bad AEOPT_MAX_THREADS is one line and exit 2, as the other AEOPT_* numbers: it was ignored (abc)
or made 1 (0) without a word."""

from __future__ import annotations

import os

import pytest

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from tests.conftest import REPO, run_cli, tiny_spec

pytestmark = pytest.mark.slow


def _one_line(r, raw: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    wanted = (f"error: AEOPT_MAX_THREADS='{raw}' is not a whole number; set it to 1 or more" if raw == "abc"
              else f"error: AEOPT_MAX_THREADS='{raw}' must be 1 or more")
    assert r.stderr.strip().splitlines()[-1] == wanted, r.stderr


@pytest.mark.parametrize("raw", ["abc", "0"])
def test_launch_says_so_before_starting_workers(tmp_path, raw):
    url = f"sqlite:///{tmp_path}/s.db"
    create_study(open_storage(url), StudySpec.model_validate(tiny_spec(name="s")), "s")
    r = run_cli("launch", "--study", "s", "--storage", url, "--workers", "1", "--devices", "cpu",
                cwd=tmp_path, env={"AEOPT_MAX_THREADS": raw}, timeout=120)
    _one_line(r, raw)
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif("OMP_NUM_THREADS" in os.environ, reason="aeopt governs threads the user left")
def test_train_says_so_at_its_first_step(tmp_path):
    r = run_cli("train", str(REPO / "configs" / "conv_ae.yaml"), "--set", "data.dataset=digits",
                "--set", "budget.max_epochs=1", "--device", "cpu", "-o", "run", cwd=tmp_path,
                env={"AEOPT_MAX_THREADS": "abc"}, timeout=300)
    _one_line(r, "abc")
    assert not (tmp_path / "run").exists()
