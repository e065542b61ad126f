"""`aeopt study create|list|show|delete`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from aeopt.cli.common import SetOpt, StorageOpt

study_app = typer.Typer(help="Create, list, inspect and delete studies in a storage.", no_args_is_help=True)


@study_app.command("create")
def create(
    spec: Annotated[Path, typer.Argument(help="Study spec YAML (studies/conv_ae.yaml, ...).")],
    storage: StorageOpt = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", "-n", help="Name (default: the spec's `name`).")] = None,
    skip_if_exists: Annotated[bool, typer.Option("--skip-if-exists", help="Reuse an existing study of that name.")] = False,
    set_: SetOpt = None,
    artifacts: Annotated[Optional[str], typer.Option("--artifacts", envvar="AEOPT_ARTIFACTS",
                                                     help="Folder for trial artifacts (PNGs, best checkpoint).")] = None,
) -> None:
    """Validate SPEC and create the study; the spec is stored inside it.

    A worker anywhere then needs only --storage and --study.

    Example: aeopt study create studies/conv_ae.yaml --set data.train_subset=12000
    """
    from aeopt.config import load_study_spec
    from aeopt.search.storage import redact, resolve_url
    from aeopt.search.studies import create_study

    spec_obj = load_study_spec(spec, set_ or [])
    if artifacts is None:
        try:
            from aeopt.search.artifacts import default_artifact_dir

            artifacts = str(default_artifact_dir(resolve_url(storage)))
        except ImportError:
            artifacts = None
    study = create_study(spec_obj, storage, study_name or spec_obj.name or spec.stem, skip_if_exists=skip_if_exists,
                         artifacts=artifacts)
    typer.echo(f"study '{study.study_name}' ready in {redact(resolve_url(storage))}")
    typer.echo(f"run workers with: aeopt worker --study {study.study_name} --n-trials 50"
               + ("" if storage is None else " --storage URL"))


@study_app.command("list")
def list_(storage: StorageOpt = None, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List the studies in the storage with trial counts and best values."""
    from aeopt.search.studies import list_studies

    rows = list_studies(storage)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no studies yet: aeopt study create studies/conv_ae.yaml")
        return
    typer.echo(f"{'study':<28} {'model':<13} {'complete':>8} {'pruned':>7} {'failed':>7} {'running':>8}  best")
    for r in rows:
        best = f"{r.best_value:.5g} (trial {r.best_trial})" if r.best_value is not None else "-"
        c = r.counts
        typer.echo(f"{r.name:<28} {r.model:<13} {c['COMPLETE']:>8} {c['PRUNED']:>7} {c['FAIL']:>7} {c['RUNNING']:>8}  {best}")


@study_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Study name.")], storage: StorageOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Counts by state, the best value and its parameters."""
    from aeopt.search.studies import load_study, summarize

    study, spec = load_study(storage, name)
    s = summarize(study)
    if as_json:
        typer.echo(json.dumps(s.as_dict(), indent=2))
        return
    typer.echo(f"study {s.name}: {spec.model.kind} on {spec.data.dataset}, {spec.cv.folds}-fold CV, "
               f"sampler {spec.sampler.name}, pruner {spec.pruner.name}")
    typer.echo("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in s.counts.items() if v) if s.n_trials else "trials: none yet")
    if s.best_value is None:
        typer.echo(f"no complete trial yet: aeopt worker --study {name}")
        return
    best = study.best_trial
    typer.echo(f"best: trial {s.best_trial}, mean CV loss {s.best_value:.6g} +- {best.user_attrs.get('cv_std', 0):.2g}")
    for k, v in s.best_params.items():
        typer.echo(f"  {k} = {v}")


@study_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Study name.")], storage: StorageOpt = None,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False) -> None:
    """Delete a study and all its trials (asks first unless --yes)."""
    from aeopt.search.studies import delete_study, load_study

    study, _ = load_study(storage, name)
    if not yes:
        n = len(study.get_trials(deepcopy=False))
        if not typer.confirm(f"delete study '{name}' and its {n} trials?", default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
    delete_study(storage, name)
    typer.echo(f"deleted study '{name}'")


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
