"""`aeopt launch`'s worker logs keep every launch's lines: a rerun (after a crash, say) appends to them."""

from __future__ import annotations

import pytest

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from tests.conftest import run_cli, tiny_spec

pytestmark = pytest.mark.slow


def test_a_second_launch_appends_to_the_worker_logs(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    create_study(open_storage(url), StudySpec.model_validate(tiny_spec(name="s")), "s")
    for target in ("1", "2"):  # the second launch finds one trial finished and runs one more
        r = run_cli("launch", "--study", "s", "--storage", url, "--workers", "1", "--devices", "cpu",
                    "--n-trials", target, cwd=tmp_path, timeout=400)
        assert r.returncode == 0, r.stderr
    text = (tmp_path / "logs" / "s" / "worker-0.log").read_text()
    assert "\0" not in text
    headers = [line for line in text.splitlines() if line.startswith("=== ")]
    assert len(headers) == 2 and all("aeopt launch (pid " in h and "worker 0 on cpu" in h for h in headers)
    # The first launch's lines are still there, under its own header.
    first = text.split(headers[1])[0]
    assert first.startswith(headers[0]) and "worker 0 finished" in first
    assert "worker 0 finished" in text.split(headers[1])[1]
