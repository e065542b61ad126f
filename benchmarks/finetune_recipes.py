"""Which fine-tune recipe? A few settings of the `finetune:` section on one trained autoencoder,
ranked by validation accuracy (the test split is evaluated but never used to choose).

This is how the defaults of aeopt.stages.finetune.FinetuneConfig were picked; `report_vs_aeopt.py` can
take the winner with --set. A study over the `finetune:` section does the same search properly.

    python benchmarks/finetune_recipes.py --data-dir ../shared/data --device cuda --json recipes.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every recipe names the settings it varies, so a change of the defaults does not change it.
# "keep" recipes keep the autoencoder's own encoder dropout (model.dropout, 0.2 in the report).
_KEEP = "finetune.encoder_dropout=null"
RECIPES = {
    "lr1e-3_shift_flip": ["finetune.lr=1e-3", "finetune.augment=shift_flip", _KEEP],
    "lr1e-3_none": ["finetune.lr=1e-3", "finetune.augment=none", _KEEP],
    "lr3e-3_none": ["finetune.lr=3e-3", "finetune.augment=none", _KEEP],
    "lr3e-3_none_no_dropout": ["finetune.lr=3e-3", "finetune.augment=none",
                               "finetune.encoder_dropout=0", "finetune.head_dropout=0"],
    "lr3e-3_flip": ["finetune.lr=3e-3", "finetune.augment=flip", _KEEP],
    "lr3e-3_flip_no_encoder_dropout": ["finetune.lr=3e-3", "finetune.augment=flip",
                                       "finetune.encoder_dropout=0"],
    "lr3e-3_shift_flip_no_encoder_dropout": ["finetune.lr=3e-3", "finetune.augment=shift_flip",
                                             "finetune.encoder_dropout=0"],
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--config", default=str(REPO / "configs" / "conv_ae.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help="comma-separated names from: " + ", ".join(RECIPES))
    ap.add_argument("--deadline", type=float, default=None, help="start no recipe after this many seconds")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--chosen", default=None, help="write the winner's --set arguments here, on one line")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aeopt").setLevel(logging.WARNING)
    log = logging.getLogger("recipes")

    from aeopt.config import load_finetune_config, run_config
    from aeopt.stages.finetune import finetune
    from aeopt.stages.train import train_run

    t0 = time.perf_counter()
    cfg = load_finetune_config(args.config, args.overrides)
    ae, ae_m = train_run(run_config(cfg), data_dir=args.data_dir, device=args.device, amp=args.amp,
                         show_progress=False)
    log.info("autoencoder: test MSE %.5f, %d epochs, %.1f s", ae_m["test_mse"], ae_m["epochs"],
             ae_m["seconds"])
    rows = []
    for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
        if args.deadline and time.perf_counter() - t0 > args.deadline:
            log.info("deadline reached: skipping %s", name)
            continue
        c = load_finetune_config(args.config, args.overrides + RECIPES[name])
        m = finetune(c, autoencoder=ae, data_dir=args.data_dir, device=args.device, amp=args.amp,
                     show_progress=False)
        row = {"recipe": name, "sets": RECIPES[name], "train_acc": m.train_acc, "val_acc": m.val_acc,
               "test_acc": m.test_acc, "epochs": m.epochs, "best_epoch": m.best_epoch, "seconds": m.seconds}
        rows.append(row)
        log.info("%-26s train %.4f  val %.4f  test %.4f  epochs %d (best %d)  %.1f s", name, row["train_acc"],
                 row["val_acc"], row["test_acc"], row["epochs"], row["best_epoch"], row["seconds"])
    best = max(rows, key=lambda r: r["val_acc"])
    log.info("chosen by validation accuracy: %s", best["recipe"])
    result = {"autoencoder": {k: ae_m[k] for k in ("test_mse", "epochs", "seconds")}, "rows": rows,
              "chosen": best["recipe"], "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.chosen:
        Path(args.chosen).write_text(" ".join(f"--set {s}" for s in best["sets"]) + "\n")
    return result


if __name__ == "__main__":
    main()
