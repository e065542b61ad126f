"""A short real study on one GPU with 1 and with N workers: SM utilization, GPU memory per worker and
trials per hour, side by side (issue "Fast trials", item 6; backs `aeopt launch --workers auto`).

Each run: a fresh SQLite study of the shipped spec (the default `conv_ae`: full Fashion-MNIST, 2 folds,
20 epochs, successive halving), `aeopt launch --workers W --devices cuda:0 --timeout SECONDS`, and
`nvidia-smi dmon` sampling SM utilization once a second meanwhile (the same counter the issue quotes:
the share of time a kernel was running). Trials per hour count finished trials (complete + pruned);
a trial the deadline stopped counts as pruned, as the study records it.

    python benchmarks/gpu_study.py --workers 1,auto --seconds 60 --json gpu_study.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def sample_gpu(stop: threading.Event, sm: list[float], memory: dict[int, int], index: int) -> None:
    """SM % once a second (dmon) and the most memory each compute process held (MiB)."""
    dmon = subprocess.Popen(["nvidia-smi", "dmon", "-s", "u", "-d", "1", "-i", str(index)],
                            stdout=subprocess.PIPE, text=True)
    try:
        while not stop.is_set():
            line = dmon.stdout.readline()
            if not line:
                break
            parts = line.split()
            if parts and parts[0].isdigit() and len(parts) > 1 and parts[1].isdigit():
                sm.append(float(parts[1]))
            apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                   "--format=csv,noheader,nounits", "-i", str(index)],
                                  capture_output=True, text=True).stdout
            for row in apps.strip().splitlines():
                pid, used = (v.strip() for v in row.split(","))
                if pid.isdigit() and used.isdigit():
                    memory[int(pid)] = max(memory.get(int(pid), 0), int(used))
    finally:
        dmon.kill()
        dmon.wait()


def run(label: str, args: argparse.Namespace, folder: Path) -> dict:
    """One study; `label` is a worker count or auto, with `:eager` for the unfused path (no fused
    folds, no CUDA graphs: what a trial ran before them)."""
    workers, _, mode = label.partition(":")
    url = f"sqlite:///{folder}/w{workers}{mode}.db"
    name = f"gpu_{workers}{mode}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The commands run in `folder`: a relative data folder (the suite's .gpu/data) would not be found there.
    if env.get("AEOPT_DATA_DIR"):
        env["AEOPT_DATA_DIR"] = str(Path(env["AEOPT_DATA_DIR"]).resolve())
    spec = str(Path(args.spec).resolve()) if Path(args.spec).is_file() else args.spec
    if mode == "eager":
        env.update({"AEOPT_FUSED": "0", "AEOPT_CUDA_GRAPHS": "0"})
    subprocess.run([sys.executable, "-m", "aeopt", "study", "create", spec, "--storage", url,
                    "--study-name", name, *sum((["--set", s] for s in args.set), [])],
                   check=True, env=env, cwd=folder)
    sm: list[float] = []
    memory: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_gpu, args=(stop, sm, memory, args.gpu), daemon=True)
    if args.device != "cpu":  # cpu: a dry run of everything but the GPU counters
        sampler.start()
    start = time.monotonic()
    command = [sys.executable, "-m", "aeopt", "launch", "--study", name, "--storage", url,
               "--workers", workers, "--devices", args.device, "--timeout", str(args.seconds)]
    launcher = subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    stdout, stderr = launcher.communicate()
    out = subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)
    wall = time.monotonic() - start
    # `--workers auto` asks the GPU for its free memory: the launcher holds a CUDA context of its own,
    # which is not a worker's.
    memory.pop(launcher.pid, None)
    stop.set()
    if sampler.is_alive():
        sampler.join(timeout=5)
    marker = "--workers auto: "
    plan = next((ln.split(marker, 1)[1] for ln in out.stderr.splitlines() if marker in ln), None)
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    epochs = sum(len(t.intermediate_values) for t in trials)
    row = {
        "workers": label, "plan": plan, "exit_code": out.returncode, "wall_s": round(wall, 1),
        "budget_s": args.seconds, "trials_finished": len(finished), "trials_complete": len(complete),
        "trials_per_hour": round(len(finished) / wall * 3600, 1),
        "epochs_per_hour": round(epochs / wall * 3600, 1),
        # The first seconds are start-up (imports, data to the GPU): the mean from the first busy sample on.
        "sm_util_mean": round(statistics.fmean(sm), 1) if sm else None,
        "sm_util_mean_busy": round(statistics.fmean(sm[next((i for i, v in enumerate(sm) if v > 0), 0):]), 1)
        if sm else None,
        "gpu_mib_per_worker_max": max(memory.values()) if memory else None,
        "worker_processes_seen": len(memory),
        "best_value": min((t.value for t in complete), default=None),
    }
    if out.returncode != 0 or not finished:
        # The folder goes with the run: keep what says why (the launcher's and each worker's last lines).
        row["stderr_tail"] = out.stderr.strip().splitlines()[-5:]
        for log in sorted((folder / "logs" / name).glob("worker-*.log")):
            row[f"{log.stem}_tail"] = log.read_text(errors="replace").strip().splitlines()[-8:]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,auto,auto:eager",
                   help="comma-separated worker counts (or auto); :eager = without fused folds and graphs")
    p.add_argument("--seconds", type=int, default=60, help="each study's --timeout")
    p.add_argument("--spec", default="conv_ae", help="a shipped spec name or a YAML file")
    p.add_argument("--set", action="append", default=[], help="spec overrides, as `study create --set`")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--device", default=None, help="the workers' device (default cuda:GPU; cpu: a dry run)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.device = args.device or f"cuda:{args.gpu}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="aeopt-gpu-study-") as tmp:
        for workers in args.workers.split(","):
            row = run(workers.strip(), args, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| workers | SM util % (mean / from first kernel) | GPU MiB per worker | trials finished | "
          "trials / hour | epochs / hour |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']}{' (' + r['plan'] + ')' if r['plan'] else ''} | {r['sm_util_mean']} / "
              f"{r['sm_util_mean_busy']} | {r['gpu_mib_per_worker_max']} | {r['trials_finished']} | "
              f"{r['trials_per_hour']} | {r['epochs_per_hour']} |")
    if args.json:
        result = {"spec": args.spec, "set": args.set, "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
