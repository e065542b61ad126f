"""`aeopt storage proxy`: the address it logs is the one it listens on, and an address it cannot bind is one
line (exit 2) with no database file left behind."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aeopt.cli import main
from tests.conftest import run_cli


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err and "Failed to bind" not in err and "add_port" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_a_port_in_use_is_one_line_and_creates_no_database(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["storage", "proxy", "--storage", "sqlite:///demo.db", "--port", str(port)])
    err = capfd.readouterr().err
    assert code == 2, err
    assert _one_error_line(err) == (f"error: cannot listen on 127.0.0.1:{port} (in use, or not an address of "
                                    "this machine); pick another --port or --host")
    assert list(tmp_path.iterdir()) == []


def test_a_host_not_of_this_machine_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    # 192.0.2.0/24 is reserved for documentation: no machine has it.
    code = main(["storage", "proxy", "--storage", "sqlite:///demo.db", "--host", "192.0.2.1", "--port", "0"])
    err = capfd.readouterr().err
    assert code == 2, err
    assert _one_error_line(err).startswith("error: cannot listen on 192.0.2.1:0 (in use, or not an address")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_a_port_out_of_range_is_refused(port, tmp_path):
    # A subprocess with a time limit: a proxy that accepted the port would serve until stopped.
    try:
        done = run_cli("storage", "proxy", "--storage", "sqlite:///demo.db", "--port", port, cwd=tmp_path,
                       timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--port {port} was accepted: the proxy served")
    assert done.returncode == 2, done.stderr
    assert "--port" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_port_zero_logs_the_port_it_got(tmp_path: Path):
    proxy = subprocess.Popen([sys.executable, "-m", "aeopt", "storage", "proxy", "--storage",
                              f"sqlite:///{tmp_path}/demo.db", "--port", "0"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proxy.stderr.readline()
        found = re.search(r" on 127\.0\.0\.1:(\d+) \(workers: --storage grpc://127\.0\.0\.1:(\d+)\)", line)
        assert found and found.group(1) == found.group(2) != "0", line
        deadline = time.monotonic() + 30
        with socket.socket() as s:
            while s.connect_ex(("127.0.0.1", int(found.group(1)))) != 0:
                assert time.monotonic() < deadline, "nothing listens on the logged port"
                time.sleep(0.2)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.communicate(timeout=30)
