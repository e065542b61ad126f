"""Export, fine-tune, baseline and compare end to end: tiny real runs on the synthetic dataset,
real studies in SQLite and PostgreSQL built with Optuna as the study contract describes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from aeopt.config import StudySpec, dump_yaml, load_finetune_config, load_run_config, run_config
from aeopt.search.space import suggest
from aeopt.stages.classifier_run import labelled_split
from aeopt.stages.finetune import finetune
from aeopt.stages.train import train_run
from aeopt.training.checkpoint import load_checkpoint, load_classifier_checkpoint
from aeopt.training.cv import cross_validate
from aeopt.training.data import prepare, training_pool
from aeopt.training.supervised import BaselineCNN, evaluate
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

TINY = {
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6, "dropout": 0.0},
    "data": {"dataset": "synthetic", "train_subset": 600},
    "budget": {"max_epochs": 2, "batch_size": 64, "patience": 0},
    "optim": {"name": "adam", "lr": 3e-3},
    "seed": 0,
}
TINY_FT = {"max_epochs": 3, "min_steps_per_epoch": 6, "batch_size": 64, "lr": 1e-2, "head_hidden": 16}
CPU = ["--device", "cpu"]


def _config(tmp_path: Path, finetune_section: dict | None = None, **model) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["model"].update(model)
    if finetune_section is not None:
        cfg["finetune"] = finetune_section
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_yaml(cfg))
    return path


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


# ----- export ------------------------------------------------------------------------------------


def _real_study(url: str, name: str, n_trials: int = 3) -> optuna.Study:
    """A study as aeopt's workers leave it: spec inside, dotted params, CV attrs, real CV values."""
    spec = StudySpec.model_validate({
        **TINY, "name": name, "data": {"dataset": "synthetic", "train_subset": 200},
        "budget": {"max_epochs": 1, "batch_size": 64}, "cv": {"folds": 2, "seed": 5},
        "sampler": {"name": "random", "seed": 7},
        "space": {"model.c1": {"type": "int", "low": 2, "high": 8},
                  "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    })
    study = optuna.create_study(study_name=name, storage=url, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(7))
    study.set_user_attr("aeopt:spec", spec.model_dump(mode="json"))
    for _ in range(n_trials):
        trial = study.ask()
        cfg = spec.run_config(suggest(trial, spec.space))
        result = cross_validate(cfg, training_pool(cfg.data), spec.cv.folds, spec.cv.seed,
                                torch.device("cpu"),
                                on_epoch=lambda epoch, mean, losses, trial=trial: trial.report(mean, epoch))
        attrs = {"fold_losses": result.fold_losses, "cv_std": result.std, "epochs": result.epochs,
                 "best_epoch": result.best_epoch, "seconds": result.seconds, "device": "cpu"}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, result.value)
    return study


def test_export_from_sqlite_study_then_train_rebuilds_it(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    study = _real_study(url, "exp")
    best = min(study.trials, key=lambda t: t.value)

    proc = run_cli("export", "--study", "exp", "--storage", url, "-o", str(tmp_path / "best.yaml"),
                   cwd=tmp_path)
    _ok(proc)
    assert f"trial {best.number}" in proc.stdout
    export = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert export["provenance"]["trial"] == best.number
    assert export["metrics"]["cv_mean"] == pytest.approx(best.value)
    assert export["metrics"]["fold_losses"] == pytest.approx(best.user_attrs["fold_losses"])
    assert export["model"]["c1"] == best.params["model.c1"]
    assert export["optim"]["lr"] == pytest.approx(best.params["optim.lr"])

    # `aeopt train best.yaml` retrains exactly the exported configuration.
    _ok(run_cli("train", str(tmp_path / "best.yaml"), *CPU, "--out", str(tmp_path / "retrain"),
                cwd=tmp_path))
    _, cfg, _ = load_checkpoint(tmp_path / "retrain" / "checkpoint.pt")
    run_sections = {k: v for k, v in export.items() if k not in ("metrics", "provenance")}
    assert cfg.model_dump(mode="json") == run_sections

    # --top and JSON; an empty study is one clear line (exit 2).
    _ok(run_cli("export", "--study", "exp", "--storage", url, "-o", str(tmp_path / "top.json"), "--top", "2",
                cwd=tmp_path))
    top = json.loads((tmp_path / "top.json").read_text())
    assert [e["provenance"]["rank"] for e in top] == [1, 2]
    assert top[0]["metrics"]["cv_mean"] <= top[1]["metrics"]["cv_mean"]
    _real_study(url, "none", n_trials=0)
    proc = run_cli("export", "--study", "none", "--storage", url, "-o", str(tmp_path / "none.yaml"),
                   cwd=tmp_path)
    assert proc.returncode == 2 and "has no complete trial" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none.yaml").exists()


@pytest.mark.postgres
def test_export_from_postgres_holds_no_credentials(tmp_path, pg_url):
    # The server trusts local connections, so a password in the URL is accepted and ignored:
    # exactly the situation where a careless export would leak it.
    secret = "s3cretPW_do_not_leak"
    url = pg_url.replace("postgres@", f"postgres:{secret}@", 1)
    assert secret in url
    name = f"cred_{tmp_path.name[-12:]}"
    _real_study(url, name, n_trials=2)
    for out in ("best.yaml", "best.json"):
        proc = run_cli("export", "--study", name, "--storage", url, "-o", str(tmp_path / out), "--top", "2",
                       cwd=tmp_path)
        _ok(proc)
        text = (tmp_path / out).read_text()
        for haystack in (text, proc.stdout, proc.stderr):
            assert secret not in haystack and "127.0.0.1" not in haystack
    # The missing-study error names the storage with the password hidden.
    proc = run_cli("export", "--study", "nope", "--storage", url, "-o", str(tmp_path / "x.yaml"),
                   cwd=tmp_path)
    assert proc.returncode == 2 and secret not in proc.stderr
    assert "no study named 'nope'" in proc.stderr


# ----- fine-tune ---------------------------------------------------------------------------------


def test_finetune_cli_writes_metrics_and_confusion_matrix(tmp_path):
    cfg = _config(tmp_path, {**TINY_FT, "max_epochs": 6})
    # One file serves both commands: `aeopt train` reads the run sections and skips `finetune:`.
    assert load_run_config(cfg) == run_config(load_finetune_config(cfg))
    out = tmp_path / "ft"
    proc = run_cli("finetune", str(cfg), *CPU, "--out", str(out), cwd=tmp_path)
    _ok(proc)
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(proc.stdout)["test_acc"] == metrics["test_acc"]
    assert metrics["task"] == "finetune" and metrics["mode"] == "full" and metrics["init"] == "pretrained"
    assert metrics["autoencoder"]["source"] == "trained"
    assert (out / "autoencoder" / "checkpoint.pt").is_file()
    assert metrics["n_train"] == 480 and metrics["n_val"] == 120 and metrics["n_test"] == 500
    assert metrics["epochs"] == 6 == len(metrics["history"]) and metrics["seconds"] > 0
    # The synthetic classes are bars at different angles: four times chance (0.1) or more after 6
    # epochs (seeds 0-3 gave test accuracy 0.61-0.74 in-process; after 3 epochs 0.18-0.34, too close
    # to chance to tell learning from luck).
    assert metrics["test_acc"] > 0.4 and metrics["train_acc"] > 0.4
    assert set(metrics["per_class_acc"]) == {str(i) for i in range(10)}

    cm = json.loads((out / "confusion_matrix.json").read_text())
    matrix = torch.tensor(cm["matrix"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == 500
    assert float(matrix.diag().sum()) / 500 == pytest.approx(metrics["test_acc"])
    assert matrix[3, 3] / matrix[3].sum() == pytest.approx(metrics["per_class_acc"]["3"])
    png = (out / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_frozen_mode_leaves_the_encoder_unchanged_full_mode_trains_it(tmp_path):
    cfg_path = _config(tmp_path)
    train_run(run_config(load_finetune_config(cfg_path)), device="cpu", out=tmp_path / "ae",
              show_progress=False)
    ckpt = tmp_path / "ae" / "checkpoint.pt"
    sets = [a for k, v in TINY_FT.items() for a in ("--set", f"finetune.{k}={v}")]
    # Through the CLI with no config: the checkpoint's own config is used.
    _ok(run_cli("finetune", "--checkpoint", str(ckpt), "--mode", "frozen", "--out", str(tmp_path / "frozen"),
                *CPU, *sets, cwd=tmp_path))
    full_cfg = load_finetune_config(cfg_path, [s for s in sets if s != "--set"] + ["finetune.mode=full"])
    finetune(full_cfg, checkpoint=ckpt, device="cpu", out=tmp_path / "full", show_progress=False)

    ae = torch.load(ckpt, weights_only=True)["state_dict"]
    encoder_keys = [k for k in ae if k.startswith("encoder.")]
    assert encoder_keys
    frozen = torch.load(tmp_path / "frozen" / "classifier.pt", weights_only=True)
    full = torch.load(tmp_path / "full" / "classifier.pt", weights_only=True)
    assert all(torch.equal(frozen["state_dict"][k], ae[k]) for k in encoder_keys)
    assert not all(torch.equal(full["state_dict"][k], ae[k]) for k in encoder_keys)
    fm = json.loads((tmp_path / "frozen" / "metrics.json").read_text())
    assert fm["autoencoder"]["source"] == "checkpoint" and fm["mode"] == "frozen"
    assert fm["trainable_parameters"] < fm["parameters"]
    assert any(k.startswith("head.") for k in frozen["state_dict"])
    # classifier.pt rebuilds the network from its own config: the same test accuracy as the run's.
    for run in ("frozen", "full"):
        assert _reloaded_test_acc(tmp_path / run, full_cfg.data) == pytest.approx(
            json.loads((tmp_path / run / "metrics.json").read_text())["test_acc"])


def test_frozen_mode_warns_about_the_settings_it_ignores(tmp_path):
    cfg = str(_config(tmp_path, TINY_FT))
    ignored = ["--set", "finetune.probe_epochs=2", "--set", "finetune.recon_weight=0.5",
               "--set", "finetune.encoder_lr_scale=0.1"]
    proc = run_cli("finetune", cfg, *CPU, "--mode", "frozen", *ignored, "--out", str(tmp_path / "f"),
                   cwd=tmp_path)
    _ok(proc)
    warning = [line for line in proc.stderr.splitlines() if "no effect" in line]
    assert len(warning) == 1, proc.stderr
    assert all(f"finetune.{k}" in warning[0] for k in ("probe_epochs", "recon_weight", "encoder_lr_scale"))
    assert "finetune.mode = frozen" in warning[0] and "--mode full" in warning[0]
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    # Recorded as given, with what the mode left unused; the probe phase did not run.
    assert metrics["finetune"]["probe_epochs"] == 2
    assert metrics["finetune"]["ignored"] == ["probe_epochs", "recon_weight", "encoder_lr_scale"]
    assert metrics["epochs"] == TINY_FT["max_epochs"]
    # Full mode uses them: no warning, nothing ignored.
    proc = run_cli("finetune", cfg, *CPU, *ignored, "--out", str(tmp_path / "full"), cwd=tmp_path)
    _ok(proc)
    assert "no effect" not in proc.stderr
    assert "ignored" not in json.loads((tmp_path / "full" / "metrics.json").read_text())["finetune"]


def _reloaded_test_acc(run: Path, data_cfg) -> float:
    model, cfg, payload = load_classifier_checkpoint(run / "classifier.pt")
    assert payload["format"] == "aeopt.classifier/1" and len(payload["classes"]) == 10
    assert cfg.data == data_cfg
    test = prepare(cfg.data).test
    return evaluate(model, test.x.float() / 255.0, test.y).accuracy


def test_labels_n_uses_n_stratified_images(tmp_path):
    cfg = load_finetune_config(_config(tmp_path, {**TINY_FT, "labels": 100}))
    train, val, test, classes, _ = labelled_split(cfg.data, cfg.finetune.labels)
    assert len(train) + len(val) == 100 and len(test) == 500
    assert torch.bincount(train.y, minlength=10).tolist() == [8] * 10
    assert torch.bincount(val.y, minlength=10).tolist() == [2] * 10
    # The labelled images come from the training split's pool only.
    pool = training_pool(cfg.data)
    pool_keys = {bytes(x.numpy()) for x in pool.x}
    assert all(bytes(x.numpy()) in pool_keys for x in torch.cat([train.x, val.x]))

    metrics = finetune(cfg, device="cpu", out=tmp_path / "ft", show_progress=False)
    assert metrics.labels == 100 and metrics.n_train == 80 and metrics.n_val == 20

    proc = run_cli("finetune", str(_config(tmp_path)), *CPU, "--labels", "10", "--out", str(tmp_path / "x"),
                   cwd=tmp_path)
    assert proc.returncode == 2 and "at least 2 per class" in proc.stderr and "Traceback" not in proc.stderr


def test_cv_reports_mean_and_std_of_validation_accuracy(tmp_path):
    out = tmp_path / "cv"
    _ok(run_cli("finetune", str(_config(tmp_path, TINY_FT)), *CPU, "--cv", "3", "--out", str(out),
                cwd=tmp_path))
    metrics = json.loads((out / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["folds"] == 3 and len(cv["fold_val_acc"]) == 3 and len(cv["fold_epochs"]) == 3
    assert cv["val_acc_mean"] == pytest.approx(statistics.fmean(cv["fold_val_acc"]))
    assert cv["val_acc_std"] == pytest.approx(statistics.pstdev(cv["fold_val_acc"]))
    assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["epochs"] == sum(cv["fold_epochs"])
    assert (out / "confusion_matrix.json").is_file()
    # No single best epoch or training set: each fold's own, and how the test figure was made.
    assert "best_epoch" not in metrics and "n_train" not in metrics and "n_val" not in metrics
    assert len(cv["fold_best_epoch"]) == 3
    assert all(1 <= b <= e for b, e in zip(cv["fold_best_epoch"], cv["fold_epochs"], strict=True))
    assert cv["fold_n_val"] == [200, 200, 200] and cv["fold_n_train"] == [400, 400, 400]
    assert metrics["labels"] == 600 and metrics["n_test"] == 500
    assert "ensemble of the 3 fold models" in cv["test_protocol"]


@pytest.mark.parametrize(("model", "extra"), [
    # The VAE's code is its mean vector; its ELBO is the semi-supervised regularizer here.
    ({"kind": "vae", "hidden1": 32, "hidden2": 16, "latent_dim": 3}, {"recon_weight": 0.01}),
    # Denoising AE, with a probe phase (head only) before the whole network trains.
    ({"kind": "denoising_ae", "noise_std": 0.3}, {"probe_epochs": 2}),
])
def test_vae_and_denoising_encoders_fine_tune(tmp_path, model, extra):
    raw = json.loads(json.dumps(TINY))
    raw["model"] = model if model["kind"] == "vae" else {**raw["model"], **model}
    raw["finetune"] = {**TINY_FT, **extra}
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(raw))
    metrics = finetune(load_finetune_config(path), device="cpu", show_progress=False)
    assert metrics.model == model["kind"] and 0.0 <= metrics.test_acc <= 1.0
    assert metrics.test_acc > 0.15
    assert metrics.epochs == len(metrics.history) == 3 + extra.get("probe_epochs", 0)
    assert [row["epoch"] for row in metrics.history] == list(range(1, metrics.epochs + 1))


def test_bad_finetune_settings_are_one_line(tmp_path):
    cfg = str(_config(tmp_path))
    for args, expected in ((["--mode", "half"], "--mode half: not a mode; use full or frozen"),
                           (["--set", "finetune.nope=1"], "finetune.nope"),
                           (["--set", "finetune.lr=-1"], "finetune.lr")):
        proc = run_cli("finetune", cfg, *CPU, *args, "--out", str(tmp_path / "x"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr


# ----- baseline and compare ----------------------------------------------------------------------


def test_baseline_cnn_and_compare(tmp_path):
    ft = tmp_path / "ft"
    finetune(load_finetune_config(_config(tmp_path, TINY_FT)), device="cpu", out=ft, show_progress=False)
    cnn = tmp_path / "cnn"
    sets = ["data.dataset=synthetic", "data.train_subset=600", "model.c1=4", "model.c2=8", "model.fc=16",
            *(f"train.{k}={v}" for k, v in TINY_FT.items() if k != "head_hidden")]
    _ok(run_cli("baseline", "cnn", *CPU, "--out", str(cnn), *[a for s in sets for a in ("--set", s)],
                cwd=tmp_path))
    bm = json.loads((cnn / "metrics.json").read_text())
    assert bm["task"] == "baseline" and bm["n_train"] == 480 and bm["n_val"] == 120 and bm["epochs"] == 3
    assert bm["test_acc"] > 0.2 and (cnn / "confusion_matrix.png").is_file()

    model, cfg, _ = load_classifier_checkpoint(cnn / "classifier.pt")
    assert isinstance(model, BaselineCNN) and cfg.model.c1 == 4 and cfg.train.max_epochs == 3
    assert _reloaded_test_acc(cnn, cfg.data) == pytest.approx(bm["test_acc"])

    proc = run_cli("compare", str(ft), str(cnn), cwd=tmp_path)
    _ok(proc)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["run", "model", "dataset", "n", "test", "labels"] and len(lines) == 4
    fm = json.loads((ft / "metrics.json").read_text())
    assert str(ft) in lines[2] and f"{fm['test_acc']:.4f}" in lines[2]
    assert "finetune conv_ae (full)" in lines[2]
    assert str(cnn) in lines[3] and f"{bm['test_acc']:.4f}" in lines[3] and "baseline cnn" in lines[3]
    rows = json.loads(run_cli("compare", str(ft), str(cnn), "--json", cwd=tmp_path).stdout)
    assert [r["test_acc"] for r in rows] == [fm["test_acc"], bm["test_acc"]]

    proc = run_cli("compare", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing: no such folder" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("compare", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 2 and "no metrics.json" in proc.stderr
