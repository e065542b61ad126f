"""`aeopt dashboard` as a real subprocess: its HTTP API lists a study created by aeopt, the
study's spec note, and a trial's uploaded artifacts, and serves the artifact files."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta

from aeopt.config import StudySpec
from aeopt.search.artifacts import find_best_checkpoint, upload_trial_artifacts
from aeopt.search.dashboard import write_study_note
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, study_names
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.cv import CVResult
from aeopt.training.data import load_dataset
from aeopt.training.models import build_model

pytestmark = pytest.mark.timeout(120)


def _spec(kind: str = "denoising_ae") -> StudySpec:
    noise = 0.3 if kind == "denoising_ae" else 0.0
    model = {"kind": kind, "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "noise_std": noise}
    return StudySpec.model_validate({
        "name": "dash",
        "description": "dashboard test study",
        "model": model,
        "data": {"dataset": "synthetic", "train_subset": 200},
        "budget": {"max_epochs": 2, "batch_size": 64},
        "cv": {"folds": 2},
        "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    })


@pytest.fixture
def study_with_artifacts(tmp_path, monkeypatch):
    """A study made by aeopt in SQLite with one finished trial that uploaded its artifacts."""
    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url)
    artifacts = tmp_path / "artifacts"
    spec = _spec()
    study = create_study(storage, spec, artifacts=str(artifacts))
    write_study_note(study)
    trial = study.ask()
    lr = trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    cfg = spec.run_config({"optim.lr": lr})
    torch.manual_seed(0)
    model = build_model(cfg)
    result = _result(model, load_dataset("synthetic").test.x[:16], value=0.05, fold=1, epoch=2)
    upload_trial_artifacts(trial, storage, cfg, result, is_best=True)
    study.tell(trial, 0.05)
    return url, artifacts, study, model


def _result(model: torch.nn.Module, sample: torch.Tensor, *, value: float, fold: int = 0,
            epoch: int = 1) -> CVResult:
    """What cross_validate returns, for a model built here: one fold's model at `epoch`."""
    return CVResult(value=value, best_epoch=epoch, fold_losses=[value - 0.01, value + 0.01], epochs=epoch + 1,
                    model=model, model_fold=fold, sample=sample)


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str, int]:
    """Start `aeopt dashboard ... --port 0` and wait for the line that names its URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aeopt", "dashboard", *args, "--port", "0"], cwd=cwd,
                            env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"on http://(\S+):(\d+)/", line)
        if m:
            return proc, "".join(lines), int(m.group(2))
    proc.kill()
    raise AssertionError("dashboard did not start:\n" + "".join(lines) + proc.stdout.read())


def _get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=20) as resp:
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_study_is_created_without_its_note_where_optuna_dashboard_is_missing(tmp_path, monkeypatch, caplog):
    # A GPU image given only what training needs (benchmarks/gpu_stage.sh) may lack optuna-dashboard:
    # the note is a convenience, so the study is created all the same, with a warning.
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import optuna_dashboard` raises ImportError
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = create_study(storage, _spec())
    write_study_note(study)
    assert "dashboard note: ModuleNotFoundError" in caplog.text
    assert study_names(storage) == [study.study_name]


def test_dashboard_lists_trial_artifacts_and_spec_note(study_with_artifacts, tmp_path):
    url, artifacts, study, _ = study_with_artifacts
    proc, startup, port = _start(["--storage", url], cwd=tmp_path)
    try:
        assert "no authentication" not in startup, startup
        base = f"http://127.0.0.1:{port}"
        status, body, _ = _get(f"{base}/api/studies")
        assert status == 200
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        study_id = studies[0]["study_id"]

        status, body, _ = _get(f"{base}/api/studies/{study_id}")
        detail = json.loads(body)
        assert "```yaml" in detail["note"]["body"] and "denoising_ae" in detail["note"]["body"]
        assert "dashboard test study" in detail["note"]["body"]
        # The objective is named (study.set_metric_names at create), not "Objective 0".
        assert detail["objective_names"] == ["CV loss (MSE)"]
        assert _get(f"{base}/csv/{study_id}")[1].decode().splitlines()[0].count("CV loss (MSE)") == 1
        (trial,) = detail["trials"]
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert names == ["checkpoint_trial0.pt", "reconstructions_trial0.png"]

        # The files themselves come back through the dashboard's artifact route, each with its type.
        png = next(a for a in trial["artifacts"] if a["filename"].endswith(".png"))
        status, data, ctype = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{png['artifact_id']}")
        assert status == 200 and ctype == "image/png" and data.startswith(b"\x89PNG") and len(data) > 2000
        ckpt = next(a for a in trial["artifacts"] if a["filename"].endswith(".pt"))
        assert ckpt["mimetype"] == "application/octet-stream"
        status, data, ctype = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{ckpt['artifact_id']}")
        assert status == 200 and ctype == "application/octet-stream" and len(data) > 1000
    finally:
        _stop(proc)


def test_dashboard_with_explicit_artifact_folder_and_env(study_with_artifacts, tmp_path):
    url, artifacts, _, _ = study_with_artifacts
    empty = tmp_path / "empty"
    empty.mkdir()
    # Pointing --artifacts at the wrong folder makes the file unreachable: the option is used.
    proc, _, port = _start(["--storage", url, "--artifacts", str(empty)], cwd=tmp_path)
    try:
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"]
        sid = studies[0]["study_id"]
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{sid}")[1])
        trial = detail["trials"][0]
        art = trial["artifacts"][0]
        with pytest.raises(urllib.error.HTTPError):
            _get(f"http://127.0.0.1:{port}/artifacts/{sid}/{trial['trial_id']}/{art['artifact_id']}")
    finally:
        _stop(proc)


def test_dashboard_warns_when_not_bound_to_localhost(study_with_artifacts, tmp_path):
    url, _, _, _ = study_with_artifacts
    proc, startup, port = _start(["--storage", url, "--host", "0.0.0.0"], cwd=tmp_path)
    try:
        assert "no authentication" in startup and "delete" in startup, startup
        # 0.0.0.0 includes the loopback interface: the server really is up.
        assert _get(f"http://127.0.0.1:{port}/api/studies")[0] == 200
    finally:
        _stop(proc)


def test_best_checkpoint_round_trips(study_with_artifacts, tmp_path):
    url, _, study, model = study_with_artifacts
    path = find_best_checkpoint(study, tmp_path / "best", open_storage(url))
    assert path is not None and path.name == "checkpoint_trial0.pt"
    loaded, cfg, payload = load_checkpoint(path)
    assert cfg.model.kind == "denoising_ae" and payload["trial"] == 0 and payload["study"] == "dash"
    # It says which fold's model it holds and at which epoch, and the losses that describe it.
    assert payload["fold"] == 1 and payload["epoch"] == 2
    assert payload["metrics"] == {"cv_mean": 0.05, "fold_loss": pytest.approx(0.06)}
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    loaded.eval()
    assert torch.allclose(model(x), loaded(x))


def test_upload_never_raises_and_skips_without_folder(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    spec = _spec("conv_ae")
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = create_study(storage, spec)
    trial = study.ask()
    cfg = spec.run_config({})
    result = _result(build_model(cfg), torch.rand(4, 1, 28, 28), value=0.1)
    upload_trial_artifacts(trial, storage, cfg, result, is_best=True)
    assert get_all_artifact_meta(trial) == []  # no folder: nothing uploaded
    # A folder that cannot be created (a file is in the way): a warning, not an exception.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("AEOPT_ARTIFACTS", str(blocker / "sub"))
    with caplog.at_level("WARNING", logger="aeopt.search.artifacts"):
        upload_trial_artifacts(trial, storage, cfg, result, is_best=True)
    assert "could not upload trial 0's artifacts" in caplog.text
    assert find_best_checkpoint(study, None, storage) is None  # no finished trial yet


def test_best_checkpoint_found_beside_the_database_from_another_directory(tmp_path, monkeypatch):
    """`study create` from the database's folder records a relative artifact folder; a report run
    from elsewhere still finds the checkpoint beside the SQLite file."""
    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    spec = _spec("conv_ae")
    study = create_study(storage, spec, artifacts="artifacts")
    trial = study.ask()
    cfg = spec.run_config({"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)})
    result = _result(build_model(cfg), torch.rand(4, 1, 28, 28), value=0.1)
    upload_trial_artifacts(trial, storage, cfg, result, is_best=True)
    study.tell(trial, 0.1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # "artifacts" (relative) is not here; the folder beside the SQLite file is.
    path = find_best_checkpoint(study, elsewhere / "b", storage)
    assert path is not None and load_checkpoint(path)[1] == cfg


# ----- issue 11: metric names, pruned trials' PNGs, titles, empty storages, importances ------------------


def test_a_pruned_trial_gets_its_png_titled_with_its_value(study_with_artifacts):
    from aeopt.search.artifacts import artifact_title, upload_pruned_artifacts

    url, _, study, model = study_with_artifacts
    storage = open_storage(url)
    trial = study.ask()
    cfg = _spec().run_config({"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)})
    result = _result(model, load_dataset("synthetic").test.x[:16], value=0.08)
    result.history = [0.2, 0.125]
    for epoch, v in enumerate(result.history, start=1):
        trial.report(v, epoch)
    # What the objective does before raising TrialPruned: the model as it is when pruned.
    upload_pruned_artifacts(trial, storage, cfg, result, epoch=2)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[trial.number]
    assert frozen.state == optuna.trial.TrialState.PRUNED and frozen.value == 0.125
    (meta,) = get_all_artifact_meta(frozen, storage=storage.optuna)
    assert meta.filename == f"reconstructions_trial{trial.number}.png" and meta.mimetype == "image/png"
    # The title's number is the value Optuna (and the dashboard) shows for the trial.
    title = artifact_title(trial.number, cfg, result, pruned_at=2)
    assert f"CV loss (MSE) {frozen.value:.5g}" in title and "pruned at epoch 2" in title


def test_a_complete_trials_title_is_its_value_with_a_penalty_spelled_out():
    from aeopt.search.artifacts import artifact_title

    cfg = _spec("conv_ae").run_config({})
    result = _result(build_model(cfg), torch.rand(4, 1, 28, 28), value=0.05, epoch=3)
    assert artifact_title(4, cfg, result) == "trial 4: conv_ae, CV loss (MSE) 0.05 (fold 0 at epoch 3)"
    result.penalty = 0.01  # an adversarial AE's prior penalty joins the value
    title = artifact_title(4, cfg, result)
    assert title.startswith("trial 4: conv_ae, CV loss (MSE) 0.06 = CV loss 0.05 + prior penalty 0.01")


def test_older_studies_get_their_metric_named_when_the_dashboard_opens(tmp_path):
    from aeopt.search.studies import SPEC_ATTR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage = open_storage(url)
    old = optuna.create_study(study_name="old_vae", storage=storage.optuna)  # as an older aeopt made it
    spec = _spec("conv_ae").model_dump(mode="json")
    spec["model"] = {"kind": "vae", "hidden1": 16, "hidden2": 8, "latent_dim": 2}
    old.set_user_attr(SPEC_ATTR, spec)
    optuna.create_study(study_name="not_aeopt", storage=storage.optuna)  # left alone
    assert old.metric_names is None
    proc, _, port = _start(["--storage", url], cwd=tmp_path)
    try:
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"]
        ids = {s["study_name"]: s["study_id"] for s in studies}
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{ids['old_vae']}")[1])
        assert detail["objective_names"] == ["CV loss (neg. ELBO / image)"]
        other = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{ids['not_aeopt']}")[1])
        assert "objective_names" not in other
    finally:
        _stop(proc)


def test_a_storage_with_no_studies_warns_and_a_missing_one_is_not_created(tmp_path):
    empty = tmp_path / "empty.db"
    open_storage(f"sqlite:///{empty}")  # a database with Optuna's tables and no study
    proc, startup, port = _start(["--storage", f"sqlite:///{empty}"], cwd=tmp_path)
    try:
        assert "holds no studies yet" in startup and "aeopt study create" in startup, startup
        assert json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"] == []
    finally:
        _stop(proc)
    typo = tmp_path / "typo.db"
    r = subprocess.run([sys.executable, "-m", "aeopt", "dashboard", "--storage", f"sqlite:///{typo}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: no study storage at")
    assert "Traceback" not in r.stderr
    assert not typo.exists()


def test_the_reports_importances_are_the_dashboards(tmp_path):
    """The same study's importances from the dashboard's API and from the report's plot agree."""
    from aeopt.search.plots import MIN_IMPORTANCE_TRIALS, STUDY_PLOTS

    url = f"sqlite:///{tmp_path / 'imp.db'}"
    storage = open_storage(url)
    study = create_study(storage, _spec("conv_ae").model_copy(update={"name": "imp"}))
    study.sampler = optuna.samplers.RandomSampler(seed=1)
    for _ in range(MIN_IMPORTANCE_TRIALS + 4):
        trial = study.ask()
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        wd = trial.suggest_float("optim.weight_decay", 1e-6, 1e-3, log=True)
        study.tell(trial, (math.log10(lr) + 3) ** 2 + 0.001 * math.log10(wd))
    plot = next(p for p in STUDY_PLOTS if p.key == "param_importances")
    assert plot.why_not(study) is None
    (bar,) = plot.plotly(study).data
    ours = dict(zip(bar.y, bar.x, strict=True))
    proc, _, port = _start(["--storage", url], cwd=tmp_path)
    try:
        sid = json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"][0]["study_id"]
        (theirs,) = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{sid}/param_importances")[1])[
            "param_importances"]
    finally:
        _stop(proc)
    theirs = {i["name"]: i["importance"] for i in theirs}
    assert set(theirs) == set(ours) == {"optim.lr", "optim.weight_decay"}
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert ours["optim.lr"] > ours["optim.weight_decay"]


@pytest.mark.browser
@pytest.mark.timeout(300)  # Chromium's start alone takes a minute on a busy 2-core machine
def test_the_metric_name_shows_in_the_dashboard_ui(study_with_artifacts, tmp_path):
    """In headless Chromium, the study's page names the objective "CV loss (MSE)", not "Objective 0"."""
    import shutil

    from tests.conftest import _missing

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        _missing("headless Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    url, _, _, _ = study_with_artifacts
    proc, _, port = _start(["--storage", url], cwd=tmp_path)
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        sid = json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"][0]["study_id"]
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{port}/dashboard/studies/{sid}")
        text = ""
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and "CV loss (MSE)" not in text:
            time.sleep(1)
            text = driver.execute_script("return document.body.innerText")
    finally:
        driver.quit()
        _stop(proc)
    assert "CV loss (MSE)" in text, text[:2000]
    assert "Objective 0" not in text
