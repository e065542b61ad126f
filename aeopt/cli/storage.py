"""`aeopt storage proxy`: Optuna's gRPC storage proxy in front of a database."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from aeopt.cli.common import StorageOpt
from aeopt.search.proxy import DEFAULT_THREADS, proxy_storage, serve
from aeopt.search.storage import open_storage

storage_app = typer.Typer(help="Storage helpers.", no_args_is_help=True)
HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; other machines need a reachable one.")]
log = logging.getLogger("aeopt")


@storage_app.command("proxy")
def proxy(
    storage: StorageOpt = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 13000,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, max=64,
        help="Requests served at once; the proxy holds as many database connections (+3 in a burst).")
    ] = DEFAULT_THREADS,
) -> None:
    """Serve the storage over gRPC so hundreds of workers share a few database connections.

    Workers then use --storage grpc://HOST:PORT. The proxy has no authentication: bind it to a
    private network only. Several proxies may serve one database (spread the workers over them).

    Example: aeopt storage proxy --storage postgresql://user@db/aeopt --host 0.0.0.0
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the gRPC proxy has no authentication; anyone who reaches this port can "
                    "read and change every study", host)
    backend = open_storage(storage, pool_size=threads)
    log.info("gRPC storage proxy for %s on %s:%d (workers: --storage grpc://%s:%d)", backend.display, host,
             port, host, port)
    serve(proxy_storage(backend), host, port, threads)


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
