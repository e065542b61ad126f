"""Which autoencoder the report shows, and where it came from: a trial's checkpoint artifact, a
checkpoint file the user gave, or a configuration trained here.

The report trains nothing itself: where it needs a model it does not have, `Workbench.train` calls
the `train` stage (`aeopt.stages.train.train_run`, what `aeopt train` runs) and returns a
`TrainedHere` that says what was trained and why; the page states it in the section that uses the
model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aeopt.config import RunConfig, StudySpec
from aeopt.errors import AeoptError
from aeopt.report.study import fmt, require_best
from aeopt.search.artifacts import find_best_checkpoint
from aeopt.search.records import TrialRecord
from aeopt.search.storage import Storage
from aeopt.stages.train import train_run
from aeopt.training.checkpoint import load_checkpoint, save_checkpoint
from aeopt.training.models import Autoencoder

log = logging.getLogger(__name__)

CHECKPOINT_IN_RUN = "checkpoint.pt"  # what `aeopt train --out DIR` writes


@dataclass(frozen=True)
class TrainedHere:
    """A model the report had to train: why, from what configuration, how long."""

    why: str
    config: str  # `config_text` of its RunConfig
    epochs: int
    best_epoch: int
    seconds: float
    saved_as: str | None = None  # its checkpoint, relative to the report folder

    def rows(self, who: str = "") -> list[tuple[str, str]]:
        """Table rows for the page; `who` prefixes each label when a section holds several models."""
        p = f"{who}: " if who else ""
        rows = [(f"{p}trained for this report because", self.why),
                (f"{p}its configuration", self.config),
                (f"{p}training", f"{self.epochs} epochs (weights of epoch {self.best_epoch}, the best "
                                 f"validation loss) in {self.seconds:.1f} s, by the train stage on the 80/20 "
                                 "split")]
        if self.saved_as:
            rows.append((f"{p}saved as", self.saved_as))
        return rows

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ShownModel:
    """An autoencoder on the page, with one sentence saying exactly which model it is."""

    model: Autoencoder
    cfg: RunConfig
    source: str
    owner: str  # whose model, for captions: a study's name, or "the given model"
    trial: int | None = None
    fold: int | None = None
    epoch: int | None = None
    trained: TrainedHere | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "trial": self.trial, "fold": self.fold, "epoch": self.epoch,
                "trained_here": self.trained.as_dict() if self.trained else None}


def config_text(cfg: RunConfig) -> str:
    """A run config in one line: the model, the optimiser, the budget and the data."""
    model = cfg.model.model_dump(mode="json")
    kind = model.pop("kind")
    arch = f"{kind}(" + ", ".join(f"{k}={fmt(v)}" for k, v in model.items()) + ")"
    o, b, d = cfg.optim, cfg.budget, cfg.data
    subset = f" ({d.train_subset} training images)" if d.train_subset else ""
    return (f"{arch}; {o.name} lr={o.lr:.3g} weight_decay={o.weight_decay:.3g}; batch {b.batch_size}; up to "
            f"{b.max_epochs} epochs, patience {b.patience}; {d.dataset}{subset}; seed {cfg.seed}")


@dataclass(frozen=True)
class Workbench:
    """Where and how the report loads models and, when it must, has them trained."""

    out: Path
    device: torch.device
    data_dir: str | None = None
    show_progress: bool = False

    def train(self, cfg: RunConfig, *, why: str, what: str, save_as: str | None = None,
              extra: dict[str, Any] | None = None) -> tuple[Autoencoder, TrainedHere]:
        """Train `cfg` with the train stage; with `save_as`, keep its checkpoint in out/checkpoints/."""
        log.info("training %s for the report: %s", what, why)
        model, metrics = train_run(cfg, data_dir=self.data_dir, device=str(self.device),
                                   show_progress=self.show_progress)
        saved = None
        if save_as:
            saved = f"checkpoints/{save_as}"
            summary = {k: v for k, v in metrics.items() if k != "history"}
            save_checkpoint(self.out / saved, model, cfg, summary, extra=extra)
        trained = TrainedHere(why, config_text(cfg), int(metrics["epochs"]), int(metrics["best_epoch"]),
                              float(metrics["seconds"]), saved)
        return model.eval(), trained


def artifact_source(number: int, payload: dict[str, Any], best_epoch: int | None) -> str:
    """What a trial's checkpoint artifact holds, in one sentence (from the fold and epoch it records)."""
    fold, epoch = payload.get("fold"), payload.get("epoch")
    if fold is None or epoch is None:
        # Artifacts written before the checkpoint recorded them held fold 0's model at its last epoch.
        return (f"checkpoint of trial #{number}, written by an older aeopt that does not record its fold and "
                "epoch (fold 0's model at the trial's last epoch)")
    if best_epoch is not None and epoch != best_epoch:
        return (f"checkpoint of trial #{number}: fold {fold}'s model at epoch {epoch} (the trial's best mean "
                f"CV loss was at epoch {best_epoch})")
    return (f"checkpoint of trial #{number}: fold {fold}'s model at epoch {epoch}, the epoch of the trial's "
            "best mean CV loss")


def study_folder(name: str) -> str:
    """A study's name as one folder name: any run of characters outside [A-Za-z0-9_.-] becomes '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".")
    return safe or "study"


def best_of_study(study: Any, spec: StudySpec, storage: Storage, bench: Workbench) -> ShownModel:
    """The best trial's model: its checkpoint artifact if this machine can read it, else its
    configuration trained here by the train stage."""
    best = require_best(study)
    name = study.study_name
    # One folder per study: the main study's and the denoising study's best trials are both
    # checkpoint_trial{N}.pt, and with the same N one download replaced the other.
    ckpt = find_best_checkpoint(study, bench.out / "checkpoints" / study_folder(name), storage)
    if ckpt is not None:
        model, cfg, payload = load_checkpoint(ckpt, bench.device)
        log.info("best trial #%d of %s: using its checkpoint artifact", best.number, name)
        source = artifact_source(best.number, payload, TrialRecord.of(best).best_epoch)
        return ShownModel(model.eval(), cfg, source, name, best.number, payload.get("fold"),
                          payload.get("epoch"))
    cfg = spec.run_config(best.params)
    why = (f"trial #{best.number} has no checkpoint artifact readable here (the study keeps no artifact "
           "folder, or its file is not on this machine)")
    model, trained = bench.train(cfg, why=why, what=f"{name}'s trial #{best.number}",
                                 save_as=f"{name}_best.pt", extra={"study": name, "trial": best.number})
    source = f"trial #{best.number}'s configuration retrained here on the 80/20 split"
    return ShownModel(model, cfg, source, name, best.number, trained=trained)


def from_file(path: str | Path, device: torch.device) -> ShownModel:
    """A checkpoint the user gave (`--checkpoint`): a file, or an `aeopt train --out` folder holding one."""
    p = Path(path)
    if p.is_dir() and (p / CHECKPOINT_IN_RUN).is_file():
        p = p / CHECKPOINT_IN_RUN
    try:
        model, cfg, payload = load_checkpoint(p, device)
    except AeoptError as exc:
        raise AeoptError(f"--checkpoint {exc}") from None
    return ShownModel(model.eval(), cfg, f"the checkpoint {p} you gave", "the given model",
                      payload.get("trial"), payload.get("fold"), payload.get("epoch"))
