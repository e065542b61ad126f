"""`aeopt export --study NAME -o best.yaml`: a study's best trial as a run config `aeopt train` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import StorageOpt, StudyOpt
from aeopt.files import output_file
from aeopt.search.export import export_study
from aeopt.search.storage import open_storage

# --out as every other command names its output; --output, its first name, still works.
OutputOpt = Annotated[Path, typer.Option("--out", "--output", "-o",
                                          help="best.yaml, best.yml or best.json (format by suffix).")]
TopOpt = Annotated[int, typer.Option("--top", min=1,
                                     help="Export the K best trials as a list instead of the best one.")]


def export(study: StudyOpt, output: OutputOpt, storage: StorageOpt = None, top: TopOpt = 1) -> None:
    """Write the best trial's complete run config, with its CV metrics and provenance.

    The file is a run config: `aeopt train best.yaml` retrains exactly that configuration and
    `aeopt finetune best.yaml` fine-tunes its encoder. The storage URL is never written to it.

    Example: aeopt export --study conv_ae -o best.yaml
    """
    output_file(output)  # a folder of that name, say: one line before the storage is opened
    result = export_study(open_storage(storage, create=False), study, output, top)
    best = result if isinstance(result, dict) else result[0]
    m, p = best["metrics"], best["provenance"]
    std = f" +- {m['cv_std']:.5g}" if m.get("cv_std") is not None else ""
    count = "" if isinstance(result, dict) else f" ({len(result)} trials, best first)"
    classifier = "finetune" in best  # a classifier study's export: a fine-tune config, scored by CV error
    typer.echo(f"wrote {output}{count}: study '{p['study']}' trial {p['trial']}, "
               f"CV {'error' if classifier else 'loss'} {m['cv_mean']:.5g}{std}")
    if not isinstance(result, dict):
        typer.echo("each entry is a run config; export with --top 1 to train one", err=True)
    elif classifier:  # `aeopt train` would retrain the autoencoder and ignore the tuned fine-tune
        ck = p.get("autoencoder_checkpoint")
        subset = p["dataset"]["train_subset"]
        typer.echo(f"fine-tune it with: aeopt finetune {output}" + (f" --checkpoint {ck}" if ck else "")
                   + (" --set data.train_subset=null  (all training images; the study used "
                      f"{subset})" if subset else ""), err=True)
    else:
        typer.echo(f"retrain it with: aeopt train {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
