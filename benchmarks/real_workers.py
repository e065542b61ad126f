"""Real workers on one database: `aeopt launch --workers N` against a fresh PostgreSQL database.

Each worker is a real `aeopt worker` process (torch, training, Optuna's sampler and pruner), here on
the CPU with one thread each on a small dataset, so that many fit one machine: the point is the
storage, the connections and the study's accounting, not the training. Directly on PostgreSQL or,
with --proxy, through an `aeopt storage proxy` started here. Recorded: launch's exit code, the
workers' error lines, the study's trial states (N met exactly, no trial left RUNNING), the most
connections to the database (pg_stat_activity, every second), the machine's memory in use and the
workers' summed RSS at their peak, the load average, and the wall time. Stops the launch (SIGTERM)
if the machine's available memory falls under --min-free-gib. The database is dropped afterwards.

    python benchmarks/real_workers.py --workers 32 --n-trials 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
_COUNT = ("SELECT count(*) FILTER (WHERE datname = %s), count(*) FROM pg_stat_activity "
          "WHERE backend_type = 'client backend'")


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def pss_of(marker: str) -> tuple[int, int]:
    """Summed PSS (bytes: each shared page split among the processes sharing it, so torch's libraries
    count once) and count of the processes whose command line holds `marker`."""
    total = count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker not in cmd or "real_workers.py" in cmd:
                continue
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        if match:
            total, count = total + int(match.group(1)) * 1024, count + 1
    return total, count


class Sampler(threading.Thread):
    """Every second: connections to the database and in all, memory, the workers' RSS, load."""

    def __init__(self, db: str, marker: str, min_free: int, on_low_memory):
        super().__init__(daemon=True)
        self.db, self.marker, self.min_free, self.on_low_memory = db, marker, min_free, on_low_memory
        self.stop = threading.Event()
        self.peak = Counter()
        self.loads: list[float] = []
        self.low_memory = False

    def run(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            while not self.stop.wait(1.0):
                db_conns, all_conns = conn.execute(_COUNT, (self.db,)).fetchone()
                mem = meminfo()
                pss, procs = pss_of(self.marker)
                used = mem["MemTotal"] - mem["MemAvailable"]
                for key, value in (("db_conns", db_conns), ("server_conns", all_conns), ("worker_pss", pss),
                                   ("worker_procs", procs), ("mem_used", used)):
                    self.peak[key] = max(self.peak[key], value)
                self.loads.append(os.getloadavg()[0])
                if mem["MemAvailable"] < self.min_free and not self.low_memory:
                    self.low_memory = True
                    self.on_low_memory()


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def aeopt(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aeopt", *args], env=env, text=True, capture_output=True)


def start_proxy(env: dict, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "aeopt", "storage", "proxy", "--port", str(port)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    time.sleep(5)  # the proxy imports Optuna and opens the database; workers retry a refused first call
    if proc.poll() is not None:
        raise SystemExit(f"aeopt storage proxy exited {proc.returncode}: see {log}")
    return proc


def study_states(url: str, name: str) -> tuple[Counter, Counter]:
    import optuna

    from aeopt.search.storage import open_storage

    trials = optuna.load_study(study_name=name, storage=open_storage(url).optuna).get_trials(deepcopy=False)
    reasons = Counter(str(t.user_attrs.get("fail_reason", "no reason"))[:100] for t in trials
                      if t.state.name == "FAIL")
    return Counter(t.state.name for t in trials), reasons


def error_lines(log_dir: Path) -> list[str]:
    lines = []
    for path in sorted(log_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if re.search(r"Traceback|ERROR|Error:|error:", line):
                lines.append(f"{path.name}: {line[:200]}")
    return lines


def _torch_version() -> str:
    import torch  # the workers' build (a CPU-only build needs less memory per worker)

    return torch.__version__


def run(a: argparse.Namespace) -> dict:
    db = f"aeopt_h7_{uuid.uuid4().hex[:6]}"
    admin(f'CREATE DATABASE "{db}"')
    url = PG + db
    name = f"real{a.workers}_{uuid.uuid4().hex[:4]}"
    env = {**os.environ, "AEOPT_STORAGE": url, "OMP_NUM_THREADS": "1"}
    log_dir = Path(a.log_dir) / name
    proxy = None
    try:
        sets = [x for s in a.set for x in ("--set", s)]
        made = aeopt("study", "create", a.spec, "-n", name, *sets, env=env)
        if made.returncode:
            raise SystemExit(f"study create failed: {made.stderr.strip()}")
        worker_env = env
        if a.proxy:
            proxy = start_proxy(env, a.port, Path(a.log_dir) / f"{name}-proxy.log")
            worker_env = {**env, "AEOPT_STORAGE": f"grpc://127.0.0.1:{a.port}"}
        cmd = [sys.executable, "-m", "aeopt", "launch", "--study", name, "--workers", str(a.workers),
               "--devices", "cpu", "--n-trials", str(a.n_trials), "--log-dir", str(log_dir)]
        mem = meminfo()
        before = mem["MemTotal"] - mem["MemAvailable"]
        launched = subprocess.Popen(cmd, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
        sampler = Sampler(db, name, int(a.min_free_gib * 2**30), lambda: launched.send_signal(signal.SIGTERM))
        sampler.start()
        t0 = time.monotonic()
        out, _ = launched.communicate(timeout=a.timeout)
        wall = time.monotonic() - t0
        sampler.stop.set()
        sampler.join()
        states, reasons = study_states(url, name)
        errors = error_lines(log_dir)
        return {"workers": a.workers, "n_trials": a.n_trials, "target": "proxy" if a.proxy else "postgres",
                "spec": a.spec, "set": a.set, "exit_code": launched.returncode, "wall_s": round(wall, 1),
                "states": dict(states), "finished": states["COMPLETE"] + states["PRUNED"],
                "n_met_exactly": states["COMPLETE"] + states["PRUNED"] == a.n_trials,
                "zombies_running": states["RUNNING"] + states["WAITING"], "fail_reasons": dict(reasons),
                "error_lines": len(errors), "error_samples": errors[:10],
                "db_conns_max": sampler.peak["db_conns"], "server_conns_max": sampler.peak["server_conns"],
                "worker_procs_max": sampler.peak["worker_procs"],
                "worker_pss_max_gib": round(sampler.peak["worker_pss"] / 2**30, 2),
                "mem_used_max_gib": round(sampler.peak["mem_used"] / 2**30, 2),
                "mem_total_gib": round(meminfo()["MemTotal"] / 2**30, 1),
                "mem_used_before_gib": round(before / 2**30, 2), "low_memory_stop": sampler.low_memory,
                "load_avg_min_max": [min(sampler.loads, default=0), max(sampler.loads, default=0)],
                "cpus": os.cpu_count(), "python": sys.executable, "torch": _torch_version(),
                "launch_tail": out.strip().splitlines()[-5:]}
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        if not a.keep_db:
            admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--n-trials", type=int, default=64, help="study-wide target of finished trials")
    p.add_argument("--spec", default="conv_ae")
    p.add_argument("--set", action="append", default=None,
                   help="spec overrides (default: 500 digits images, 2 epochs, 2 folds)")
    p.add_argument("--proxy", action="store_true", help="workers reach the database through the gRPC proxy")
    p.add_argument("--port", type=int, default=13977)
    p.add_argument("--timeout", type=float, default=3600.0, help="give up on the launch after this many s")
    p.add_argument("--min-free-gib", type=float, default=2.0, help="stop the launch below this free memory")
    p.add_argument("--log-dir", default="/tmp/aeopt_real_workers")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args()
    a.set = a.set or ["data.dataset=digits", "data.train_subset=500", "budget.max_epochs=2", "cv.folds=2",
                      "pruner.min_resource=1"]
    result = run(a)
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
