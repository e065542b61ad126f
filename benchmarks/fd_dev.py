"""Development check for issue 12's generation goal: the Frechet distance (FD) of an autoencoder's new
images, scored on held-out *training* images (the run's validation split, which the model never
trains on), never the test split, at several epochs of one training run.

    AEOPT_DATA_DIR=../shared/data python benchmarks/fd_dev.py NAME CONFIG CNN EPOCHS [--set key=value ...]

CONFIG: a run config (configs/aae.yaml, configs/conv_ae.yaml, ...); CNN: the classifier.pt (or its
folder) of `aeopt baseline cnn`; EPOCHS: comma-separated epochs to score (the run trains to the
largest). Per scored epoch, one JSON line is appended to benchmarks/results/fd_dev.jsonl:
- fd: 10,000 validation images against 10,000 new images (the kind's prior, or a full-covariance
  Gaussian fitted to the codes of its training images), as `aeopt report --fid-classifier` does;
- fd_fitted (AAE only): the same with a Gaussian fitted to the AAE's own codes, to tell a mismatch
  of codes and prior from a weak decoder;
- fd_recon: the reconstructions of those validation images against them (the decoder's floor);
- val_mse and, for the AAE, prior_mmd (the study's measure of codes against the prior).
The weights at each scored epoch are saved to runs/fd/dev/NAME/eEPOCH.pt.
"""

import json
import sys
import time
from pathlib import Path

import torch

from aeopt.config import load_run_config
from aeopt.stages.generation import (
    FrechetScorer,
    decode_all,
    encode_all,
    fitted_gaussian_codes,
    generate,
    load_feature_cnn,
)
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.data import prepare, stratified_subset, to_float
from aeopt.training.engine import fit, mse, set_seed
from aeopt.training.kinds.aae import prior_penalty
from aeopt.training.models import build_model

torch.set_num_threads(1)
CPU = torch.device("cpu")
N = 10_000

name, config, cnn_path, epochs_arg = sys.argv[1:5]
overrides = [a for a in sys.argv[5:] if a != "--set"]
scored = sorted(int(e) for e in epochs_arg.split(","))
cfg = load_run_config(config, [*overrides, f"budget.max_epochs={scored[-1]}", "budget.patience=0"])
data = prepare(cfg.data)  # the data folder from AEOPT_DATA_DIR, as aeopt train reads it
train_x, val_x = to_float(data.train.x, CPU), to_float(data.val.x, CPU)
ref = val_x[stratified_subset(data.val.y, N, 0)]
scorer = FrechetScorer(load_feature_cnn(cnn_path, CPU).model, ref)
out = Path("runs/fd/dev") / name
out.mkdir(parents=True, exist_ok=True)
results = Path("benchmarks/results/fd_dev.jsonl")
set_seed(cfg.seed)  # as fit() does before building: the same weights as `aeopt train` at that epoch
model = build_model(cfg)
started = time.perf_counter()
scoring = [0.0]  # seconds spent scoring, kept out of the training time


@torch.no_grad()
def score(epoch: int, train_loss: float, val_loss: float) -> None:
    if epoch not in scored:
        return
    trained = time.perf_counter() - started - scoring[0]
    t0 = time.perf_counter()
    row = {"name": name, "config": config, "overrides": overrides, "epoch": epoch,
           "train_seconds_so_far": round(trained, 1), "val_loss": val_loss, "val_mse": mse(model, val_x),
           "fd": scorer(generate(model, N, train_x=train_x, seed=0))}
    row["fd_recon"] = scorer(decode_all(model, encode_all(model, ref)))
    if cfg.model.kind == "aae":
        codes = encode_all(model, train_x)
        fitted = fitted_gaussian_codes(codes, N, torch.Generator().manual_seed(0))
        row["fd_fitted"] = scorer(decode_all(model, fitted))
        row["prior_mmd"] = prior_penalty(model, val_x)[1]["prior_mmd"]
    row["score_seconds"] = round(time.perf_counter() - t0, 1)
    scoring[0] += time.perf_counter() - t0
    print(json.dumps(row), flush=True)
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")
    save_checkpoint(out / f"e{epoch}.pt", model, cfg, {"epoch": epoch, "val_loss": val_loss})
    model.train()


fit(cfg, train_x, val_x, CPU, model=model, on_epoch=score)
