"""`aeopt report`: a study's plots and its best model's analyses, or one given autoencoder checkpoint,
as PNGs and one offline HTML page."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import DataDirOpt, DeviceOpt, StorageOpt

OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Folder for report.html, report.json and the PNG figures.")]
StudyNameOpt = Annotated[str | None, typer.Option(
    "--study", "-s", envvar="AEOPT_STUDY",
    help="Study name: adds the search section and, without --checkpoint, shows the study's best model.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint",
    help="An autoencoder checkpoint to report (for example runs/best/checkpoint.pt, the refit of "
         "`aeopt train best.yaml`); without --study the search section is left out.")]
FinetuneOpt = Annotated[Path | None, typer.Option(
    "--finetune", help="An `aeopt finetune --out` folder: adds its confusion matrix and per-class accuracy.")]
DenoisingOpt = Annotated[str | None, typer.Option(
    "--denoising", metavar="<mode>",
    help="The denoising comparison: skip (leave it out), train (a plain and a denoising AE of the shown "
         "model's architecture, trained here: minutes on a CPU) or study:NAME (a denoising_ae study's "
         "best model). "
         "Default: reuse the study --denoising-study names; else train on CUDA and skip on a CPU.")]
DenoisingStudyOpt = Annotated[str | None, typer.Option(
    "--denoising-study", help="Same as --denoising study:NAME.")]
MaxPointsOpt = Annotated[int, typer.Option(
    "--max-points", min=10, help="Test images in the latent maps (t-SNE time grows with it).")]
FidClassifierOpt = Annotated[Path | None, typer.Option(
    "--fid-classifier",
    help="The classifier.pt of `aeopt baseline cnn` (or its --out folder), trained on the model's dataset: "
         "adds the Frechet distance of 10,000 new images to the test images on its penultimate features.")]
CompareGeneratorsOpt = Annotated[str | None, typer.Option(
    "--compare-generators",
    help="Comma-separated autoencoder checkpoints (a.pt,b.pt) scored beside the shown model "
         "(needs --fid-classifier).")]


def report(
    out: OutOpt,
    study: StudyNameOpt = None,
    checkpoint: CheckpointOpt = None,
    storage: StorageOpt = None,
    finetune: FinetuneOpt = None,
    denoising: DenoisingOpt = None,
    denoising_study: DenoisingStudyOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    max_points: MaxPointsOpt = 2000,
    fid_classifier: FidClassifierOpt = None,
    compare_generators: CompareGeneratorsOpt = None,
) -> None:
    """Write a self-contained HTML report (plotly.js inline: opens offline) and every figure as PNG.

    The search (history, intermediate values, importances, parallel coordinates); the model shown (the
    best trial's checkpoint artifact, its configuration retrained here, or the --checkpoint you give):
    reconstructions, PCA and t-SNE of the latent space, new samples; denoising at noise std 0.1 * i;
    with --finetune, the classifier's confusion matrix; with --fid-classifier, a Frechet distance for
    the new images of the shown model and of each --compare-generators checkpoint.

    Examples: aeopt report --study conv_ae --data-dir ../shared/data -o reports/conv_ae
              aeopt report --checkpoint runs/best/checkpoint.pt --data-dir ../shared/data -o reports/best
    """
    # Imported here so `aeopt --help` stays fast: the report pulls in plotly, sklearn and torch.
    from aeopt.files import output_folder, staged_folder  # noqa: PLC0415
    from aeopt.report import build_report  # noqa: PLC0415
    from aeopt.report.leftovers import remove_leftovers, report_files  # noqa: PLC0415
    from aeopt.search.storage import open_storage  # noqa: PLC0415

    # Ctrl-C / kill -INT stop the report even when started in the background (SIGINT inherited as
    # ignored there): one line, exit 130, and the --out folder as it was.
    with contextlib.suppress(ValueError):  # not the main thread (a test calling it in-process)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    output_folder(out)  # checked before the storage is opened and anything trained
    # Opened once, and only when a study is read: --checkpoint alone must not create a database.
    reads_a_study = study is not None or denoising_study is not None or (denoising or "").startswith("study:")
    opened = open_storage(storage, create=False) if reads_a_study else None
    # Built beside --out and moved in when complete: Ctrl-C part-way leaves no half-written report.
    # Staged empty: the report reuses nothing of an earlier one (a best checkpoint is downloaded
    # again), and a copy would carry the earlier report's figures into this one's folder. The move
    # only adds and replaces files, so the earlier report's figures and checkpoints this one did not
    # write are removed afterwards; files of the user's in --out are left alone (see
    # aeopt/report/leftovers.py).
    previous = report_files(out)
    with staged_folder(out, keep_existing=False) as staging:
        path = build_report(study, staging, storage=opened, checkpoint=checkpoint, finetune=finetune,
                            data_dir=data_dir, device=device, denoising=denoising,
                            denoising_study=denoising_study, max_points=max_points,
                            fid_classifier=fid_classifier,
                            compare_generators=[Path(p.strip()) for p in (compare_generators or "").split(",")
                                                if p.strip()],
                            final_out=out)
    remove_leftovers(out, previous, report_files(out))
    typer.echo(str(out / path.relative_to(staging)))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
