"""`aeopt study create|list|show|delete`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import SetOpt, StorageOpt, artifact_folder
from aeopt.config import load_study_spec
from aeopt.config.presets import STUDY_SPEC, preset_names
from aeopt.errors import StorageError, StudyError
from aeopt.search.dashboard import write_study_note
from aeopt.search.records import StudyCounts
from aeopt.search.storage import Storage, open_storage
from aeopt.search.studies import (
    NAME_RULE,
    check_study_name,
    create_study,
    default_artifact_dir,
    delete_study,
    list_studies,
    load_study,
    open_study,
    storage_flag,
    study_names,
    summarize,
)

study_app = typer.Typer(help="Create, list, inspect and delete studies in a storage.", no_args_is_help=True)

# A string, not a Path: pathlib would turn "./conv_ae" (a file here) into "conv_ae" (a shipped name).
SpecArg = Annotated[str, typer.Argument(
    help="Study spec: a YAML file, or the name of a shipped one "
    f"({', '.join(preset_names(STUDY_SPEC))}; `aeopt configs` lists them).", show_default=False)]
NameOpt = Annotated[str | None, typer.Option("--study-name", "-n",
                                             help=f"Name (default: the spec's `name`): {NAME_RULE}.")]
SkipOpt = Annotated[bool, typer.Option(
    "--skip-if-exists", help="Reuse an existing study of that name; it keeps the spec it was created with.")]
ArtifactsOpt = Annotated[str | None, typer.Option(
    "--artifacts", envvar="AEOPT_ARTIFACTS", callback=artifact_folder,
    help="Folder for trial artifacts (PNGs, best checkpoint).")]
StudyNameArg = Annotated[str | None, typer.Argument(help="Study name (or --study).", show_default=False)]
# --study / -s / AEOPT_STUDY as worker, launch, export and report take it; the positional NAME stays.
StudyNameOpt = Annotated[str | None, typer.Option("--study", "-s", envvar="AEOPT_STUDY",
                                                  help="Study name (or NAME).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@study_app.command("create")
def create(
    spec: SpecArg,
    storage: StorageOpt = None,
    study_name: NameOpt = None,
    skip_if_exists: SkipOpt = False,
    set_: SetOpt = None,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Validate SPEC and create the study; the spec is stored inside it.

    A worker anywhere then needs only --storage and --study.

    Example: aeopt study create conv_ae --set data.train_subset=12000
    """
    spec_obj = load_study_spec(spec, set_ or [])
    name = study_name or spec_obj.name or Path(spec).stem
    # Before the storage is opened, which may create it: a refused name leaves no new database behind.
    opened = _reused_storage(storage, name) if skip_if_exists else None
    if opened is None:
        check_study_name(name)
        opened = open_storage(storage)
    folder = artifacts if artifacts is not None else str(default_artifact_dir(opened))
    study = create_study(opened, spec_obj, name, skip_if_exists=skip_if_exists, artifacts=folder)
    write_study_note(study)  # from the stored spec: an existing study keeps its own
    typer.echo(f"study '{study.study_name}' ready in {opened.display}")
    # The URL itself, to paste (storage_flag keeps a password out: it then says --storage URL).
    typer.echo(f"run workers with: aeopt worker --study {study.study_name} --n-trials 50"
               f"{storage_flag(opened)}")


def _reused_storage(url: str | None, name: str) -> Storage | None:
    """The storage, when it exists and holds a study named `name` that --skip-if-exists may reuse
    whatever its name (one made before names were checked, or by Optuna); else None, nothing created."""
    try:
        check_study_name(name)
        return None  # a valid name: no need to look (the storage is opened, or made, as usual)
    except StudyError:
        pass
    try:
        opened = open_storage(url, create=False)
    except StorageError:  # no storage there yet (no file, no Optuna tables): no such study either
        return None
    return opened if name in study_names(opened) else None


@study_app.command("list")
def list_(storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """List the studies in the storage with trial counts and best values."""
    rows = list_studies(open_storage(storage, create=False))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no studies yet: aeopt study create conv_ae")
        return
    typer.echo(f"{'study':<28} {'model':<13} {'complete':>8} {'pruned':>7} {'failed':>7} {'running':>8}"
               "  best")
    for r in rows:
        c = r.counts
        typer.echo(f"{r.name:<28} {r.model:<13} {c.complete:>8} {c.pruned:>7} {c.failed:>7} {c.running:>8}  "
                   f"{r.best_text}")


def _one_name(ctx: typer.Context, name: str | None, study: str | None) -> str:
    """The study named by NAME or --study (or AEOPT_STUDY): one of them, or both the same. NAME, typed on
    the command line, wins over AEOPT_STUDY (command line > environment, as for every option)."""
    if name is None and study is None:
        raise StudyError(f"name the study: aeopt study {ctx.info_name} NAME (or --study NAME)")
    from_env = getattr(ctx.get_parameter_source("study_opt"), "name", "") == "ENVIRONMENT"
    if name is not None and study is not None and name != study and not from_env:
        raise StudyError(f"two study names: {name} and --study {study}; give one")
    return name if name is not None else study


@study_app.command("show")
def show(ctx: typer.Context, name: StudyNameArg = None, study_opt: StudyNameOpt = None,
         storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Counts by state, the best value and its parameters."""
    name = _one_name(ctx, name, study_opt)
    opened = open_storage(storage, create=False)
    study, spec = load_study(opened, name)
    s = summarize(study)
    if as_json:
        typer.echo(json.dumps(s.as_dict(), indent=2))
        return
    typer.echo(f"study {s.name}: {spec.model.kind} on {spec.data.dataset}, {spec.cv.folds}-fold CV, "
               f"sampler {spec.sampler.name}, pruner {spec.pruner.name}")
    typer.echo(f"trials: {s.counts.text()}" if s.n_trials else "trials: none yet")
    if s.best_value is None:
        typer.echo(f"no complete trial yet: aeopt worker --study {name}{storage_flag(opened)}")
        return
    typer.echo(f"best: trial {s.best_trial}, mean CV loss {s.best_value:.6g} +- {s.best_cv_std or 0:.2g}")
    for k, v in s.best_params.items():
        typer.echo(f"  {k} = {v}")


@study_app.command("delete")
def delete(ctx: typer.Context, name: StudyNameArg = None, study_opt: StudyNameOpt = None,
           storage: StorageOpt = None, yes: YesOpt = False) -> None:
    """Delete a study and all its trials (asks first unless --yes)."""
    name = _one_name(ctx, name, study_opt)
    opened = open_storage(storage, create=False)
    study = open_study(opened, name)  # not load_study: a spec that no longer validates can still go
    if not yes:
        n = StudyCounts.of(study).total
        if not typer.confirm(f"delete study '{name}' and its {n} trials?", default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
    delete_study(opened, name)
    typer.echo(f"deleted study '{name}'")


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
