"""`aeopt launch` without processes: device lists and the workers' command lines."""

from __future__ import annotations

import pytest
import torch

from aeopt.errors import AeoptError
from aeopt.search.launch import GPU_WORKERS, WORKER_GPU_BYTES, parse_devices, plan_workers, worker_command


def test_no_devices_means_every_gpu_here_else_the_cpu():
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert parse_devices(None) == parse_devices("") == (gpus or ["cpu"])


@pytest.mark.parametrize("given,devices", [
    ("cpu", ["cpu"]),
    ("cuda", ["cuda:0"]),  # torch's current device: cuda:0 in a new process
    ("cuda,cuda:0", ["cuda:0", "cuda:0"]),
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


def test_a_worker_without_fixed_threads_chooses_its_own():
    cmd = worker_command("s", 0, "cpu", threads=None, n_trials=None, timeout=None, data_dir=None, amp=False)
    assert "--threads" not in cmd


def test_auto_on_cpu_is_one_single_threaded_worker_per_idle_core():
    plan = plan_workers(["cpu"], cores=2, idle=2)
    assert plan.devices == ["cpu", "cpu"] and plan.cpu_threads == 1
    busy = plan_workers(["cpu"], cores=2, idle=1)  # a core already taken: one worker, which may grow to 2
    assert busy.devices == ["cpu"] and busy.cpu_threads == 2
    assert plan_workers(["cpu"], cores=16, idle=0).devices == ["cpu"]  # never none
    assert "2 on cpu" in plan.why


def test_auto_on_gpus_is_bounded_by_cores_memory_and_the_per_gpu_cap():
    gib = 1 << 30
    free = {"cuda:0": 70 * gib, "cuda:1": 70 * gib}
    roomy = plan_workers(["cuda:0", "cuda:1"], cores=16, idle=16, gpu_free=free)
    assert roomy.devices == ["cuda:0"] * GPU_WORKERS + ["cuda:1"] * GPU_WORKERS
    few_cores = plan_workers(["cuda:0"], cores=2, idle=2, gpu_free={"cuda:0": 70 * gib})
    assert few_cores.devices == ["cuda:0", "cuda:0"]
    little_memory = plan_workers(["cuda:0"], cores=16, idle=16, gpu_free={"cuda:0": WORKER_GPU_BYTES + gib})
    assert little_memory.devices == ["cuda:0"]
    # A GPU repeated in --devices is still one GPU; CPU workers take the cores the GPU workers leave.
    mixed = plan_workers(["cuda:0", "cuda:0", "cpu"], cores=6, idle=6, gpu_free={"cuda:0": 70 * gib})
    assert mixed.devices == ["cuda:0"] * 4 + ["cpu"] * 2 and mixed.cpu_threads == 3


def test_auto_counts_cuda_and_cuda_0_as_one_gpu():
    # --devices cuda,cuda:0 names one GPU twice: it was planned as two, 4 workers on each.
    plan = plan_workers(parse_devices("cuda,cuda:0,cpu"), cores=8, idle=8,
                        gpu_free={"cuda:0": 64 * WORKER_GPU_BYTES})
    assert plan.devices.count("cuda:0") == GPU_WORKERS and "cuda" not in plan.devices
    assert plan.why.startswith(f"--workers auto: {GPU_WORKERS} on cuda:0, {8 - GPU_WORKERS} on cpu")
    free = {"cuda:0": 64 * WORKER_GPU_BYTES}
    plan = plan_workers(["cuda", "cuda:0"], cores=8, idle=8, gpu_free=free)
    assert plan.devices == ["cuda:0"] * GPU_WORKERS
