"""Reconstruction quality: the report's conv AE on the full Fashion-MNIST training split vs. PCA-10.

The autoencoder is trained exactly as `aeopt train configs/conv_ae.yaml` does (`aeopt.stages.train.train_run`:
stratified 80/20 split of the 60,000 training images, early stopping on the 20 %, best weights
restored) and scored once on the 10,000 test images. PCA with 10 components (the AE's latent
size) is fit on the same 48,000 training images and scored on the same test images. Both
numbers are mean squared error per pixel, pixels in [0, 1].

    python benchmarks/quality.py --data-dir ../shared/data --device cuda --json quality.json
    python benchmarks/quality.py --data-dir ../shared/data --pca-only            # seconds, any CPU
    python benchmarks/quality.py --data-dir ../shared/data --device cpu \\
        --set data.train_subset=6000 --set budget.max_epochs=2                   # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from aeopt.config import load_run_config
from aeopt.stages.train import train_run
from aeopt.training.data import prepare

REPO = Path(__file__).resolve().parents[1]  # for configs/*.yaml
REPORT_TEST_MSE = 0.021  # the homework report's test loss for this configuration


def pca_test_mse(train: np.ndarray, test: np.ndarray, components: int = 10, seed: int = 0) -> float:
    """Test MSE of reconstructing `test` from its projection on the top principal components of `train`."""
    pca = PCA(n_components=components, random_state=seed).fit(train)
    recon = pca.inverse_transform(pca.transform(test))
    return float(np.mean((recon - test) ** 2))


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None,
                    help="folder with FashionMNIST/raw (default: AEOPT_DATA_DIR, cache, Debian)")
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    ap.add_argument("--config", default=str(REPO / "configs" / "conv_ae.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set budget.max_epochs=2 (repeatable)")
    ap.add_argument("--components", type=int, default=10,
                    help="PCA components (default 10, the AE's latent size)")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    ap.add_argument("--pca-only", action="store_true", help="only the PCA baseline (no training)")
    ap.add_argument("--out", default=None,
                    help="also write the run's metrics.json, checkpoint.pt and PNG here")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_run_config(args.config, args.overrides)
    data = prepare(cfg.data, args.data_dir)
    train = data.train.x.flatten(1).numpy().astype(np.float32) / 255.0
    test = data.test.x.flatten(1).numpy().astype(np.float32) / 255.0

    t0 = time.perf_counter()
    pca_mse = pca_test_mse(train, test, args.components)
    result: dict = {
        "benchmark": "quality",
        "config": args.config,
        "overrides": args.overrides,
        "dataset": cfg.data.dataset,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        f"pca{args.components}_test_mse": pca_mse,
        "pca_seconds": round(time.perf_counter() - t0, 2),
        "report_test_mse": REPORT_TEST_MSE,
    }
    print(f"PCA-{args.components} (fit on the {len(train):,} training images): test MSE {pca_mse:.5f}")

    if not args.pca_only:
        _, metrics = train_run(cfg, data_dir=args.data_dir, device=args.device, out=args.out, amp=args.amp,
                               show_progress=True)
        ae_mse = metrics["test_mse"]
        result.update({
            "ae_test_mse": ae_mse,
            "ae_val_loss": metrics["val_loss"],
            "ae_train_loss": metrics["train_loss"],
            "ae_epochs": metrics["epochs"],
            "ae_best_epoch": metrics["best_epoch"],
            "ae_stopped_early": metrics["stopped_early"],
            "ae_seconds": metrics["seconds"],
            "ae_images_per_second": metrics["images_per_second"],
            "device": metrics["device"],
            "device_name": _device_name(metrics["device"]),
            "beats_pca": ae_mse < pca_mse,
            "meets_report": ae_mse <= REPORT_TEST_MSE,
        })
        print(f"conv AE ({metrics['epochs']} epochs, best {metrics['best_epoch']}, "
              f"{metrics['seconds']:.0f} s on {result['device_name']}): test MSE {ae_mse:.5f}")
        print(f"beats PCA-{args.components}: {'yes' if result['beats_pca'] else 'NO'}; "
              f"<= report's {REPORT_TEST_MSE}: {'yes' if result['meets_report'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
