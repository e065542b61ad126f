"""`aeopt quickstart --workers N`: the device its worker processes get, and errors that name --device."""

from __future__ import annotations

import pytest
import torch

from aeopt.errors import AeoptError
from aeopt.search.quickstart import launch_devices
from aeopt.training.engine import resolve_device


@pytest.mark.parametrize("device", [None, "", "auto"])
def test_no_device_means_the_default_one_worker_gets(device):
    # Not launch's own default (the CPU): cuda when available, as `aeopt quickstart` with one worker.
    assert launch_devices(device) == str(resolve_device(None))


def test_a_named_device_is_passed_as_given():
    assert launch_devices("cpu") == "cpu"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", f"cuda:{torch.cuda.device_count() + 7}"])
def test_an_unusable_device_is_one_line_naming_the_option_given(device):
    with pytest.raises(AeoptError) as err:
        launch_devices(device)
    assert str(err.value).startswith(f"--device {device}: ") and "\n" not in str(err.value)
