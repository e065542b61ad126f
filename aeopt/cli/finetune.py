"""`aeopt finetune best.yaml`: the autoencoder's encoder plus a classification head, on labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt


def finetune(
    config: Annotated[Optional[Path], typer.Argument(
        help="Run config or export YAML (best.yaml); optional with --checkpoint.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for metrics.json and the confusion matrix.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="full: train encoder and head; frozen: the head only "
                                                "(a probe of the representation). Default: finetune.mode (full).")] = None,
    labels: Annotated[Optional[int], typer.Option("--labels", min=10, help="Use only N labelled training images.")] = None,
    cv: Annotated[Optional[int], typer.Option("--cv", min=2, help="Repeat over K stratified folds; report mean and std of "
                                              "validation accuracy, then evaluate the fold ensemble on test once.")] = None,
    set_: SetOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="Start from this autoencoder checkpoint (DIR/checkpoint.pt of `aeopt train --out DIR`).")] = None,
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
    from aeopt.config import load_finetune_config
    from aeopt.stages.finetune import finetune as run_finetune

    overrides = list(set_ or [])
    # The dedicated options are shorthands for --set finetune.*; they win over the file.
    for key, value in (("mode", mode), ("labels", labels), ("cv", cv)):
        if value is not None:
            overrides.append(f"finetune.{key}={value}")
    base = None
    if config is None and checkpoint is not None:
        from aeopt.training.checkpoint import load_checkpoint

        _, base, _ = load_checkpoint(checkpoint)
    cfg = load_finetune_config(config, overrides, base)
    name = config.stem if config is not None else checkpoint.parent.name if checkpoint is not None else "finetune"
    out = out or Path("runs") / f"finetune-{name}"
    metrics = run_finetune(cfg, checkpoint=checkpoint, data_dir=data_dir, device=device, out=out, amp=amp)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "finetune", "autoencoder")}, indent=2))
    typer.echo(f"wrote {out}/metrics.json, {out}/confusion_matrix.json, {out}/confusion_matrix.png", err=True)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
