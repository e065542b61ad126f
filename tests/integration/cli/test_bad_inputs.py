"""Bad command lines across every command: each exits non-zero with one line (`error: ...`, or typer's own
usage block for a malformed option), prints no traceback and no password, and writes nothing.

Run in-process (`aeopt.cli.main`) with file-descriptor capture, so that anything a command prints by any
route (typer, logging, a traceback, a C library) is seen, and the whole table stays fast."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from aeopt.cli import main
from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "configs" / "conv_ae.yaml")
SPEC = str(REPO / "studies" / "conv_ae.yaml")
PASSWORD = "hunter2"
ABSENT_GPU = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: on no machine

# {fx}: a folder of fixtures outside the working folder; {db}: a SQLite storage there holding study 's'
# (no trials yet); the working folder itself starts empty and must stay empty.
DB = "sqlite:///{fx}/s.db"
MISSING_DB = "sqlite:///{fx}/typo/x.db"
OTHER_DB = "sqlite:///{fx}/other.db"  # another program's SQLite file: no Optuna tables
PG = f"postgresql://aeopt:{PASSWORD}@127.0.0.1:1/aeopt"
# Seconds of training on CPU, should a bad output path go unnoticed until the outputs are written.
TINY_RUN = ["--set", "data.dataset=synthetic", "--set", "data.train_subset=200", "--set",
            "budget.max_epochs=1", "--device", "cpu"]


def _create(*args: str) -> list[str]:
    """`aeopt study create` of the shipped conv_ae spec on the fixture storage, with more arguments."""
    return ["study", "create", SPEC, *args, "--storage", DB]


CASES: list[tuple[str, list[str], dict[str, str]]] = [
    # ----- train: files, YAML, keys, values, options
    ("train-missing-file", ["train", "{fx}/missing.yaml"], {}),
    ("train-a-folder", ["train", "{fx}"], {}),
    ("train-bad-yaml", ["train", "{fx}/bad.yaml"], {}),
    ("train-empty-yaml", ["train", "{fx}/empty.yaml"], {}),
    ("train-yaml-list", ["train", "{fx}/list.yaml"], {}),
    ("train-binary-file", ["train", "{fx}/binary.yaml"], {}),
    ("train-unknown-section", ["train", "{fx}/unknown.yaml"], {}),
    ("train-negative-lr", ["train", CONFIG, "--set", "optim.lr=-0.001"], {}),
    ("train-unknown-kind", ["train", CONFIG, "--set", "model.kind=resnet"], {}),
    ("train-unknown-key", ["train", CONFIG, "--set", "model.nope=1"], {}),
    ("train-unknown-top-key", ["train", CONFIG, "--set", "nope.x=1"], {}),
    ("train-set-without-equals", ["train", CONFIG, "--set", "optim.lr"], {}),
    ("train-set-empty-key", ["train", CONFIG, "--set", "=3"], {}),
    ("train-set-not-a-number", ["train", CONFIG, "--set", "budget.max_epochs=abc"], {}),
    ("train-set-into-a-value", ["train", CONFIG, "--set", "optim.lr.x=1"], {}),
    ("train-zero-epochs", ["train", CONFIG, "--set", "budget.max_epochs=0"], {}),
    ("train-seed-too-big", ["train", CONFIG, *TINY_RUN, "--set", "seed=18446744073709551616"], {}),
    ("train-negative-split-seed", ["train", CONFIG, *TINY_RUN, "--set", "data.split_seed=-1"], {}),
    ("train-unknown-dataset", ["train", CONFIG, "--set", "data.dataset=cifar"], {}),
    ("train-missing-data-dir", ["train", CONFIG, "--data-dir", "{fx}/no-data"], {}),
    ("train-data-dir-is-a-file", ["train", CONFIG, "--data-dir", "{fx}/bad.yaml"], {}),
    ("train-missing-data-dir-env", ["train", CONFIG], {"AEOPT_DATA_DIR": "{fx}/no-data"}),
    ("train-bad-device", ["train", CONFIG, "--device", "gpu"], {}),
    ("train-absent-gpu", ["train", CONFIG, "--device", ABSENT_GPU], {}),
    ("train-bad-device-env", ["train", CONFIG], {"AEOPT_DEVICE": "tpu"}),
    ("train-no-config", ["train"], {}),
    ("train-unknown-option", ["train", CONFIG, "--epochs", "3"], {}),
    ("train-out-is-a-file", ["train", CONFIG, *TINY_RUN, "-o", "{fx}/bad.yaml"], {}),
    ("train-out-under-a-file", ["train", CONFIG, *TINY_RUN, "-o", "{fx}/bad.yaml/run"], {}),
    # ----- study create: specs, space, names, storages
    ("create-missing-spec", ["study", "create", "{fx}/missing.yaml", "--storage", DB], {}),
    ("create-negative-cv-seed", _create("--set", "cv.seed=-1"), {}),
    ("create-sampler-seed-too-big", _create("--set", "sampler.seed=8589934592"), {}),
    ("create-bad-yaml", ["study", "create", "{fx}/bad.yaml", "--storage", DB], {}),
    ("create-name-up-the-tree", _create("-n", "../../x"), {}),
    ("create-name-absolute", _create("-n", "/tmp/x"), {}),
    ("create-name-with-space", _create("-n", "my study"), {}),
    ("create-name-hidden", _create("-n", ".hidden"), {}),
    ("create-name-too-long", _create("-n", "x" * 201), {}),
    ("create-name-new-db", ["study", "create", SPEC, "-n", "a/b", "--storage", MISSING_DB], {}),
    ("create-existing-study", ["study", "create", "{fx}/tiny.yaml", "--storage", DB], {}),
    ("create-low-above-high", _create("--set", "space.optim.lr.low=0.1"), {}),
    ("create-empty-choices", _create("--set", "space.model.activation.choices=[]"), {}),
    ("create-unknown-param-type", _create("--set", "space.optim.lr.type=loguniform"), {}),
    ("create-space-not-a-field", _create("--set", "space.model.nope={{type: int, low: 1, high: 2}}"), {}),
    ("create-space-field-of-absent-entry", _create("--set", "space.model.latent_dim.high=64"), {}),
    ("create-space-out-of-range", _create("--set", "space.model.dropout.high=1.5"), {}),
    ("create-unknown-sampler", _create("--set", "sampler.name=annealing"), {}),
    ("create-one-fold", _create("--set", "cv.folds=1"), {}),
    ("create-unknown-task", _create("--set", "task=regression"), {}),
    ("create-grid-without-steps", _create("--set", "sampler.name=grid"), {}),
    ("create-unknown-scheme", ["study", "create", SPEC, "--storage", "foo://x/y"], {}),
    # ----- storages that do not open: never created, password never shown
    ("list-typo-path", ["study", "list", "--storage", MISSING_DB], {}),
    ("list-typo-path-env", ["study", "list"], {"AEOPT_STORAGE": MISSING_DB}),
    ("list-missing-journal", ["study", "list", "--storage", "journal:///typo/x.log"], {}),
    # A journal URL on a file of the user's that is no journal: refused, the file left as it was.
    ("create-journal-on-notes", ["study", "create", SPEC, "--storage", "journal:///{fx}/notes.txt"], {}),
    ("list-journal-on-notes", ["study", "list", "--storage", "journal:///{fx}/notes.txt"], {}),
    # Readers on another program's SQLite file: refused, no Optuna tables created in it.
    ("list-other-programs-db", ["study", "list", "--storage", OTHER_DB], {}),
    ("show-other-programs-db", ["study", "show", "s", "--storage", OTHER_DB], {}),
    ("export-other-programs-db", ["export", "--study", "s", "-o", "{fx}/x.yaml", "--storage", OTHER_DB], {}),
    ("worker-other-programs-db", ["worker", "--study", "s", "--storage", OTHER_DB], {}),
    ("dashboard-other-programs-db", ["dashboard", "--storage", OTHER_DB], {}),
    ("list-postgres-password", ["study", "list", "--storage", PG], {}),
    ("list-postgres-password-env", ["study", "list"], {"AEOPT_STORAGE": PG}),
    ("list-postgres-at-in-password", ["study", "list", "--storage",
                                      f"postgresql://aeopt:{PASSWORD}@x@127.0.0.1:1/aeopt"], {}),
    ("list-redis-password", ["study", "list", "--storage", f"redis://:{PASSWORD}@127.0.0.1:1/0"], {}),
    # The driver ends the password at its first '@' and names the rest in its error, as the host.
    ("list-postgres-password-after-at", ["study", "list", "--storage",
                                         f"postgresql://aeopt:x@{PASSWORD}@127.0.0.1:1/aeopt"], {}),
    ("list-postgres-multi-host", ["study", "list", "--storage",
                                  f"postgresql://aeopt:{PASSWORD}@127.0.0.1:1,127.0.0.2:1/aeopt"], {}),
    ("list-grpc-with-password", ["study", "list", "--storage", f"grpc://u:{PASSWORD}@127.0.0.1:1"], {}),
    ("list-grpc-unreachable", ["study", "list", "--storage", "grpc://127.0.0.1:1"], {}),
    ("list-mysql-no-driver", ["study", "list", "--storage", f"mysql+nodriver://u:{PASSWORD}@h/db"], {}),
    ("list-unknown-scheme", ["study", "list", "--storage", "nosuch://x"], {}),
    ("list-not-a-url", ["study", "list", "--storage", "studies/aeopt.db"], {}),
    ("list-default-storage-absent", ["study", "list"], {}),
    # ----- study show / delete
    ("show-missing-study", ["study", "show", "nope", "--storage", DB], {}),
    ("show-typo-storage", ["study", "show", "s", "--storage", MISSING_DB], {}),
    ("show-no-name", ["study", "show", "--storage", DB], {}),
    ("delete-missing-study", ["study", "delete", "nope", "--yes", "--storage", DB], {}),
    ("delete-typo-storage", ["study", "delete", "s", "--yes", "--storage", MISSING_DB], {}),
    ("study-unknown-subcommand", ["study", "rename", "s"], {}),
    # ----- worker
    ("worker-missing-study", ["worker", "--study", "nope", "--storage", DB], {}),
    ("worker-typo-storage", ["worker", "--study", "s", "--storage", MISSING_DB], {}),
    ("worker-zero-trials", ["worker", "--study", "s", "--n-trials", "0", "--storage", DB], {}),
    ("worker-trials-not-a-number", ["worker", "--study", "s", "--n-trials", "ten", "--storage", DB], {}),
    ("worker-negative-timeout", ["worker", "--study", "s", "--timeout", "-5", "--storage", DB], {}),
    ("worker-bad-device", ["worker", "--study", "s", "--device", "cuda:x", "--storage", DB], {}),
    ("worker-absent-gpu", ["worker", "--study", "s", "--device", ABSENT_GPU, "--storage", DB], {}),
    ("worker-missing-data-dir", ["worker", "--study", "s", "--data-dir", "{fx}/no", "--storage", DB], {}),
    ("worker-no-study", ["worker", "--storage", DB], {}),
    ("worker-postgres-password", ["worker", "--study", "s", "--storage", PG], {}),
    ("worker-grpc-unreachable", ["worker", "--study", "s", "--storage", "grpc://127.0.0.1:1"], {}),
    # ----- launch
    ("launch-absent-gpu", ["launch", "--study", "s", "--devices", f"cpu,{ABSENT_GPU}", "--storage", DB], {}),
    ("launch-bad-device", ["launch", "--study", "s", "--devices", "gpu0", "--storage", DB], {}),
    ("launch-zero-workers", ["launch", "--study", "s", "--workers", "0", "--storage", DB], {}),
    ("launch-missing-study", ["launch", "--study", "nope", "--storage", DB], {}),
    ("launch-typo-storage", ["launch", "--study", "s", "--storage", MISSING_DB], {}),
    ("launch-missing-data-dir", ["launch", "--study", "s", "--data-dir", "{fx}/no", "--storage", DB], {}),
    ("launch-log-dir-is-a-file", ["launch", "--study", "s", "--log-dir", "{fx}/bad.yaml",
                                  "--storage", DB], {}),
    ("launch-log-dir-under-a-file", ["launch", "--study", "s", "--log-dir", "{fx}/bad.yaml/logs",
                                     "--storage", DB], {}),
    # ----- export
    ("export-missing-study", ["export", "--study", "nope", "-o", "best.yaml", "--storage", DB], {}),
    ("export-no-complete-trial", ["export", "--study", "s", "-o", "best.yaml", "--storage", DB], {}),
    ("export-bad-suffix", ["export", "--study", "s", "-o", "best.txt", "--storage", DB], {}),
    ("export-top-zero", ["export", "--study", "s", "-o", "best.yaml", "--top", "0", "--storage", DB], {}),
    ("export-typo-storage", ["export", "--study", "s", "-o", "best.yaml", "--storage", MISSING_DB], {}),
    ("export-no-output", ["export", "--study", "s", "--storage", DB], {}),
    # Study 'done' holds a complete trial: the export gets as far as writing.
    ("export-output-is-a-folder", ["export", "--study", "done", "-o", "{fx}/folder.yaml",
                                   "--storage", DB], {}),
    ("export-output-under-a-file", ["export", "--study", "done", "-o", "{fx}/bad.yaml/best.yaml",
                                    "--storage", DB], {}),
    # ----- dashboard, report, storage proxy
    ("dashboard-port-too-big", ["dashboard", "--port", "99999", "--storage", DB], {}),
    ("dashboard-port-not-a-number", ["dashboard", "--port", "http", "--storage", DB], {}),
    ("dashboard-typo-storage", ["dashboard", "--storage", MISSING_DB], {}),
    ("dashboard-postgres-password", ["dashboard", "--storage", PG], {}),
    ("report-missing-study", ["report", "-o", "out", "--study", "nope", "--storage", DB], {}),
    ("report-typo-storage", ["report", "-o", "out", "--study", "s", "--storage", MISSING_DB], {}),
    ("report-missing-checkpoint", ["report", "-o", "out", "--checkpoint", "{fx}/missing.pt"], {}),
    ("report-no-output", ["report", "--study", "s", "--storage", DB], {}),
    ("report-output-under-a-file", ["report", "-o", "{fx}/bad.yaml/out", "--study", "done",
                                    "--storage", DB], {}),
    ("refit-output-under-a-file", ["refit", "--study", "done", "-o", "{fx}/bad.yaml/out", *TINY_RUN,
                                   "--storage", DB], {}),
    ("proxy-unknown-scheme", ["storage", "proxy", "--storage", "foo://x"], {}),
    ("proxy-port-not-a-number", ["storage", "proxy", "--port", "x"], {}),
    # ----- finetune, baseline, compare, quickstart
    ("finetune-missing-file", ["finetune", "{fx}/missing.yaml"], {}),
    ("finetune-bad-mode", ["finetune", CONFIG, "--mode", "half"], {}),
    ("finetune-too-few-labels", ["finetune", CONFIG, "--labels", "5"], {}),
    ("finetune-negative-lr", ["finetune", CONFIG, "--set", "finetune.lr=-1"], {}),
    ("finetune-missing-checkpoint", ["finetune", "--checkpoint", "{fx}/missing.pt"], {}),
    ("finetune-out-under-a-file", ["finetune", CONFIG, *TINY_RUN, "--set", "finetune.max_epochs=1",
                                   "-o", "{fx}/bad.yaml/run"], {}),
    ("baseline-missing-config", ["baseline", "cnn", "--config", "{fx}/missing.yaml"], {}),
    ("baseline-unknown-key", ["baseline", "cnn", "--set", "train.nope=1"], {}),
    ("baseline-out-under-a-file", ["baseline", "cnn", "-o", "{fx}/bad.yaml/out"], {}),
    ("few-labels-budgets-not-numbers", ["baseline", "few-labels", "-o", "out", "--random-like",
                                        "{fx}/missing.pt", "--budgets", "abc"], {}),
    ("few-labels-budget-too-small", ["baseline", "few-labels", "-o", "out", "--random-like",
                                     "{fx}/missing.pt", "--budgets", "100,5"], {}),
    ("few-labels-out-under-a-file", ["baseline", "few-labels", "-o", "{fx}/bad.yaml/out", "--random-like",
                                     "{fx}/missing.pt"], {}),
    ("compare-missing-run", ["compare", "{fx}/no-run"], {}),
    ("quickstart-zero-trials", ["quickstart", "--n-trials", "0"], {}),
    ("quickstart-missing-data-dir", ["quickstart", "--data-dir", "{fx}/no-data"], {}),
    ("quickstart-out-under-a-file", ["quickstart", "-o", "{fx}/bad.yaml/out"], {}),
    # ----- the root
    ("unknown-command", ["tune", CONFIG], {}),
    ("unknown-root-option", ["--verbose", "study", "list"], {}),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    fx = tmp_path_factory.mktemp("fixtures")
    (fx / "bad.yaml").write_text("model: {kind: conv_ae\n  c1: [16\n")
    (fx / "empty.yaml").write_text("")
    (fx / "list.yaml").write_text("- model\n- data\n")
    (fx / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (fx / "unknown.yaml").write_text(Path(CONFIG).read_text() + "\nschedule: {warmup: 3}\n")
    tiny = {"name": "s", "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4},
            "data": {"dataset": "synthetic"}, "cv": {"folds": 2}, "pruner": {"name": "none"},
            "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}
    (fx / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    create_study(open_storage(DB.format(fx=fx)), StudySpec.model_validate(tiny), "s")
    _finished_study(DB.format(fx=fx), tiny)
    (fx / "folder.yaml").mkdir()
    (fx / "notes.txt").write_text("some notes")  # one line, no newline
    import sqlite3

    with sqlite3.connect(fx / "other.db") as db:
        db.execute("CREATE TABLE notes (x)")
    db.close()
    return fx


def _finished_study(url: str, spec: dict) -> None:
    """Study 'done': one complete trial, written through Optuna alone (the commands only read it)."""
    import optuna

    storage = open_storage(url)
    create_study(storage, StudySpec.model_validate({**spec, "name": "done"}), "done")
    study = optuna.load_study(study_name="done", storage=storage.optuna)
    study.add_trial(optuna.trial.create_trial(
        value=0.05, params={"optim.lr": 3e-3},
        distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)},
        user_attrs={"fold_losses": [0.05, 0.052], "cv_std": 0.001, "epochs": 1}))


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _is_usage_block(err: str) -> bool:
    return err.startswith("Usage: aeopt") and "Error" in err


@pytest.mark.parametrize("argv,env", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(argv, env, fixtures, tmp_path, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(fx=fixtures))
    before = _snapshot(fixtures)

    code = main([a.format(fx=fixtures) for a in argv])

    out, err = capfd.readouterr()
    assert code != 0, (out, err)
    assert "Traceback" not in out + err, err
    assert PASSWORD not in out + err, err
    if not _is_usage_block(err):
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert "\n" not in err.strip()
    assert sorted(os.listdir(work)) == [], "a bad input wrote into the working folder"
    assert _snapshot(fixtures) == before, "a bad input changed the fixtures (or created a storage)"


def test_there_are_at_least_sixty_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60
    assert len({(tuple(c[1]), tuple(c[2].items())) for c in CASES}) == len(CASES)
    groups = ("study", "storage", "baseline")
    commands = {" ".join(c[1][:2]) if c[1][0] in groups else c[1][0] for c in CASES}
    assert commands >= {"train", "study create", "study list", "study show", "study delete", "worker",
                        "launch", "export", "dashboard", "report", "storage proxy", "finetune",
                        "baseline cnn", "compare", "quickstart"}


# ----- errors that say what was meant (issue 11): the one line names the closest key, the valid keys, or
# where aeopt looked. Same harness: exit code, one line, nothing written.
MEANT: list[tuple[str, list[str], str]] = [
    ("meant-set-key", ["train", CONFIG, "--set", "optim.lrr=0.01"],
     "error: --set optim.lrr: unknown key; did you mean 'lr'? valid keys: name, lr, weight_decay,"),
    ("meant-set-section", ["train", CONFIG, "--set", "optmi.lr=0.01"],
     "error: --set optmi.lr: unknown key 'optmi'; did you mean 'optim'? valid keys: model, data, budget,"),
    ("meant-set-vae-key", ["train", "vae", "--set", "model.hiden1=3"],
     "error: --set model.hiden1: unknown key; did you mean 'hidden1'? valid keys: kind, hidden1, hidden2,"),
    ("meant-space-key", _create("--set", "space.model.c1.hgh=32"),
     "error: --set space.model.c1.hgh: unknown key; did you mean 'high'? "
     "valid keys: type, low, high, step, log"),
    ("meant-space-path", _create("--set", "space.model.c11={{type: int, low: 1, high: 3}}"),
     "space.model.c11: not a field of the run config; did you mean 'model.c1'? valid keys of model: kind,"),
    ("meant-yaml-key", ["train", "{fx}/unknown.yaml"],
     "unknown.yaml: schedule: unknown key; valid keys: model, data, budget, optim, contrastive, seed"),
    ("meant-preset-name", ["train", "conv_aee"],
     "did you mean 'conv_ae'? shipped run configs: aae, aae_critic, conv_ae,"),
    ("meant-spec-name", ["study", "create", "vea", "--storage", DB],
     "did you mean 'vae'? shipped study specs:"),
    ("meant-old-path", ["train", "configs/conv_ae.yaml"],
     "no such file (looked for {work}/configs/conv_ae.yaml); the shipped run config of that name runs with "
     "`aeopt train conv_ae`"),
    ("meant-missing-file", ["train", "{fx}/missing.yaml"], "no such file (looked for {fx}/missing.yaml)"),
    ("meant-autoencoder",
     ["study", "create", "classifier", "--set", "autoencoder=gone.yaml", "--storage", DB],
     "autoencoder = 'gone.yaml': no such file (looked for {work}/gone.yaml"),
    ("meant-finetune-key", ["finetune", CONFIG, "--set", "finetune.lrr=1"],
     "error: --set finetune.lrr: unknown key; did you mean 'lr'?"),
    ("meant-baseline-key", ["baseline", "cnn", "--set", "train.max_epoch=1"],
     "error: --set train.max_epoch: unknown key; did you mean 'max_epochs'?"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in MEANT], ids=[c[0] for c in MEANT])
def test_bad_input_says_what_was_meant(argv, expected, fixtures, tmp_path, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _snapshot(fixtures)

    code = main([a.format(fx=fixtures) for a in argv])

    out, err = capfd.readouterr()
    assert code == 2, (out, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected.format(fx=fixtures, work=work) in err, err
    assert "Traceback" not in out + err and "tagged-union" not in err
    assert sorted(os.listdir(work)) == [] and _snapshot(fixtures) == before


def test_no_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch, capfd):
    import aeopt.training.data as data

    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-copy")  # whatever this machine has
    data.load_dataset.cache_clear()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)

    assert main(["train", CONFIG, "--set", "budget.max_epochs=1"]) == 2

    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: fashion_mnist not found (looked in "), err
    for needle in ("apt-get install dataset-fashion-mnist", "--data-dir DIR", "AEOPT_DATA_DIR",
                   "--set data.dataset=digits", str(tmp_path / "no-debian-copy")):
        assert needle in err, (needle, err)
    assert sorted(os.listdir(tmp_path)) == []


# ----- later fixes: each says what is wrong and what to do in one line (exit 2), and writes nothing. Same
# harness as MEANT above.
LATER: list[tuple[str, list[str], dict[str, str], str]] = [
    # A file where the artifact folder goes: every trial's upload would fail later and its artifacts be lost.
    ("create-artifacts-is-a-file", _create("--artifacts", "{fx}/bad.yaml"), {},
     "error: --artifacts {fx}/bad.yaml: a file, not a folder; pass a folder for the outputs"),
    ("create-artifacts-env-is-a-file", _create(), {"AEOPT_ARTIFACTS": "{fx}/bad.yaml"},
     "error: AEOPT_ARTIFACTS={fx}/bad.yaml: a file, not a folder; pass a folder for the outputs"),
    ("create-artifacts-under-a-file", _create("--artifacts", "{fx}/bad.yaml/art"), {},
     "error: --artifacts {fx}/bad.yaml/art: cannot write {fx}/bad.yaml/art: {fx}/bad.yaml is a file"),
    # Settings of a method left off were ignored without a word; the method's own checks were typer's
    # multi-line usage block.
    ("few-labels-consistency-opt-alone", ["baseline", "few-labels", "-o", "out", "--random-like",
                                          "{fx}/missing.pt", "--consistency-opt", "bogus=1"], {},
     "error: --consistency-opt needs --consistency N"),
    ("few-labels-spread-alpha-alone", ["baseline", "few-labels", "-o", "out", "--random-like",
                                       "{fx}/missing.pt", "--spread-alpha", "0.5"], {},
     "error: --spread-alpha needs --spread"),
    ("few-labels-spread-neighbours-alone", ["baseline", "few-labels", "-o", "out", "--random-like",
                                            "{fx}/missing.pt", "--spread-neighbours", "5"], {},
     "error: --spread-neighbours needs --spread"),
    ("few-labels-no-encoder", ["baseline", "few-labels", "-o", "out"], {},
     "error: give at least one encoder (-e NAME=CHECKPOINT) or --random-like CHECKPOINT"),
    ("few-labels-encoder-without-name", ["baseline", "few-labels", "-o", "out", "-e", "{fx}/missing.pt"], {},
     "error: --encoder {fx}/missing.pt: give each encoder as NAME=CHECKPOINT"),
    ("few-labels-budgets-one-line", ["baseline", "few-labels", "-o", "out", "--random-like",
                                     "{fx}/missing.pt", "--budgets", "abc"], {},
     "error: --budgets 'abc': give comma-separated label counts, at least 20 each"),
    # A bad --mode was named as the config key it sets (finetune.mode), which the user never wrote.
    ("finetune-mode-names-the-option", ["finetune", "--checkpoint", "{fx}/missing.pt", "--mode", "bogus"], {},
     "error: --mode bogus: not a mode; use full or frozen"),
    # study show / delete take NAME or --study: neither, or two different names, is one line.
    ("show-two-names", ["study", "show", "x", "-s", "s", "--storage", DB], {},
     "error: two study names: x and --study s; give one"),
    ("delete-no-name", ["study", "delete", "--yes", "--storage", DB], {},
     "error: name the study: aeopt study delete NAME (or --study NAME)"),
    # baseline cnn resolves no shipped names, which the hint offered (`aeopt configs` lists none of its kind).
    ("baseline-config-a-name", ["baseline", "cnn", "--config", "conv_ae"], {},
     "error: conv_ae: no such file (looked for {work}/conv_ae); pass a YAML file with model / data / train "
     "sections"),
    ("baseline-config-empty", ["baseline", "cnn", "--config", "{fx}/empty.yaml"], {},
     "error: {fx}/empty.yaml: the file is empty; pass a YAML file with model / data / train sections"),
    # --devices naming nothing quietly used the default devices; compare called a missing folder one
    # without metrics.json.
    ("launch-devices-names-nothing", ["launch", "--study", "nope", "--devices", ",", "--storage", DB], {},
     "error: --devices ',': names no device; give cpu or cuda:0,cuda:1"),
    ("compare-no-such-folder", ["compare", "{fx}/no-run"], {},
     "error: {fx}/no-run: no such folder (looked for {fx}/no-run); pass a folder written by"),
]


@pytest.mark.parametrize("argv,env,expected", [c[1:] for c in LATER], ids=[c[0] for c in LATER])
def test_later_bad_inputs(argv, env, expected, fixtures, tmp_path, monkeypatch, capfd):
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(fx=fixtures))
    test_bad_input_says_what_was_meant(argv, expected, fixtures, tmp_path, monkeypatch, capfd)


def test_dashboard_artifacts_is_a_file(fixtures, tmp_path):
    # A subprocess with a time limit: a dashboard that accepted the file would serve until stopped.
    from tests.conftest import run_cli

    try:
        done = run_cli("dashboard", "--port", "0", "--artifacts", f"{fixtures}/bad.yaml", "--storage",
                       DB.format(fx=fixtures), cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a file as --artifacts was accepted: the dashboard served")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: --artifacts {fixtures}/bad.yaml: a file, not a folder; pass a folder "
                           "for the outputs\n")
