"""aeopt finetune's early checks: a --cv that a class of the labelled images is too small for is one line,
before the autoencoder trains (scikit-learn refused it with a traceback after the pretraining); and few
labels still give every class an image on each side of the 80/20 split."""

from __future__ import annotations

import pytest
import torch

import aeopt.stages.finetune as stage
from aeopt.config import DataConfig, load_finetune_config
from aeopt.errors import ConfigError
from aeopt.stages.classifier_run import labelled_split


def _never_trained(*args, **kwargs):
    raise AssertionError("the autoencoder trained before the check")


def test_cv_larger_than_a_class_of_the_labels_is_refused_before_pretraining(monkeypatch) -> None:
    monkeypatch.setattr(stage, "pretrained_autoencoder", _never_trained)
    cfg = load_finetune_config("conv_ae", ["data.dataset=digits", "finetune.labels=30", "finetune.cv=5",
                                           "budget.max_epochs=1", "finetune.max_epochs=1"])
    with pytest.raises(ConfigError) as info:
        stage.finetune(cfg, device="cpu", show_progress=False)
    assert str(info.value) == ("finetune.cv = 5: the smallest class of the 30 labelled images has only 3; "
                               "lower --cv (finetune.cv) or raise --labels (finetune.labels)")


def test_cv_that_fits_the_labels_goes_on_to_pretraining(monkeypatch) -> None:
    monkeypatch.setattr(stage, "pretrained_autoencoder", _never_trained)
    cfg = load_finetune_config("conv_ae", ["data.dataset=digits", "finetune.labels=30", "finetune.cv=3"])
    with pytest.raises(AssertionError, match="trained before"):
        stage.finetune(cfg, device="cpu", show_progress=False)


def test_twenty_labels_still_validate_on_some() -> None:
    # 2 labels per class at data.val_fraction 0.2 rounded to no validation image: metrics said n_val 0,
    # val_acc 0.0, and early stopping had nothing to watch.
    data = labelled_split(DataConfig(dataset="digits"), 20)
    assert (len(data.train), len(data.val)) == (10, 10)
    assert torch.bincount(data.val.y, minlength=10).tolist() == [1] * 10
