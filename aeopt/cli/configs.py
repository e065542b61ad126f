"""`aeopt configs`: the run configs and study specs that ship with aeopt, by name."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aeopt.config.presets import KINDS, list_presets


def configs(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the shipped run configs and study specs: name, what it is, where the file lives.

    A name works in place of a path from any folder: `aeopt train conv_ae`, `aeopt study create conv_ae`
    (a file of that name in the current folder wins). Copy a file to change it.
    """
    presets = list_presets()
    if as_json:
        typer.echo(json.dumps([{"kind": p.kind.folder, "name": p.name, "description": p.description,
                                "path": str(p.path)} for p in presets], indent=2))
        return
    for kind in KINDS:
        shown = [p for p in presets if p.kind == kind]
        typer.echo(f"{kind.noun}s ({kind.command} NAME):")
        width = max((len(p.name) for p in shown), default=0)
        for p in shown:
            typer.echo(f"  {p.name:<{width}}  {p.description}")
            typer.echo(f"  {'':<{width}}  {p.path}")
        if not shown:
            typer.echo("  none in this install")
        typer.echo("")


def register(app: typer.Typer) -> None:
    app.command("configs")(configs)
