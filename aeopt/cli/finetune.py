"""`aeopt finetune best.yaml`: the autoencoder's encoder plus a classification head, on labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt
from aeopt.config import RunConfig, load_finetune_config
from aeopt.errors import AeoptError
from aeopt.files import output_folder

# Left out of the printed summary (they are in metrics.json): long, and not results.
_NOT_PRINTED = {"history", "finetune", "autoencoder"}

# A string, not a Path: pathlib turns "./conv_ae" (a file here, or a typo for one) into "conv_ae", which
# names the shipped preset, so a missing ./conv_ae quietly fine-tuned the preset.
ConfigArg = Annotated[str | None, typer.Argument(
    help="Run config or export YAML (best.yaml); optional with --checkpoint.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", show_default=False,
    help="Folder for metrics.json and the confusion matrix. Default: runs/finetune-NAME (NAME: the "
         "config file's name, else the checkpoint's run folder's).")]
MODES = ("full", "frozen")


def _mode(value: str | None) -> str | None:
    """--mode checked here, so that a typo is named as the option the user typed, not as the config key
    finetune.mode it sets (which the user never wrote)."""
    if value is not None and value not in MODES:
        raise AeoptError(f"--mode {value}: not a mode; use full or frozen")
    return value


ModeOpt = Annotated[str | None, typer.Option(
    "--mode", metavar="full|frozen", callback=_mode,
    help="full: train encoder and head; frozen: the head only (a probe of the representation). "
    "Default: finetune.mode (full).")]
LabelsOpt = Annotated[int | None, typer.Option(
    "--labels", min=10, help="Use only N labelled training images.")]
CVOpt = Annotated[int | None, typer.Option(
    "--cv", min=2, help="Repeat over K stratified folds; report mean and std of validation accuracy, then "
    "evaluate the fold ensemble on test once.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint",
    help="Start from this autoencoder checkpoint (DIR/checkpoint.pt of `aeopt train --out DIR`).")]


def _checkpoint_config(checkpoint: Path) -> RunConfig:
    # Imported on use: the checkpoint module imports torch (seconds), which most commands never need.
    from aeopt.training.checkpoint import load_checkpoint  # noqa: PLC0415

    return load_checkpoint(checkpoint)[1]


def finetune(
    config: ConfigArg = None,
    out: OutOpt = None,
    mode: ModeOpt = None,
    labels: LabelsOpt = None,
    cv: CVOpt = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = False,
) -> None:
    """Train the autoencoder (or load --checkpoint), put a classifier head on its encoder, fine-tune
    on the stratified 80/20 split with early stopping on validation accuracy, test once.

    Fine-tune settings live in the `finetune:` section (lr, head_hidden, max_epochs, patience, mode,
    labels, cv, augment, ...): for example --set finetune.lr=3e-4.

    Example: aeopt finetune best.yaml --out runs/finetune --labels 1000
    """
    overrides = list(set_ or [])
    # The dedicated options are shorthands for --set finetune.*; they win over the file.
    for key, value in (("mode", mode), ("labels", labels), ("cv", cv)):
        if value is not None:
            overrides.append(f"finetune.{key}={value}")
    base = _checkpoint_config(checkpoint) if config is None and checkpoint is not None else None
    cfg = load_finetune_config(config, overrides, base)
    if out is None:
        # --checkpoint runs/best (a run folder) is named as runs/best/checkpoint.pt is: "best".
        run_folder = checkpoint if checkpoint is not None and checkpoint.is_dir() else (
            checkpoint.parent if checkpoint is not None else None)
        name = Path(config).stem if config is not None else run_folder.name if run_folder is not None else ""
        out = Path("runs") / f"finetune-{name or 'finetune'}"
    output_folder(out)  # before training, not after it
    # Imported on use: the stage imports torch (seconds); a bad config above fails before that.
    from aeopt.stages.finetune import finetune as run_finetune  # noqa: PLC0415

    metrics = run_finetune(cfg, checkpoint=checkpoint, data_dir=data_dir, device=device, out=out, amp=amp)
    typer.echo(json.dumps(metrics.model_dump(mode="json", exclude_none=True, exclude=_NOT_PRINTED), indent=2))
    typer.echo(f"wrote {out}/metrics.json, {out}/confusion_matrix.json, {out}/confusion_matrix.png", err=True)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
