"""`aeopt train CONFIG`: one run configuration, early-stopped, evaluated once on test."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt
from aeopt.config import load_run_config
from aeopt.config.presets import RUN_CONFIG, preset_names
from aeopt.files import output_folder


def train(
    # A string, not a Path: pathlib would turn "./conv_ae" (a file here) into "conv_ae" (a shipped name).
    config: Annotated[str, typer.Argument(
        # The names from the shipped files themselves: a list typed here missed aae_critic.
        help="Run config: a YAML file (an `aeopt export` file too), or the name of a shipped one "
        f"({', '.join(preset_names(RUN_CONFIG))}; `aeopt configs` lists them).", show_default=False)],
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for metrics.json, checkpoint.pt, reconstructions.png.")] = None,
    amp: AmpOpt = False,
) -> None:
    """Train one configuration on the stratified 80/20 split with early stopping.

    Prints the metrics and writes metrics.json, a self-describing checkpoint.pt and a PNG of test
    reconstructions to --out (default runs/<config name>).

    Example: aeopt train conv_ae --data-dir ../shared/data --set budget.max_epochs=5
    """
    # Ctrl-C / kill -INT stop the run even when started in the background (where SIGINT is inherited
    # as ignored): one line, exit 130, and no output folder (write_run_outputs writes all at once).
    with contextlib.suppress(ValueError):  # not the main thread (a test calling it in-process)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # The config is checked before torch is imported: a typo costs a fraction of a second.
    cfg = load_run_config(config, set_ or [])
    out = output_folder(out or Path("runs") / Path(config).stem)  # before training, not after it
    from aeopt.stages.train import train_run  # noqa: PLC0415 (imports torch: seconds, only when training)

    _, metrics = train_run(cfg, data_dir=data_dir, device=device, out=out, amp=amp)
    summary = {k: v for k, v in metrics.items() if k != "history"}
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out}/metrics.json, {out}/checkpoint.pt, {out}/reconstructions.png", err=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
