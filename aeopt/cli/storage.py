"""`aeopt storage proxy`: Optuna's gRPC storage proxy in front of a database."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from optuna.storages import run_grpc_proxy_server

from aeopt.cli.common import StorageOpt
from aeopt.search.storage import open_storage

storage_app = typer.Typer(help="Storage helpers.", no_args_is_help=True)
HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; other machines need a reachable one.")]
log = logging.getLogger("aeopt")


@storage_app.command("proxy")
def proxy(
    storage: StorageOpt = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 13000,
) -> None:
    """Serve the storage over gRPC so hundreds of workers share a few database connections.

    Workers then use --storage grpc://HOST:PORT. The proxy has no authentication: bind it to a
    private network only. Several proxies may serve one database (spread the workers over them).

    Example: aeopt storage proxy --storage postgresql://user@db/aeopt --host 0.0.0.0
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the gRPC proxy has no authentication; anyone who reaches this port can "
                    "read and change every study", host)
    backend = open_storage(storage)
    log.info("gRPC storage proxy for %s on %s:%d (workers: --storage grpc://%s:%d)", backend.display, host,
             port, host, port)
    # aeopt.search.proxy.serve (shared reads, measured faster) is not used yet: with it the killed-worker
    # fault test through the proxy never saw the worker's first report (see BENCHMARKS.md, Storage load).
    run_grpc_proxy_server(backend.optuna, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
