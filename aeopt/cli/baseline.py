"""`aeopt baseline cnn` (the plain supervised CNN from scratch) and `aeopt compare DIR...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt
from aeopt.config import load_baseline_config
from aeopt.stages.compare import compare_rows, format_table

baseline_app = typer.Typer(help="Supervised baselines trained from scratch, for `aeopt compare`.",
                           no_args_is_help=True)
LabelsOpt = Annotated[int | None, typer.Option(
    "--labels", min=10, help="Use only N labelled training images.")]


@baseline_app.command("cnn")
def cnn(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML with model / data / train sections.")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for metrics.json and the confusion matrix.")] = None,
    labels: LabelsOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = False,
) -> None:
    """Train the plain CNN (conv32-pool-conv64-pool-fc128) from scratch on the stratified 80/20
    split with the fine-tune stage's budget, and evaluate once on the test split.

    Example: aeopt baseline cnn --out runs/cnn --set train.max_epochs=20
    """
    overrides = list(set_ or []) + ([f"train.labels={labels}"] if labels is not None else [])
    cfg = load_baseline_config(config, overrides)
    out = out or Path("runs") / "baseline-cnn"
    # Imported on use: the stage imports torch (seconds); a bad config above fails before that.
    from aeopt.stages.baseline import train_baseline  # noqa: PLC0415

    metrics = train_baseline(cfg, data_dir=data_dir, device=device, out=out, amp=amp)
    summary = metrics.model_dump(mode="json", exclude_none=True, exclude={"history", "config"})
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out}/metrics.json, {out}/confusion_matrix.json, {out}/confusion_matrix.png", err=True)


def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Folders written by `aeopt finetune --out` / `aeopt baseline cnn --out`.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Accuracy and time of classifier runs side by side, as the report's table.

    Example: aeopt compare runs/finetune-best runs/baseline-cnn
    """
    rows = compare_rows([str(r) for r in runs])
    typer.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
    app.command("compare")(compare)
