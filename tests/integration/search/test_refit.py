"""`aeopt refit` as a user runs it: a tiny digits study searched by a real worker, its best trial refit
on the full training split, and the refit's checkpoint taken by `aeopt finetune` and `aeopt report`;
every model kind's test metric; refusals and Ctrl-C that leave nothing written; a password in the
storage URL that never reaches an output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState, create_trial

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import prepare, to_float
from aeopt.training.engine import mse
from tests.conftest import run_cli

# A small search on the bundled digits (1,797 images): seconds per trial on one CPU thread.
SPEC = {
    "name": "tiny",
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6},
    "data": {"dataset": "digits", "train_subset": 600},
    "budget": {"max_epochs": 2, "batch_size": 64, "patience": 2},
    "cv": {"folds": 2},
    "sampler": {"name": "random", "seed": 0},
    "space": {"model.c1": {"type": "int", "low": 4, "high": 8},
              "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}
ENV = {"OMP_NUM_THREADS": "1"}
REFIT_FILES = {"best.yaml", "checkpoint.pt", "metrics.json", "reconstructions.png", "refit.json"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, env=ENV)


def _study_with_a_trial(url: str, spec: dict, name: str, state: TrialState = TrialState.COMPLETE) -> None:
    """A study as `aeopt study create` makes it, with one finished trial added directly (the refit
    reads only the trial's state, params, value and attrs, however the trial was run)."""
    study = create_study(open_storage(url), StudySpec.model_validate({**spec, "space": {}}), name)
    study.add_trial(create_trial(state=state, value=0.05 if state == TrialState.COMPLETE else None,
                                 params={}, distributions={},
                                 user_attrs={"fold_losses": [0.049, 0.051], "epochs": 2, "best_epoch": 2}))


def test_worker_then_refit_then_finetune_and_report_take_the_checkpoint(tmp_path):
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    url = f"sqlite:///{tmp_path / 's.db'}"
    for args in (("study", "create", str(spec_file), "--storage", url),
                 ("worker", "--study", "tiny", "--storage", url, "--n-trials", "2", "--device", "cpu")):
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]

    proc = _cli("refit", "--study", "tiny", "--storage", url, "-o", "runs/best", "--device", "cpu",
                "--set", "budget.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "runs" / "best"
    assert {p.name for p in out.iterdir()} == REFIT_FILES
    assert [p.name for p in out.parent.iterdir()] == ["best"]  # no temporary folder left behind
    record = json.loads((out / "refit.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    export = yaml.safe_load((out / "best.yaml").read_text())
    # The best trial, trained on the whole training split (600 was the study's subset), tested once.
    assert record["trial"] == export["provenance"]["trial"] and record["study"] == "tiny"
    assert record["subsets_removed"] == ["data.train_subset=600"]
    assert record["n_train"] + record["n_holdout"] == 1438  # digits' training split: 80 % of 1,797
    assert record["test_mse"] == metrics["test_mse"] and 0 < record["test_mse"] < 0.2
    assert 1 <= record["epochs"] <= 3 and record["storage"] == url
    _, cfg, _ = load_checkpoint(out / "checkpoint.pt")
    assert cfg.data.train_subset is None and cfg.budget.max_epochs == 3
    assert cfg.model.c1 == export["model"]["c1"] and cfg.optim.lr == export["optim"]["lr"]
    # One summary line on stdout; progress per epoch and the next commands on stderr.
    assert proc.stdout.count("\n") == 1 and "test MSE" in proc.stdout and "runs/best" in proc.stdout
    assert "train conv_ae 1/3" in proc.stderr
    assert "aeopt finetune --checkpoint runs/best/checkpoint.pt" in proc.stderr

    proc = _cli("finetune", "--checkpoint", "runs/best/checkpoint.pt", "--out", "runs/ft", "--device", "cpu",
                "--set", "finetune.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    finetuned = json.loads((tmp_path / "runs" / "ft" / "metrics.json").read_text())
    assert 0 < finetuned["test_acc"] <= 1
    proc = _cli("report", "--checkpoint", "runs/best/checkpoint.pt", "-o", "reports/best", "--device", "cpu",
                "--max-points", "60", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "reports" / "best" / "report.html").is_file()


@pytest.mark.parametrize(("kind", "model", "said"), [
    ("denoising_ae", {"kind": "denoising_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "noise_std": 0.3},
     "from noisy inputs (std 0.3)"),
    ("vae", {"kind": "vae", "hidden1": 32, "hidden2": 16, "latent_dim": 2}, "test negative ELBO"),
    ("aae", {"kind": "aae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "disc_hidden": 16}, "test MSE"),
])
def test_each_kind_is_refit_and_reported_by_its_own_metric(tmp_path, kind, model, said):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _study_with_a_trial(url, {**SPEC, "model": model}, kind)
    # The denoising AE at a higher rate: at 1e-3 two epochs leave it near a constant image, whose
    # error is the same from clean and noisy inputs.
    faster = ("--set", "optim.lr=0.01") if kind == "denoising_ae" else ()
    proc = _cli("refit", "--study", kind, "--storage", url, "-o", "out", "--device", "cpu",
                "--set", "budget.max_epochs=2", *faster, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "refit.json").read_text())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert said in proc.stdout and record["summary"] in proc.stdout and record["model"] == kind
    assert record["test_loss"] == metrics["test_loss"] and record["test_mse"] == metrics["test_mse"]
    model_, cfg, _ = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert cfg.model.kind == kind and cfg.data.train_subset is None
    if kind == "denoising_ae":
        # Recomputed from the checkpoint: the noisy-input figure is the test MSE from inputs with the
        # model's noise, the other from clean inputs, and the two differ.
        test_x = to_float(prepare(cfg.data).test.x, "cpu")
        noisy, clean = record["test_mse_noisy_input"], record["test_mse"]
        assert noisy == metrics["test_mse_noisy_input"]
        assert noisy == pytest.approx(mse(model_, test_x, noise=0.3), rel=2e-5)
        assert clean == pytest.approx(mse(model_, test_x), rel=2e-5)
        assert noisy != pytest.approx(clean, rel=2e-4)


def test_refusals_are_one_line_and_write_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _study_with_a_trial(url, SPEC, "pruned", TrialState.PRUNED)
    cases = [(("--study", "pruned", "--storage", url), "study 'pruned' has no complete trial (1 pruned)"),
             (("--study", "nope", "--storage", url), "no study named 'nope'"),
             (("--study", "x", "--storage", f"sqlite:///{tmp_path / 'none.db'}"), "no study storage at")]
    for args, said in cases:
        proc = _cli("refit", *args, "-o", "out", "--device", "cpu", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and said in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]


def test_ctrl_c_while_training_says_one_line_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _study_with_a_trial(url, SPEC, "long")
    env = {**os.environ, **ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aeopt", "refit", "--study", "long", "--storage", url, "-o", "out",
         "--device", "cpu", "--set", "budget.max_epochs=1000", "--set", "budget.patience=0"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    seen = []
    for line in proc.stderr:  # epochs are logged one line each (stderr is not a terminal)
        seen.append(line)
        if "train conv_ae 2/1000" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    try:
        stdout, rest = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("refit still running 120 s after Ctrl-C")
    assert any("train conv_ae 2/1000" in line for line in seen), "".join(seen)[-2000:]
    assert proc.returncode == 130 and stdout == ""
    assert rest.strip() == "stopped by signal SIGINT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]  # no out/, no temporary folder


def test_a_password_in_the_storage_url_reaches_no_output(tmp_path, pg_url):
    # The test server trusts local connections, so the password is accepted and ignored.
    if "://postgres@" not in pg_url:
        pytest.skip("AEOPT_TEST_PG_URL is not the local trusted postgres user")
    url = pg_url.replace("://postgres@", "://postgres:hunter2-secret@")
    name = f"refit_{os.getpid()}_{int(time.time())}"
    _study_with_a_trial(url, SPEC, name)
    proc = _cli("refit", "--study", name, "--storage", url, "-o", "out", "--device", "cpu",
                "--set", "budget.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hunter2" not in proc.stdout + proc.stderr
    for path in (tmp_path / "out").iterdir():
        assert b"hunter2" not in path.read_bytes(), path.name
    assert "127.0.0.1" in json.loads((tmp_path / "out" / "refit.json").read_text())["storage"]
