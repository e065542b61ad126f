"""`aeopt storage proxy`: Optuna's gRPC storage proxy in front of a database."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from aeopt.cli.common import StorageOpt
from aeopt.search.proxy import DEFAULT_THREADS, proxy_storage
from aeopt.search.storage import open_storage

storage_app = typer.Typer(help="Storage helpers.", no_args_is_help=True)
HostOpt = Annotated[str, typer.Option("--host", help="Address to bind; other machines need a reachable one.")]
log = logging.getLogger("aeopt")


@storage_app.command("proxy")
def proxy(
    storage: StorageOpt = None,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port to listen on; 0 picks a free one (the log line names it).")
                    ] = 13000,
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
    # grpcio is an optional dependency ('aeopt[grpc]'): imported only when a proxy starts.
    from aeopt.search.proxy_grpc import bind, serve_on  # noqa: PLC0415

    # Bound before the storage opens: a port in use then leaves no new database file behind.
    server = bind(host, port, threads)
    try:
        backend = open_storage(storage, pool_size=threads)
        serve_on(server, proxy_storage(backend))
    except BaseException:
        server.stop(None)
        raise
    # The port the server got (port 0 asks for a free one), so the workers' URL is one that answers.
    log.info("gRPC storage proxy for %s on %s:%d (workers: --storage grpc://%s:%d)", backend.display, host,
             server.port, host, server.port)
    server.start()
    server.wait_for_termination()


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
