"""`aeopt refit --study NAME`: the study's best trial trained on the full training split, tested once."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt, StorageOpt, StudyOpt
from aeopt.files import output_folder
from aeopt.search.refit import default_out, refit_study
from aeopt.search.storage import open_storage

OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Folder for best.yaml, checkpoint.pt, metrics.json, refit.json and "
    "reconstructions.png. Default: runs/refit-<study>.")]


def refit(
    study: StudyOpt,
    storage: StorageOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = False,
) -> None:
    """Turn the study's best trial into the final model: its exported config trained on the FULL
    training split, early-stopped on a stratified holdout of it (data.val_fraction, 20% by default),
    tested once on the test split.

    The study's data.train_subset / data.test_subset are removed unless you --set them again. No
    search happens here: the configuration is the trial's. Writes best.yaml (the export),
    checkpoint.pt (what `aeopt finetune --checkpoint` and `aeopt report --checkpoint` read),
    metrics.json, reconstructions.png and refit.json (test metric, epochs, seconds, study and trial).

    Example: aeopt refit --study conv_ae --data-dir ../shared/data -o runs/best --set budget.max_epochs=30
    """
    out = output_folder(out or default_out(study))  # before the storage is opened and the training
    result = refit_study(open_storage(storage, create=False), study, out, set_ or [], data_dir=data_dir,
                         device=device, amp=amp)
    r = result.record
    epochs = f"{r['epochs']} epoch{'' if r['epochs'] == 1 else 's'} (best {r['best_epoch']})"
    typer.echo(f"refit study '{r['study']}' trial {r['trial']} (CV loss {r['cv_loss']:.5g}): {r['summary']}, "
               f"{epochs}, {r['seconds']:.1f} s training on {r['n_train']} images -> {out}")
    ckpt = shlex.quote(str(result.checkpoint))
    data = f" --data-dir {shlex.quote(data_dir)}" if data_dir else ""
    typer.echo(f"next: aeopt finetune --checkpoint {ckpt}{data}\n"
               f"      aeopt report --checkpoint {ckpt}{data} -o reports/{out.name}", err=True)


def register(app: typer.Typer) -> None:
    app.command("refit")(refit)
