"""The pure parts of refit: which config it trains, how it names the test result, what refit.json
says (the storage masked), how its outputs appear (all at once or not at all), and the refusals
that come before any training."""

from __future__ import annotations

import json
import re
import stat

import pytest
from optuna.trial import TrialState, create_trial

from aeopt.config import ClassifierStudySpec, StudySpec
from aeopt.errors import AeoptError, ConfigError, StudyError
from aeopt.search.refit import default_out, headline, refit_config, refit_record, refit_study, staged
from aeopt.search.storage import Storage, open_storage, redact
from aeopt.search.studies import create_study

EXPORT = {
    "model": {"kind": "conv_ae", "c1": 8, "c2": 16, "c3": 16, "fc": 32, "latent_dim": 10},
    "data": {"dataset": "fashion_mnist", "train_subset": 6000, "test_subset": 1000},
    "budget": {"max_epochs": 7, "batch_size": 128, "patience": 3},
    "optim": {"name": "adamw", "lr": 2e-3},
    "seed": 4,
    "metrics": {"cv_mean": 0.0151, "cv_std": 0.0004},
    "provenance": {"study": "conv_ae", "trial": 12},
}
METRICS = {"model": "conv_ae", "dataset": "fashion_mnist", "test_loss": 0.0123, "test_mse": 0.0123,
           "val_loss": 0.0120, "epochs": 20, "best_epoch": 18, "stopped_early": True, "seconds": 61.5,
           "n_train": 48000, "n_val": 12000, "n_test": 10000, "device": "cpu"}


def test_refit_trains_on_the_full_splits_and_says_what_it_removed():
    cfg, removed = refit_config(EXPORT)
    assert cfg.data.train_subset is None and cfg.data.test_subset is None
    assert removed == ["data.train_subset=6000", "data.test_subset=1000"]
    # Everything else is the trial's configuration, unchanged.
    assert (cfg.model.c2, cfg.optim.name, cfg.optim.lr, cfg.seed) == (16, "adamw", 2e-3, 4)
    assert EXPORT["data"]["train_subset"] == 6000  # the export itself is not modified


def test_a_subset_the_user_sets_is_kept_and_other_overrides_apply():
    cfg, removed = refit_config(EXPORT, ["data.train_subset=12000", "budget.max_epochs=30"])
    assert cfg.data.train_subset == 12000 and cfg.budget.max_epochs == 30
    assert removed == ["data.test_subset=1000"]
    cfg, removed = refit_config(EXPORT, ["data.train_subset=null", "data.test_subset = 500"])
    assert (cfg.data.train_subset, cfg.data.test_subset, removed) == (None, 500, [])


def test_an_export_without_subsets_removes_nothing():
    export = {**EXPORT, "data": {"dataset": "digits"}}
    cfg, removed = refit_config(export)
    assert removed == [] and cfg.data.dataset == "digits"


@pytest.mark.parametrize("bad", ["budget.max_epoch=3", "budget.max_epochs=0", "no_equals"])
def test_bad_overrides_are_one_config_error(bad):
    with pytest.raises(ConfigError) as err:
        refit_config(EXPORT, [bad])
    assert "\n" not in str(err.value).strip()


def test_headline_reports_each_kind_as_train_does():
    assert headline(METRICS) == "test MSE 0.01230"
    noisy = {**METRICS, "model": "denoising_ae", "test_mse_noisy_input": 0.0211}
    assert headline(noisy, 0.3) == "test MSE 0.01230, from noisy inputs (std 0.3) 0.02110"
    vae = {**METRICS, "model": "vae", "test_loss": 243.456, "test_mse": 0.0301}
    assert headline(vae) == "test negative ELBO 243.46 nats/image (test MSE 0.03010)"
    assert headline({**METRICS, "model": "aae"}) == "test MSE 0.01230"


def test_refit_record_masks_the_storage_and_names_the_trial():
    url = "postgresql+psycopg://aeopt:s3cret-pw@db.example:5432/aeopt"
    storage = Storage(optuna=None, url=url, display=redact(url))
    cfg, removed = refit_config(EXPORT)
    record = refit_record(EXPORT, cfg, METRICS, storage=storage, removed=removed, overrides=[],
                          wall_seconds=70.04)
    text = json.dumps(record)
    assert "s3cret-pw" not in text and "db.example" in record["storage"]
    assert (record["study"], record["trial"], record["cv_loss"]) == ("conv_ae", 12, 0.0151)
    assert (record["test_mse"], record["epochs"], record["best_epoch"]) == (0.0123, 20, 18)
    assert (record["n_train"], record["n_holdout"], record["n_test"]) == (48000, 12000, 10000)
    assert record["seconds"] == 61.5 and record["wall_seconds"] == 70.04
    assert record["subsets_removed"] == removed and record["summary"] == "test MSE 0.01230"


def test_default_out_is_path_safe():
    assert default_out("conv_ae").as_posix() == "runs/refit-conv_ae"
    assert "/" not in default_out("a/b").name


def test_staged_outputs_appear_whole(tmp_path):
    out = tmp_path / "runs" / "best"
    with staged(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists()  # nothing in the output folder until the block completes
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in out.parent.iterdir()] == ["best"]  # no temporary folder left


def test_staged_folder_gets_the_umask_mode(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with staged(tmp_path / "best") as tmp:
        (tmp / "a.txt").write_text("a")
    assert stat.S_IMODE((tmp_path / "best").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_stage_writes_nothing(tmp_path, interrupt):
    out = tmp_path / "best"
    with pytest.raises(interrupt), staged(out) as tmp:
        (tmp / "checkpoint.pt").write_text("half")
        raise interrupt()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_gets_each_file_replaced_and_keeps_the_others(tmp_path):
    out = tmp_path / "best"
    out.mkdir()
    (out / "refit.json").write_text("old")
    (out / "notes.txt").write_text("mine")
    with staged(out) as tmp:
        (tmp / "refit.json").write_text("new")
    assert (out / "refit.json").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(KeyboardInterrupt), staged(out) as tmp:
        (tmp / "refit.json").write_text("half")
        raise KeyboardInterrupt
    assert (out / "refit.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_an_output_that_is_a_file_is_refused_before_anything(tmp_path):
    (tmp_path / "best").write_text("x")
    with pytest.raises(AeoptError, match="a file, not a folder"), staged(tmp_path / "best"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


# ----- refusals before training (no torch work: they fail while reading the study) ----------------


def _storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 's.db'}")


def test_a_study_without_a_complete_trial_is_refused_and_writes_nothing(tmp_path):
    storage = _storage(tmp_path)
    spec = StudySpec.model_validate({"name": "empty", "data": {"dataset": "digits"}})
    study = create_study(storage, spec)
    study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={}))
    # The command it suggests names the storage: without it, it would open the default one.
    worker = re.escape(f"`aeopt worker --study empty --storage {storage.url}`")
    with pytest.raises(StudyError, match=f"'empty' has no complete trial .*1 pruned.*{worker}"):
        refit_study(storage, "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_study_is_refused(tmp_path):
    with pytest.raises(StudyError, match="no study named 'nope'"):
        refit_study(_storage(tmp_path), "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_classifier_study_is_refused_with_the_commands_that_refit_it(tmp_path):
    storage = _storage(tmp_path)
    spec = ClassifierStudySpec.model_validate({"name": "clf", "data": {"dataset": "digits"}})
    study = create_study(storage, spec)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.1, params={}, distributions={}))
    # The command it suggests names the storage by its URL, to paste (it holds no password).
    export = re.escape(f"`aeopt export --study clf --storage {storage.url} -o best.yaml`")
    with pytest.raises(StudyError, match=f"classifier study.*{export}.*aeopt finetune best.yaml"):
        refit_study(storage, "clf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
