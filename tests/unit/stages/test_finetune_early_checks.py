"""aeopt finetune refuses a --cv that a class of the labelled images is too small for in one line,
before the autoencoder trains (scikit-learn refused it with a traceback after the pretraining)."""

from __future__ import annotations

import pytest

import aeopt.stages.finetune as stage
from aeopt.config import load_finetune_config
from aeopt.errors import ConfigError


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
