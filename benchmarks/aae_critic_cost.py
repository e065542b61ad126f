"""What the AAE's image critic costs per epoch: the plain AAE (configs/aae.yaml) against
configs/aae_critic.yaml at critic widths 16 (its setting) and 32, side by side in one run, the
three interleaved round by round so that a change in the machine's load hits all of them alike.

    AEOPT_DATA_DIR=../shared/data python benchmarks/aae_critic_cost.py [--images 12000] [--rounds 3]

One torch thread; seconds per epoch over `--images` training images (the fastest of the rounds),
and each variant's ratio to the plain AAE. Prints one JSON object.
"""

import argparse
import json
import time

import torch

from aeopt.config import load_run_config
from aeopt.training.data import prepare, to_float
from aeopt.training.engine import Trainer
from aeopt.training.models import build_model

torch.set_num_threads(1)
CPU = torch.device("cpu")
VARIANTS = {"aae (no critic)": ("configs/aae.yaml", []),
            "aae_critic, width 16": ("configs/aae_critic.yaml", []),
            "aae_critic, width 32": ("configs/aae_critic.yaml", ["model.image_critic=32"])}

parser = argparse.ArgumentParser()
parser.add_argument("--images", type=int, default=12_000)
parser.add_argument("--rounds", type=int, default=3)
args = parser.parse_args()

trainers = {}
for name, (path, overrides) in VARIANTS.items():
    cfg = load_run_config(path, overrides)
    trainers[name] = Trainer(build_model(cfg), cfg, CPU, seed=0)
data = prepare(load_run_config("configs/aae.yaml").data)
x = to_float(data.train.x[: args.images], CPU)
seconds: dict[str, list[float]] = {name: [] for name in trainers}
for _ in range(args.rounds):
    for name, trainer in trainers.items():
        t0 = time.perf_counter()
        trainer.train_epoch(x)
        seconds[name].append(time.perf_counter() - t0)
best = {name: min(s) for name, s in seconds.items()}
base = best["aae (no critic)"]
print(json.dumps({"images": args.images, "rounds": args.rounds, "threads": 1,
                  "seconds_per_epoch": {n: round(s, 2) for n, s in best.items()},
                  "ratio_to_plain_aae": {n: round(s / base, 2) for n, s in best.items()},
                  "all_rounds": {n: [round(v, 2) for v in s] for n, s in seconds.items()}}, indent=2))
