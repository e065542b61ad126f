"""aeopt's CPU thread default: one thread per idle core, the user's setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

from aeopt import threads


def test_defaults_fill_only_what_the_user_left_unset():
    env: dict[str, str] = {}
    chosen = threads.apply_process_defaults(env)
    assert chosen == env and list(env) == ["OMP_NUM_THREADS"]
    assert 1 <= int(env["OMP_NUM_THREADS"]) <= threads.usable_cores()
    mine = {"OMP_NUM_THREADS": "7"}
    assert threads.apply_process_defaults(mine) == {}
    assert mine == {"OMP_NUM_THREADS": "7"}


def test_idle_cores_is_a_share_of_the_machine():
    idle = threads.idle_cores(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9
    assert 1 <= threads.default_threads(0.05) <= threads.usable_cores()


def test_busy_cores_get_no_thread():
    # Occupy every core but one with a spinning process: the default must leave them alone.
    cores = threads.usable_cores()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        assert threads.default_threads(0.5) <= max(1, cores - 1)
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_torch_in_a_child_takes_the_defaults():
    code = ("from aeopt.threads import apply_process_defaults; apply_process_defaults(); import os, torch; "
            "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    wanted, got = out.stdout.split()
    assert wanted == got
