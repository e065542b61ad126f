"""`aeopt launch` without processes: device lists and the workers' command lines."""

from __future__ import annotations

import pytest

from aeopt.errors import AeoptError
from aeopt.search.launch import parse_devices, worker_command


@pytest.mark.parametrize("given,devices", [
    (None, ["cpu"]),
    ("", ["cpu"]),
    ("cpu", ["cpu"]),
    ("cuda", ["cuda"]),
    ("cuda:0,cuda:1", ["cuda:0", "cuda:1"]),
    (" cuda:0 , cuda:0 ,cpu", ["cuda:0", "cuda:0", "cpu"]),  # a GPU repeated: two workers on it
    ("cuda:1,,", ["cuda:1"]),
])
def test_device_lists(given, devices):
    assert parse_devices(given) == devices


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "cuda0", "cpu,mps", "CUDA:0"])
def test_bad_devices_are_one_line_naming_the_entry(bad):
    with pytest.raises(AeoptError) as err:
        parse_devices(bad)
    assert f"--devices {bad}:" in str(err.value) and "cpu, cuda or cuda:N" in str(err.value)


def test_worker_command_carries_the_options_and_never_the_storage():
    cmd = worker_command("s", 3, "cpu", threads=2, n_trials=10, timeout=60.0, data_dir="/d", amp=True)
    assert cmd[1:] == ["-m", "aeopt", "worker", "--study", "s", "--worker-index", "3", "--device", "cpu",
                       "--threads", "2", "--n-trials", "10", "--timeout", "60.0", "--data-dir", "/d", "--amp"]
    gpu = worker_command("s", 0, "cuda:1", threads=2, n_trials=None, timeout=None, data_dir=None, amp=False)
    assert "--threads" not in gpu and "--n-trials" not in gpu and "--amp" not in gpu
    assert not any("storage" in a for a in cmd + gpu)
