"""`aeopt report`: the study's plots and its best model's analyses, as PNGs and one offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aeopt.cli.common import DataDirOpt, DeviceOpt, StorageOpt, StudyOpt


def report(
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html, report.json and the PNG figures.")],
    storage: StorageOpt = None,
    finetune: Annotated[Optional[Path], typer.Option("--finetune", help="An `aeopt finetune --out` folder: adds its "
                                                     "confusion matrix and per-class accuracy.")] = None,
    denoising_study: Annotated[Optional[str], typer.Option("--denoising-study", help="A denoising_ae study whose best model "
                                                           "is compared with the plain AE under noise.")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    max_points: Annotated[int, typer.Option("--max-points", min=10, help="Test images in the latent maps (t-SNE time grows "
                                            "with it).")] = 2000,
) -> None:
    """Write a self-contained HTML report (plotly.js inline: opens offline) and every figure as PNG.

    The search (history, intermediate values, importances, parallel coordinates); the best configuration
    (its checkpoint artifact, or trained here): reconstructions, PCA and t-SNE of the latent space, new
    samples; denoising at noise std 0.1 * i; with --finetune, the classifier's confusion matrix.

    Example: aeopt report --study conv_ae --data-dir ../shared/data -o reports/conv_ae
    """
    from aeopt.report import build_report

    path = build_report(study, out, storage_url=storage, finetune=finetune, data_dir=data_dir, device=device,
                        denoising_study=denoising_study, max_points=max_points)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
