"""`aeopt dashboard`: optuna-dashboard on the study storage, with trial artifacts and spec notes."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from aeopt.cli.common import StorageOpt, artifact_folder
from aeopt.search.dashboard import serve
from aeopt.search.storage import open_storage

HostOpt = Annotated[str, typer.Option(
    "--host", envvar="AEOPT_DASHBOARD_HOST",
    help="Address to bind. Anything but localhost exposes a dashboard with no authentication that can "
         "delete studies.")]
PortOpt = Annotated[int, typer.Option("--port", "-p", envvar="AEOPT_DASHBOARD_PORT", min=0, max=65535,
                                      help="Port (0 picks a free one).")]
ArtifactsOpt = Annotated[Path | None, typer.Option(
    "--artifacts", envvar="AEOPT_ARTIFACTS", callback=artifact_folder,
    help="Artifact folder. Default: each study's own folder (set at `study create`) and the one beside a "
         "SQLite file.")]


def dashboard(
    storage: StorageOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Serve optuna-dashboard for every study in the storage until Ctrl-C.

    Trials show their uploaded reconstructions and the best trials their checkpoints; each study's
    note is its spec.

    Example: aeopt dashboard --storage sqlite:///studies/aeopt.db   (then open http://127.0.0.1:8080/)
    """
    # Ctrl-C / kill -INT stop the dashboard even when started in the background with `&`, where a
    # non-interactive shell starts it with SIGINT ignored.
    with contextlib.suppress(ValueError):  # not the main thread (a test calling it in-process)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    serve(open_storage(storage, create=False), host=host, port=port, artifacts=artifacts)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
