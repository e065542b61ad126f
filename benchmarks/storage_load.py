"""Storage load without torch: N simulated workers replay one aeopt worker's storage traffic.

Each client is one worker with no training: it opens its own storage with aeopt's `open_storage`
(aeopt's pool settings, heartbeats), then loops like `aeopt worker`: the pre-trial reads (stale
trials, the study's counts), `study.optimize(n_trials=1)` with aeopt's sampler (TPE, multivariate,
constant liar) and pruner (Hyperband) over 6 parameters of studies/conv_ae.yaml, `trial.report` +
`trial.should_prune` once per simulated epoch, the trial record's user attrs, then tell. Optuna's
heartbeat thread beats during the trial on heartbeat storages. Targets: PostgreSQL directly, and
through `aeopt storage proxy` (gRPC, started here as a subprocess).

Clients run as threads spread over a few processes (`--processes`): 256 Python processes with
Optuna, SQLAlchemy and gRPC would not fit beside PostgreSQL on a small machine, and on 2 cores more
processes add no CPU. Each thread still opens its own storage, so the connections it holds are a
worker's.

    python benchmarks/storage_load.py --clients 32,128,256 --seconds 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

SPACE = ("model.c1", "model.c2", "model.fc", "model.dropout", "optim.lr", "budget.batch_size")
SPEC = Path(__file__).resolve().parent.parent / "studies" / "conv_ae.yaml"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _quiet() -> None:
    import warnings

    import optuna

    # Optuna marks heartbeats, `group` and the gRPC proxy experimental: one warning per storage opened.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The trial ended at the point's deadline fails on purpose; errors are counted, not logged.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


class _Stop(Exception):
    """The point's time is up: end the running trial (not timed) and stop the client."""


class Client:
    """One simulated worker: its own storage and study object, its own timings and errors."""

    def __init__(self, url: str, study_name: str, index: int, cfg: dict):
        self.url, self.study_name, self.index, self.cfg = url, study_name, index, cfg
        self.lat: dict[str, list[float]] = {"pre": [], "ask": [], "report": [], "tell": []}
        self.errors: Counter = Counter()
        self.samples: dict[str, str] = {}
        self.told = 0

    def error(self, op: str, exc: BaseException) -> None:
        self.errors[op] += 1
        from aeopt.search.storage import redact

        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        self.samples.setdefault(op, f"{type(exc).__name__}: {first}".replace(self.url, redact(self.url)))

    def run(self, deadline: float) -> None:
        import optuna

        from aeopt.config import load_study_spec
        from aeopt.search.samplers import build_pruner, build_sampler
        from aeopt.search.storage import open_storage

        spec = load_study_spec(SPEC, [f"budget.max_epochs={self.cfg['max_epochs']}"])
        spec = spec.model_copy(update={"space": {k: spec.space[k] for k in SPACE}})
        time.sleep(random.uniform(0, self.cfg["epoch_seconds"]))  # workers never start in the same ms
        while time.monotonic() < deadline:
            try:
                storage = open_storage(self.url)
                study = optuna.load_study(study_name=self.study_name, storage=storage.optuna,
                                          sampler=build_sampler(spec, self.index), pruner=build_pruner(spec))
                break
            except Exception as exc:  # a refused connection at the limit: count it, try again later
                self.error("open", exc)
                time.sleep(self.cfg["epoch_seconds"])
        else:
            return
        while time.monotonic() < deadline:
            heartbeat = storage.optuna if storage.heartbeat else None
            if not self._one_trial(study, heartbeat, spec.space, deadline):
                break

    def _one_trial(self, study, heartbeat, space: dict, deadline: float) -> bool:
        from aeopt.search.heartbeat import fail_stale_trials

        phase = "pre"
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            if heartbeat is not None:  # as aeopt's worker loop: the storage's dead workers first
                fail_stale_trials(study, heartbeat)
            study.get_trials(deepcopy=False)  # the worker's counts, read before each trial
            self.lat["pre"].append(time.perf_counter() - t0)
            phase = "ask"
            marks["ask0"] = time.perf_counter()
            study.optimize(lambda trial: self._objective(trial, space, marks, deadline), n_trials=1,
                           callbacks=[lambda s, t: marks.setdefault("told", time.perf_counter())])
            if "told" in marks and "tell0" in marks:
                self.lat["tell"].append(marks["told"] - marks["tell0"])
                self.told += 1
            return True
        except _Stop:
            return False
        except Exception as exc:
            if phase == "ask" and "tell0" in marks:  # Optuna's tell, after the objective returned
                phase = "tell"
            self.error(getattr(exc, "aeopt_phase", phase), exc)
            time.sleep(self.cfg["epoch_seconds"])  # a real worker would retry or die; keep the load on
            return True

    def _objective(self, trial, space: dict, marks: dict, deadline: float) -> float:
        import optuna

        from aeopt.search.records import TrialRecord
        from aeopt.search.space import suggest

        params = suggest(trial, space)
        self.lat["ask"].append(time.perf_counter() - marks["ask0"])
        started = time.monotonic()
        quality = abs(math.log10(params["optim.lr"]) + 3) + params["model.dropout"]  # something to model
        losses: list[float] = []
        for epoch in range(1, self.cfg["max_epochs"] + 1):
            wake = started + epoch * self.cfg["epoch_seconds"]
            if wake > deadline:
                raise _Stop
            time.sleep(max(0.0, wake - time.monotonic()))
            losses.append(0.02 + 0.01 * quality + 0.05 / epoch + random.gauss(0, 0.001))
            t = time.perf_counter()
            try:
                trial.report(losses[-1], epoch)
                pruned = trial.should_prune()
            except Exception as exc:
                exc.aeopt_phase = "report"
                raise
            self.lat["report"].append(time.perf_counter() - t)
            if pruned:
                break
        marks["tell0"] = time.perf_counter()
        record = TrialRecord(fold_losses=[losses[-1]] * 5, cv_std=0.0, epochs=len(losses),
                             best_epoch=len(losses), seconds=time.monotonic() - started,
                             images_per_second=48000 / self.cfg["epoch_seconds"], device="sim",
                             host=socket.gethostname())
        try:
            record.write(trial)
        except Exception as exc:
            exc.aeopt_phase = "tell"
            raise
        if len(losses) < self.cfg["max_epochs"]:
            raise optuna.TrialPruned()
        return min(losses)


def client_process(urls: list[str], study_name: str, indices: list[int], cfg: dict, go, ready, out) -> None:
    _quiet()
    from aeopt.config import load_study_spec  # noqa: F401  (imports done before the start signal)
    from aeopt.search import heartbeat, samplers, storage  # noqa: F401

    ready.put(os.getpid())
    go.wait()
    deadline = time.monotonic() + cfg["seconds"]
    clients = [Client(urls[i % len(urls)], study_name, i, cfg) for i in indices]  # round-robin
    threads = [threading.Thread(target=c.run, args=(deadline,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=cfg["seconds"] + 540)
    out.put([{"lat": c.lat, "errors": dict(c.errors), "samples": c.samples, "told": c.told} for c in clients])


_COUNT = ("SELECT count(*) FILTER (WHERE datname = %s), count(*) FROM pg_stat_activity "
          "WHERE backend_type = 'client backend'")


class ConnectionSampler(threading.Thread):
    """Counts the database's connections (pg_stat_activity) every half second."""

    def __init__(self, db: str):
        super().__init__(daemon=True)
        self.db, self.counts, self.totals, self.stop = db, [], [], threading.Event()
        self.loads: list[float] = []  # the machine's 1-minute load average (other jobs included)

    def run(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            while not self.stop.wait(0.5):
                row = conn.execute(_COUNT, (self.db,)).fetchone()
                self.counts.append(row[0])
                self.totals.append(row[1])
                self.loads.append(os.getloadavg()[0])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


def _dispose(storage) -> None:
    # The orchestrator's own pooled connection must not count as a client's.
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def run_point(target: str, urls: list[str], db: str, clients: int, cfg: dict) -> dict:
    import optuna

    from aeopt.search.storage import open_storage

    name = f"load_{target}_{clients}_{uuid.uuid4().hex[:4]}"
    opened = open_storage(urls[0])
    optuna.create_study(study_name=name, storage=opened.optuna, direction="minimize")
    _dispose(opened.optuna)
    procs = min(cfg["processes"], clients)
    ctx = mp.get_context("spawn")
    go, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    shares = [list(range(i, clients, procs)) for i in range(procs)]
    workers = [ctx.Process(target=client_process, args=(urls, name, s, cfg, go, ready, out)) for s in shares]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    sampler = ConnectionSampler(db)
    sampler.start()
    t0 = time.monotonic()
    go.set()
    results = [r for _ in workers for r in out.get(timeout=cfg["seconds"] + 600)]
    wall = time.monotonic() - t0
    sampler.stop.set()
    for w in workers:
        w.join(timeout=30)
    return summarize(target, clients, procs, results, sampler, wall, open_storage(urls[0]), name)


def summarize(target, clients, procs, results, sampler, wall, storage, name) -> dict:
    import optuna

    lat = {k: [v for r in results for v in r["lat"][k]] for k in ("pre", "ask", "report", "tell")}
    errors: Counter = Counter()
    samples: dict[str, str] = {}
    for r in results:
        errors.update(r["errors"])
        for k, v in r["samples"].items():
            samples.setdefault(k, v)
    trials = optuna.load_study(study_name=name, storage=storage.optuna).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    _dispose(storage.optuna)
    ms = {f"{k}_p{q}": (None if pct(v, q / 100) is None else round(1000 * pct(v, q / 100), 1))
          for k, v in lat.items() for q in (50, 99)}
    return {"target": target, "clients": clients, "processes": procs, "wall_s": round(wall, 1),
            "errors": sum(errors.values()), "errors_by_op": dict(errors), "error_samples": samples,
            "conn_max": max(sampler.counts, default=0),
            "conn_mean": round(statistics.fmean(sampler.counts), 1) if sampler.counts else 0,
            "server_conn_max": max(sampler.totals, default=0),
            "asks": len(lat["ask"]), "reports": len(lat["report"]), "tells": len(lat["tell"]),
            "trial_states": dict(states), **ms,
            "load_avg_min_max": [min(sampler.loads, default=0), max(sampler.loads, default=0)]}


def start_proxy(url: str, port: int, threads: int) -> subprocess.Popen:
    from aeopt.search.storage import open_storage

    env = {**os.environ, "AEOPT_STORAGE": url}
    log = tempfile.NamedTemporaryFile("w+", prefix="aeopt_proxy_", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "aeopt", "storage", "proxy", "--port", str(port),
                             "--threads", str(threads)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    for _ in range(120):
        if proc.poll() is not None:
            raise SystemExit(f"aeopt storage proxy exited {proc.returncode}: see {log.name}")
        try:
            open_storage(f"grpc://127.0.0.1:{port}").optuna.get_all_studies()
            return proc
        except Exception:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("aeopt storage proxy did not answer within 60 s")


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """CPU time (user + system) the proxy processes have used so far, from /proc."""
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def fresh_database() -> tuple[str, int]:
    import psycopg

    db = f"aeopt_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
        max_conn = int(conn.execute("SHOW max_connections").fetchone()[0])
    return db, max_conn


def drop_database(db: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def print_row(r: dict) -> None:
    f = lambda v: "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"  # noqa: E731
    print(f"| {r['target']} | {r['clients']} ({r['processes']} proc) | {r['errors']} | {r['conn_max']} "
          f"| {r['server_conn_max']} | {f(r['ask_p50'])} / {f(r['ask_p99'])} | {f(r['tell_p50'])} / "
          f"{f(r['tell_p99'])} | {f(r['report_p50'])} / {f(r['report_p99'])} | {r['asks']} / {r['tells']} "
          f"| load {r['load_avg_min_max'][0]:.1f}-{r['load_avg_min_max'][1]:.1f} |",
          flush=True)
    for op, text in r["error_samples"].items():
        print(f"    {r['errors_by_op'][op]} x {op}: {text}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="32,128,256", help="comma-separated client counts")
    p.add_argument("--targets", default="postgres,proxy",
                   help="postgres (direct), proxy (aeopt storage proxy)")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each point")
    p.add_argument("--epoch-seconds", type=float, default=2.0, help="simulated epoch period of a trial")
    p.add_argument("--max-epochs", type=int, default=6, help="epochs of an unpruned trial (Hyperband max)")
    p.add_argument("--processes", type=int, default=8, help="client processes; clients are threads in them")
    p.add_argument("--port", type=int, default=13917, help="port of the gRPC proxy")
    p.add_argument("--keep-db", action="store_true", help="leave the fresh database in place")
    p.add_argument("--db", help="use this existing database (kept) instead of a fresh one")
    p.add_argument("--proxies", type=int, default=1,
                   help="proxies to start on ports --port, --port+1, ...; clients spread round-robin")
    p.add_argument("--proxy-threads", type=int, default=16,
                   help="gRPC handler threads of each proxy (as many database connections)")
    p.add_argument("--proxy-url", help="use these running proxies (grpc://HOST:PORT,... on --db) instead")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args()
    _quiet()
    cfg = {"seconds": a.seconds, "epoch_seconds": a.epoch_seconds, "max_epochs": a.max_epochs,
           "processes": a.processes}
    db, max_conn = (a.db, 100) if a.db else fresh_database()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    print(f"database {db}; max_connections {max_conn}; {os.cpu_count()} CPUs; settings {cfg}", flush=True)
    print("| target | clients | errors | conns (db, max) | conns (server, max) | ask p50 / p99 ms "
          "| tell p50 / p99 ms | report p50 / p99 ms | asks / tells |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows, proxies = [], []
    try:
        for target in a.targets.split(","):
            if target == "proxy" and not a.proxy_url:
                proxies = [start_proxy(url, a.port + k, a.proxy_threads) for k in range(a.proxies)]
            urls = [f"grpc://127.0.0.1:{a.port + k}" for k in range(a.proxies)]
            urls = [url] if target == "postgres" else a.proxy_url.split(",") if a.proxy_url else urls
            for n in (int(x) for x in a.clients.split(",")):
                cpu = cpu_seconds(proxies)
                rows.append(run_point(target, urls, db, n, cfg))
                rows[-1]["proxies"] = len(urls) if target == "proxy" else 0
                rows[-1]["proxy_cpu_s"] = round(cpu_seconds(proxies) - cpu, 1)
                print_row(rows[-1])
                time.sleep(3)  # let the last point's connections close
    finally:
        for proxy in proxies:
            proxy.terminate()
            proxy.wait(timeout=30)
        if not (a.keep_db or a.db):
            drop_database(db)
    if a.json:
        Path(a.json).write_text(json.dumps({"max_connections": max_conn, "cpus": os.cpu_count(),
                                            "settings": cfg, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
