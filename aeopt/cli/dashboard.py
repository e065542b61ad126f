"""`aeopt dashboard`: optuna-dashboard on the study storage, with trial artifacts and spec notes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aeopt.cli.common import StorageOpt


def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option("--host", envvar="AEOPT_DASHBOARD_HOST",
                                      help="Address to bind. Anything but localhost exposes a dashboard with no "
                                           "authentication that can delete studies.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", envvar="AEOPT_DASHBOARD_PORT", min=0, max=65535,
                                      help="Port (0 picks a free one).")] = 8080,
    artifacts: Annotated[Optional[Path], typer.Option("--artifacts", envvar="AEOPT_ARTIFACTS",
                                                      help="Artifact folder. Default: each study's own folder "
                                                           "(set at `study create`) and the one beside a SQLite file.")] = None,
) -> None:
    """Serve optuna-dashboard for every study in the storage until Ctrl-C.

    Trials show their uploaded reconstructions and the best trials their checkpoints; each study's note is its spec.

    Example: aeopt dashboard --storage sqlite:///studies/aeopt.db   (then open http://127.0.0.1:8080/)
    """
    from aeopt.search.dashboard import serve

    serve(storage, host=host, port=port, artifacts=artifacts)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
