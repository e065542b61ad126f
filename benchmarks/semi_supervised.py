"""Few labels: classifiers on the AAE's encoder, the plain conv AE's, and random initialisation, at
100 and 1,000 labels, mean +- std over label draws (aeopt.stages.few_labels).

Each autoencoder is trained once, beforehand, on the whole training split without labels (`aeopt
train ... --out DIR`); this script fine-tunes per label draw (labels drawn from the training split,
stratified and seeded; the test split scores each reported classifier once) and writes
OUT/label_draws.json, which `aeopt compare OUT` shows.

    python benchmarks/semi_supervised.py --data-dir ../shared/data --device cpu \\
        --encoder aae=runs/ssl/aae/checkpoint.pt --encoder conv_ae=runs/ssl/conv_ae/checkpoint.pt \\
        --random-like runs/ssl/conv_ae/checkpoint.pt --out runs/ssl/labels
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--encoder", action="append", default=[], metavar="NAME=CHECKPOINT")
    ap.add_argument("--random-like", default=None, metavar="CHECKPOINT",
                    help="also a classifier from random initialisation, with this checkpoint's network")
    ap.add_argument("--budgets", default="100,1000")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--pseudo-rounds", type=int, default=1)
    ap.add_argument("--pseudo-per-class", type=int, default=400)
    ap.add_argument("--consistency", type=int, default=0, metavar="STEPS",
                    help="FixMatch steps after the fine-tune (aeopt/training/consistency.py); 0: off")
    ap.add_argument("--consistency-opt", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from aeopt.stages.compare import compare_rows, format_table
    from aeopt.stages.few_labels import RECIPE, PseudoLabels, label_budget, load_encoders, write_label_draws
    from aeopt.training.consistency import settings_from

    fixmatch = settings_from(args.consistency, args.consistency_opt) if args.consistency else None

    device = torch.device(args.device)
    overrides = RECIPE + args.overrides
    checkpoints = dict(item.split("=", 1) for item in args.encoder)
    encoders, sources = load_encoders(checkpoints, args.random_like, overrides, device)
    pseudo = PseudoLabels(rounds=args.pseudo_rounds, per_class=args.pseudo_per_class)
    t0 = time.perf_counter()
    results = label_budget(encoders, [int(b) for b in args.budgets.split(",")], args.draws, pseudo=pseudo,
                           device=device, data_dir=args.data_dir, consistency=fixmatch)
    info = {"encoders": sources, "recipe": overrides, "pseudo": vars(pseudo), "draws": args.draws,
            "consistency": vars(fixmatch) if fixmatch else None,
            "threads": torch.get_num_threads(), "device": str(device),
            "seconds": round(time.perf_counter() - t0, 1)}
    write_label_draws(args.out, results, info)
    print(format_table(compare_rows([args.out])))
    for r in results:
        s = r.summary()
        only = f"{s['labelled_only_test_acc_mean']:.4f} +- {s['labelled_only_test_acc_std']:.4f}"
        print(f"{s['encoder']:>8} {s['labels']:>5} labels: test {s['test_acc_mean']:.4f} +- "
              f"{s['test_acc_std']:.4f} (labels only {only}); pseudo-label accuracy "
              f"{[d['pseudo_label_acc'] for d in s['per_draw']]}")
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
