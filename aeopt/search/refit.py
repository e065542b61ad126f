"""Refit: a study's best trial made into the final model.

The best trial's export (what `aeopt export` writes) is trained once more by the train stage, on
the full training split (the study's subsets removed unless the caller sets them again), with
early stopping on a stratified holdout of that split, and tested once on the test split. There is
no search here: the configuration is the trial's, and the test split is read once, after training.

Everything is written to a temporary folder beside the output folder and moved there only when
complete, so an interrupted refit (Ctrl-C, SIGTERM, an error) leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeopt.config import ClassifierStudySpec, RunConfig, apply_overrides, parse_override, validate
from aeopt.errors import StudyError
from aeopt.files import atomic_write_text, staged_folder, versions
from aeopt.search.export import export_best, write_export
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study, path_safe, storage_flag

log = logging.getLogger(__name__)

FORMAT = "aeopt.refit/1"
EXPORT_FILE, CHECKPOINT_FILE, RECORD_FILE = "best.yaml", "checkpoint.pt", "refit.json"
# The study's subsets are for searching quickly; the final model sees every image.
_SUBSETS = ("data.train_subset", "data.test_subset")


@dataclass(frozen=True)
class RefitResult:
    out: Path
    record: dict[str, Any]  # what refit.json holds

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_FILE


def default_out(study: str) -> Path:
    return Path("runs") / f"refit-{path_safe(study)}"


def refit_config(export: dict[str, Any], overrides: list[str] | None = None) -> tuple[RunConfig, list[str]]:
    """The run config to refit and the subsets removed from it: the export's run sections with
    `data.train_subset` and `data.test_subset` cleared (unless `overrides` set them), then `overrides`."""
    overrides = list(overrides or [])
    named = {parse_override(item)[0] for item in overrides}
    run = {k: v for k, v in export.items() if k in RunConfig.model_fields}
    data = dict(run.get("data") or {})
    removed = []
    for path in _SUBSETS:
        key = path.split(".", 1)[1]
        if data.get(key) is not None and path not in named:
            removed.append(f"{path}={data[key]}")
            data[key] = None
    run["data"] = data
    return validate(RunConfig, apply_overrides(run, overrides, RunConfig), "refit --set"), removed


def headline(metrics: dict[str, Any], noise_std: float = 0.0) -> str:
    """The test result as `aeopt train` reports it for the model's kind."""
    mse = f"test MSE {metrics['test_mse']:.5f}"
    if metrics.get("model") == "vae":  # the VAE's loss is its negative ELBO per image, in nats
        return f"test negative ELBO {metrics['test_loss']:.2f} nats/image ({mse})"
    if "test_mse_noisy_input" in metrics:
        return f"{mse}, from noisy inputs (std {noise_std:g}) {metrics['test_mse_noisy_input']:.5f}"
    return mse


def refit_record(export: dict[str, Any], cfg: RunConfig, metrics: dict[str, Any], *, storage: Storage,
                 removed: list[str], overrides: list[str], wall_seconds: float) -> dict[str, Any]:
    """refit.json: the result, where it came from (the storage masked) and how it was made."""
    provenance, searched = export["provenance"], export["metrics"]
    keys = ("test_loss", "test_mse", "test_mse_noisy_input", "test_mse_by_input_noise")
    test = {k: metrics[k] for k in keys if k in metrics}
    return {
        "format": FORMAT,
        "study": provenance["study"],
        "trial": provenance["trial"],
        "storage": storage.display,  # redacted: never the password
        "cv_loss": searched.get("cv_mean"),
        "cv_std": searched.get("cv_std"),
        "model": metrics["model"],
        "dataset": metrics["dataset"],
        "summary": headline(metrics, getattr(cfg.model, "noise_std", 0.0)),
        **test,
        "val_loss": metrics["val_loss"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "stopped_early": metrics["stopped_early"],
        "seconds": metrics["seconds"],  # training (the epochs) only
        "wall_seconds": round(wall_seconds, 3),  # data, training, test and writing
        "n_train": metrics["n_train"],
        "n_holdout": metrics["n_val"],
        "n_test": metrics["n_test"],
        "subsets_removed": removed,
        "overrides": overrides,
        "device": metrics["device"],
        "files": {"export": EXPORT_FILE, "checkpoint": CHECKPOINT_FILE, "metrics": "metrics.json"},
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def staged(out: Path) -> AbstractContextManager[Path]:
    """A temporary folder beside `out`; its files move into `out` only if the block completes."""
    return staged_folder(out, keep_existing=False)


def _export_of(storage: Storage, name: str) -> dict[str, Any]:
    study, spec = load_study(storage, name)
    if isinstance(spec, ClassifierStudySpec):
        raise StudyError(f"study '{name}' is a classifier study: its best trial is a fine-tune config; run "
                         f"`aeopt export --study {name}{storage_flag(storage)} -o best.yaml` then "
                         "`aeopt finetune best.yaml`")
    export = export_best(study, spec, storage=storage)
    assert isinstance(export, dict)  # top_k=1: one entry
    return export


def refit_study(storage: Storage, name: str, out: str | Path | None = None,
                overrides: list[str] | None = None, *, data_dir: str | None = None,
                device: str | None = None, amp: bool = False, show_progress: bool = True) -> RefitResult:
    """Train study `name`'s best trial on the full training split, test it once, write to `out`:
    best.yaml (the export), checkpoint.pt, metrics.json, reconstructions.png and refit.json."""
    started = time.monotonic()
    overrides = list(overrides or [])
    export = _export_of(storage, name)
    cfg, removed = refit_config(export, overrides)
    out = Path(out) if out is not None else default_out(name)
    # Imported on use: the train stage imports torch (seconds); a missing study fails before that.
    from aeopt.stages.train import train_run  # noqa: PLC0415

    p = export["provenance"]
    whole = "the full training split" if cfg.data.train_subset is None else f"{cfg.data.train_subset} images"
    log.info("refit of study '%s' trial %d on %s%s, early stopping on a %.0f%% stratified holdout of it, "
             "tested once", name, p["trial"], whole,
             f" (removed {', '.join(removed)}; --set one to keep it)" if removed else "",
             100 * cfg.data.val_fraction)
    with staged(out) as tmp:
        _, metrics = train_run(cfg, data_dir=data_dir, device=device, out=tmp, amp=amp,
                               show_progress=show_progress)
        write_export(export, tmp / EXPORT_FILE)
        record = refit_record(export, cfg, metrics, storage=storage, removed=removed, overrides=overrides,
                              wall_seconds=time.monotonic() - started)
        atomic_write_text(tmp / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return RefitResult(out, record)
