"""`aeopt baseline cnn` (the plain supervised CNN from scratch), `aeopt baseline few-labels` (pretrained
encoders at few labels, over label draws) and `aeopt compare DIR...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, SetOpt
from aeopt.config import load_baseline_config, read_yaml
from aeopt.errors import AeoptError
from aeopt.files import output_folder
from aeopt.stages.compare import compare_rows, different_test_sets, format_table

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
        "--out", "-o", help="Folder for metrics.json and the confusion matrix. Default: runs/baseline-cnn.",
        show_default=False)] = None,
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
    if config is not None:
        # Read first with the baseline's own hint: it resolves no shipped names, which the shared
        # hint offers ("or the name of a shipped one"), and `aeopt configs` lists none of its kind.
        read_yaml(config, hint="pass a YAML file with model / data / train sections")
    cfg = load_baseline_config(config, overrides)
    out = output_folder(out or Path("runs") / "baseline-cnn")  # before training, not after it
    # Imported on use: the stage imports torch (seconds); a bad config above fails before that.
    from aeopt.stages.baseline import train_baseline  # noqa: PLC0415

    metrics = train_baseline(cfg, data_dir=data_dir, device=device, out=out, amp=amp)
    summary = metrics.model_dump(mode="json", exclude_none=True, exclude={"history", "config"})
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out}/metrics.json, {out}/confusion_matrix.json, {out}/confusion_matrix.png", err=True)


def _budgets(text: str) -> list[int]:
    """--budgets as label counts; each at least 2 per class of the 10 every dataset here has."""
    try:
        counts = [int(b) for b in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 20:
        raise AeoptError(f"--budgets {text!r}: give comma-separated label counts, at least 20 each "
                         "(2 per class), e.g. 100,1000")
    return counts


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave parameter `name` (not its default)."""
    # Typer vendors click: the source enum is compared by name, not imported from a private module.
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")


def _settings_without_their_switch(ctx: typer.Context, consistency: int, spread: bool) -> None:
    """Settings of a method that is off would be ignored without a word: one line instead, before any work."""
    if not consistency and ctx.params.get("consistency_opt"):
        raise AeoptError("--consistency-opt needs --consistency N (the steps of consistency regularisation, "
                         "N >= 1)")
    if not spread:
        for name, flag in (("alpha", "--spread-alpha"), ("neighbours", "--spread-neighbours")):
            if _given(ctx, name):
                raise AeoptError(f"{flag} needs --spread (label spreading is off without it)")


@baseline_app.command("few-labels")
def few_labels(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for label_draws.json.")],
    encoder: Annotated[list[str] | None, typer.Option(
        "--encoder", "-e", help="NAME=CHECKPOINT of a trained autoencoder (repeatable).")] = None,
    random_like: Annotated[Path | None, typer.Option(
        "--random-like", help="Also this checkpoint's network from random initialisation.")] = None,
    budgets: Annotated[str, typer.Option("--budgets", help="Label budgets, comma-separated.")] = "100,1000",
    draws: Annotated[int, typer.Option("--draws", min=1, help="Label draws per budget.")] = 3,
    pseudo_rounds: Annotated[int, typer.Option("--pseudo-rounds", min=0, help="Pseudo-label rounds.")] = 1,
    per_class: Annotated[int, typer.Option(
        "--pseudo-per-class", min=1, help="Pseudo-labelled images kept per predicted class.")] = 400,
    consistency: Annotated[int, typer.Option(
        "--consistency", min=0, help="Steps of consistency regularisation (FixMatch) after the "
        "fine-tune, on the unlabelled training images; 0: off.")] = 0,
    consistency_opt: Annotated[list[str] | None, typer.Option(
        "--consistency-opt",
        help="KEY=VALUE of its settings (threshold, ratio, lr, ...; repeatable).")] = None,
    spread: Annotated[bool, typer.Option(
        "--spread", help="Label spreading on the encoder's codes (a k-NN graph of the training "
        "images) in place of the first fine-tune; pseudo-label rounds then start from its labels.")] = False,
    neighbours: Annotated[int, typer.Option(
        "--spread-neighbours", min=1, max=1000,
        help="Graph edges per image, and votes per test image.")] = 20,
    alpha: Annotated[float, typer.Option(
        "--spread-alpha", min=0.0, max=0.999,
        help="How far labels travel on the graph (0: not at all).")] = 0.99,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Classifiers on pretrained encoders (and random initialisation) at few labels, mean +- std
    over label draws from the training split; the test split scores each classifier once.

    Example: aeopt baseline few-labels -e aae=runs/aae/checkpoint.pt -e conv_ae=runs/ae/checkpoint.pt
    --random-like runs/ae/checkpoint.pt -o runs/few; then aeopt compare runs/few.
    With unlabelled images too: --pseudo-rounds 0 --consistency 3000, or --spread --pseudo-rounds 0
    (label spreading on the codes: no gradient step, seconds a draw).
    """
    _settings_without_their_switch(ctx, consistency, spread)
    output_folder(out)  # before the encoders load and the draws train, not after them
    label_counts = _budgets(budgets)
    encoder = encoder or []
    if not encoder and random_like is None:
        # Random initialisation alone is a baseline worth its own run (beside another's folder).
        raise AeoptError("give at least one encoder (-e NAME=CHECKPOINT) or --random-like CHECKPOINT")
    bad = next((e for e in encoder if "=" not in e), None)
    if bad is not None:
        raise AeoptError(f"--encoder {bad}: give each encoder as NAME=CHECKPOINT")
    from aeopt.training.consistency import settings_from  # noqa: PLC0415

    fixmatch = settings_from(consistency, consistency_opt) if consistency else None
    if spread and fixmatch and not pseudo_rounds:
        raise AeoptError("--consistency with --spread needs --pseudo-rounds 1 or more (consistency "
                         "regularisation trains a classifier, which label spreading alone does not)")
    # Imported on use: the stage imports torch (seconds).
    from aeopt.stages.few_labels import (  # noqa: PLC0415
        RECIPE,
        PseudoLabels,
        label_budget,
        load_encoders,
        write_label_draws,
    )
    from aeopt.training.engine import resolve_device  # noqa: PLC0415
    from aeopt.training.label_spreading import SpreadSettings  # noqa: PLC0415

    dev = resolve_device(device)
    overrides = RECIPE + list(set_ or [])
    encoders, sources = load_encoders(dict(e.split("=", 1) for e in encoder), random_like, overrides, dev)
    pseudo = PseudoLabels(rounds=pseudo_rounds, per_class=per_class)
    spreading = SpreadSettings(neighbours=neighbours, alpha=alpha) if spread else None
    results = label_budget(encoders, label_counts, draws, pseudo=pseudo, device=dev,
                           data_dir=data_dir, consistency=fixmatch, spreading=spreading)
    write_label_draws(out, results, {"encoders": sources, "recipe": overrides, "pseudo": vars(pseudo),
                                     "consistency": vars(fixmatch) if fixmatch else None,
                                     "spreading": vars(spreading) if spreading else None,
                                     "draws": draws, "device": str(dev)})
    typer.echo(format_table(compare_rows([out])))


def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Folders written by `aeopt finetune --out` / `aeopt baseline cnn --out` / "
             "`aeopt baseline few-labels --out`.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Accuracy and time of classifier runs side by side, as the report's table, with the dataset and
    test-set size of each; one warning line (stderr) when they differ: test accuracies on different
    test sets are not comparable.

    Example: aeopt compare runs/finetune-best runs/baseline-cnn
    """
    for run in runs:  # a typo'd folder is named as missing, not as one without metrics.json
        if not run.exists():
            raise AeoptError(f"{run}: no such folder (looked for {run.expanduser().absolute()}); pass a "
                             "folder written by `aeopt finetune --out` or `aeopt baseline cnn --out`")
    rows = compare_rows([str(r) for r in runs])
    typer.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))
    warning = different_test_sets(rows)
    if warning is not None:
        typer.echo(warning, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
    app.command("compare")(compare)
