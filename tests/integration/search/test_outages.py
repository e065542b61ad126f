"""Outages, with real worker processes on a real PostgreSQL: the server restarted mid-trial, and the
network link of a worker cut for 20 s mid-trial. Each ends with 0 crashed workers, 0 lost trials,
0 zombie RUNNING trials and exactly N finished, without anyone stepping in. And an outage longer than
the window (a TCP forwarder in front of the session's server, stopped for good): the worker ends with
one line and exit code 2.

The server is a PostgreSQL cluster of the test's own (initdb in a temporary folder, its own port),
so that restarting it takes nobody else's database away; it listens on 127.0.0.1 and 127.77.0.1, the
host end of the veth pair the cut-link test builds. Both need root and the PostgreSQL server
binaries; the cut link needs `ip netns` too. Measured figures are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial, TrialState

from aeopt.search.records import StudyCounts
from aeopt.search.storage import Storage, open_storage
from aeopt.search.studies import load_study
from tests.conftest import _missing, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HOST_END, NS_END = "127.77.0.1", "127.77.0.2"  # the veth pair's addresses: loopback range, never routed out
# Heartbeats every second; a trial is stale only after 60 s without one, longer than either outage
# here, so that the trials in flight are waited for and finished, not failed and re-run.
ENV = {"AEOPT_HEARTBEAT_INTERVAL": "1", "AEOPT_GRACE_PERIOD": "60", "AEOPT_OUTAGE_SECONDS": "120",
       "OMP_NUM_THREADS": "1"}


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A PostgreSQL cluster of this module's own, run as the postgres user."""

    bin: Path
    data: Path
    port: int

    def _ctl(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.data} -c listen_addresses='127.0.0.1,{HOST_END}' "
                   "-c fsync=off -c max_connections=50")
        self._ctl("-l", str(self.data / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def url(self, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/postgres"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if os.geteuid() != 0 or bin_dir is None or shutil.which("runuser") is None:
        _missing("a private PostgreSQL cluster needs root, runuser and the server binaries (initdb, pg_ctl)")
    data = Path(tempfile.mkdtemp(prefix="aeopt_pg_"))
    shutil.chown(data, "postgres", "postgres")
    r = subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data),
                        "-A", "trust", "-U", "postgres"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(data / "pg_hba.conf", "a") as hba:  # this cluster only: the namespace's end of the veth pair
        hba.write(f"host all all {NS_END}/32 trust\n")
    server = Cluster(bin_dir, data, _free_port())
    server.start()
    try:
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def _spec(name: str, epochs: int) -> dict:
    # About 0.1 s an epoch, 2 folds: a trial lasts long enough to be caught in the middle.
    return {
        "name": name,
        "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "dropout": 0.0},
        "data": {"dataset": "synthetic", "train_subset": 300},
        "budget": {"max_epochs": epochs, "batch_size": 32},
        "cv": {"folds": 2, "seed": 0},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    }


def _create(tmp_path: Path, url: str, name: str, epochs: int) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(_spec(name, epochs)))
    r = run_cli("study", "create", str(path), "--storage", url, cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr


def _trials(storage: Storage, name: str) -> list[FrozenTrial]:
    study, _ = load_study(storage, name)
    return study.get_trials(deepcopy=False)


def _progress(storage: Storage, name: str) -> int:
    """Everything the workers have written so far: epochs reported plus trials finished."""
    return sum(len(t.intermediate_values) + t.state.is_finished() for t in _trials(storage, name))


def _wait_mid_trial(storage: Storage, name: str, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        trials = _trials(storage, name)
        if any(t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2 for t in trials):
            return
        time.sleep(0.25)
    for p in procs:
        p.kill()
    pytest.fail("no worker got into a trial: " + " | ".join(p.communicate()[1][-1500:] for p in procs))


def _time_to_progress(storage: Storage, name: str, since: int, timeout: float = 90) -> float:
    """Seconds until the workers write something new, read through a storage that waits for the server."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _progress(storage, name) > since:
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"no progress {timeout} s after the outage")


def _assert_finished_clean(storage: Storage, name: str, target: int) -> StudyCounts:
    trials = _trials(storage, name)
    counts = StudyCounts.of(trials)
    reasons = [t.user_attrs.get("fail_reason") or "" for t in trials if t.state.name == "FAIL"]
    why = f"{counts.text()}; failed: {reasons}"
    assert counts.finished == target, why  # N met exactly
    # No trial lost to the outage. Two workers asking for the last trial at once is not a loss: the
    # one over the target is failed on purpose, as a surplus, before it trains (objective.check_surplus).
    lost = [r for r in reasons if not r.startswith("SurplusTrialError")]
    assert not lost and counts.pruned == 0, why
    assert counts.running == 0 and counts.waiting == 0, why  # no zombies
    return counts


def test_a_postgresql_restart_mid_trial_is_ridden_out(cluster, tmp_path):
    url, name, target = cluster.url(), f"restart_{uuid.uuid4().hex[:8]}", 3
    _create(tmp_path, url, name, epochs=15)
    launch = subprocess.Popen(
        [sys.executable, "-m", "aeopt", "launch", "--study", name, "--workers", "2",
         "--n-trials", str(target), "--devices", "cpu"],
        cwd=tmp_path, env={**os.environ, **ENV, "AEOPT_STORAGE": url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = open_storage(url, create=False)  # the test's own reads wait out the restart too
    try:
        _wait_mid_trial(storage, name, [launch])
        before = _progress(storage, name)
        down = time.monotonic()
        cluster.stop()
        time.sleep(5)
        cluster.start()
        outage = time.monotonic() - down
        recovered = _time_to_progress(storage, name, before)
        out, err = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate()
    assert launch.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    counts = _assert_finished_clean(storage, name, target)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log")) + err
    assert "unreachable" in logs and "reachable again" in logs, logs[-4000:]
    print(f"\n[restart] outage {outage:.1f} s, first write {recovered:.1f} s after the server was back, "
          f"{counts.text()}, trials lost 0")


# ----- a cut network link ---------------------------------------------------------------------------


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return r


@dataclass
class Link:
    """The veth pair between the host and the worker's namespace."""

    ns: str
    host_if: str
    ns_if: str

    def up(self) -> None:
        # Taking a link down drops the routes through it; bringing it back up restores the kernel's
        # own routes only, so the /32 routes to the other end are put back here.
        inside = ("ip", "netns", "exec", self.ns)
        _sh("ip", "link", "set", self.host_if, "up")
        _sh("ip", "route", "replace", f"{NS_END}/32", "dev", self.host_if, "table", "local", "src", HOST_END)
        _sh(*inside, "ip", "link", "set", self.ns_if, "up")
        _sh(*inside, "ip", "route", "replace", f"{HOST_END}/32", "dev", self.ns_if, "table", "local",
            "src", NS_END)

    def down(self) -> None:
        _sh("ip", "link", "set", self.host_if, "down")


@pytest.fixture
def netns() -> Iterator[Link]:
    """A network namespace joined to the host by a veth pair: host end 127.77.0.1, namespace end
    127.77.0.2. 127.0.0.0/8 is local on both sides, so each end gets a /32 route to the other in its
    local table (longer than the /8) and accepts loopback-range packets from outside (route_localnet)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        _missing("the cut-link test needs root and iproute2 (ip netns)")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"aeopt_{tag}", f"aeh{tag}", f"aen{tag}"
    sysctl = Path("/proc/sys/net/ipv4/conf/all/route_localnet")
    saved = sysctl.read_text().strip()
    try:
        if _sh("ip", "netns", "add", ns, check=False).returncode != 0:
            _missing("cannot create a network namespace here (ip netns add failed)")
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _sh("ip", "link", "set", ns_if, "netns", ns)
        sysctl.write_text("1")
        _sh("sysctl", "-qw", f"net.ipv4.conf.{host_if}.route_localnet=1")
        _sh("ip", "addr", "add", f"{HOST_END}/32", "dev", host_if)
        inside = ("ip", "netns", "exec", ns)
        _sh(*inside, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
        _sh(*inside, "sysctl", "-qw", f"net.ipv4.conf.{ns_if}.route_localnet=1")
        _sh(*inside, "ip", "link", "set", "lo", "up")
        _sh(*inside, "ip", "addr", "add", f"{NS_END}/32", "dev", ns_if)
        link = Link(ns, host_if, ns_if)
        link.up()
        yield link
    finally:
        _sh("ip", "netns", "del", ns, check=False)  # takes the veth pair (both ends) with it
        _sh("ip", "link", "del", host_if, check=False)
        sysctl.write_text(saved)


def test_a_worker_survives_a_cut_link(cluster, netns, tmp_path):
    inside_url, name, target = cluster.url(HOST_END), f"cut_{uuid.uuid4().hex[:8]}", 2
    _create(tmp_path, cluster.url(), name, epochs=12)
    worker = subprocess.Popen(
        ["ip", "netns", "exec", netns.ns, sys.executable, "-m", "aeopt", "worker", "--study", name,
         "--n-trials", str(target), "--device", "cpu", "--threads", "1"],
        cwd=tmp_path, env={**os.environ, **ENV, "AEOPT_STORAGE": inside_url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = open_storage(cluster.url(), create=False)  # the host side, which the cut does not touch
    try:
        _wait_mid_trial(storage, name, [worker])
        netns.down()
        cut_at = time.monotonic()
        before = _progress(storage, name)
        time.sleep(20)
        stalled = _progress(storage, name) == before  # nothing got through while the link was down
        netns.up()
        recovered = _time_to_progress(storage, name, before)
        _, err = worker.communicate(timeout=150)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    assert stalled, "the worker still reached the database with the link down: the cut did not cut"
    counts = _assert_finished_clean(storage, name, target)
    print(f"\n[cut link] link down 20 s, first write {recovered:.1f} s after it came back "
          f"({time.monotonic() - cut_at:.0f} s from the cut to the end), {counts.text()}, trials lost 0")


# ----- an outage longer than the window ---------------------------------------------------------------


class Forwarder:
    """A TCP forwarder on a port of its own in front of 127.0.0.1:`target`; `stop` takes the link away
    for good (the listening socket and every connection closed: new connections are refused)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                if self.stopped:
                    client.close()
                    return
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
        try:  # wakes the thread blocked in accept() (a close alone would leave the port listening)
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=5)
        self.server.close()
        with self._lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_an_outage_longer_than_the_window_ends_the_worker_with_one_line(pg_url, tmp_path):
    name = f"gone_{uuid.uuid4().hex[:8]}"
    _create(tmp_path, pg_url, name, epochs=200)
    server = sqlalchemy.engine.make_url(pg_url)
    forwarder = Forwarder(server.port or 5432)
    through = server.set(port=forwarder.port).render_as_string(hide_password=False)
    env = {**os.environ, **ENV, "AEOPT_OUTAGE_SECONDS": "4", "AEOPT_STORAGE": through}
    worker = subprocess.Popen(
        [sys.executable, "-m", "aeopt", "worker", "--study", name, "--n-trials", "2", "--device", "cpu",
         "--threads", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = open_storage(pg_url, create=False)  # straight to the server, not through the forwarder
    try:
        _wait_mid_trial(storage, name, [worker])
        forwarder.stop()
        gone = time.monotonic()
        _, err = worker.communicate(timeout=60)
    finally:
        forwarder.stop()
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    took = time.monotonic() - gone
    assert worker.returncode == 2, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    shown = sqlalchemy.engine.make_url(through).render_as_string(hide_password=True)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-4000:]
    assert errors[0].startswith(f"error: storage {shown} unreachable for more than 4 s ("), errors[0]
    assert errors[0].endswith("; the running trial is lost to this worker (another worker re-queues it when "
                              "the storage is back); rerun the worker then"), err[-6000:]
    assert err.count(f"storage {shown} unreachable (") == 1, err[-4000:]  # the outage's one warning
    # The trial stays RUNNING, its heartbeats stopped: the next worker's stale check re-queues it.
    states = [t.state for t in _trials(storage, name)]
    assert states == [TrialState.RUNNING], states
    print(f"\n[gone] the worker ended {took:.1f} s after the link went away")
