"""A grpc:// storage URL checked when it is opened: its address parsed, and a proxy found there.

Optuna's gRPC client connects on its first call, whose error would surface as a traceback from
whatever command made it; the retrying storage (search/retry.py) waits out only a proxy that it has
reached once. So `open_storage` probes once, here, and a missing proxy is one line.
"""

from __future__ import annotations

import queue
import re
import time

from aeopt.errors import StorageError
from aeopt.search.urls import redact

# How long opening waits for the proxy to accept the connection, then to answer one call (a refused
# or unresolvable address fails at once); as PostgreSQL's connect_timeout in storage._rdb.
CONNECT_SECONDS = 10.0
DEFAULT_PORT = 13000
_ADDRESS = re.compile(r"grpc://(\[[0-9A-Fa-f:.%]+\]|[A-Za-z0-9._\-]*)(?::(\d{1,5}))?/?")


def grpc_address(url: str) -> tuple[str, int]:
    """(host, port) of grpc://HOST:PORT; one line for anything else (a user or password included:
    the proxy has no authentication)."""
    match = _ADDRESS.fullmatch(url)
    port = int(match.group(2) or DEFAULT_PORT) if match else 0
    if not match or not 0 < port < 65536:
        raise StorageError(f"storage {redact(url)}: expected grpc://HOST:PORT, the address of an "
                           "`aeopt storage proxy` (it takes no user or password)")
    return match.group(1) or "localhost", port


def probe(url: str, host: str, port: int) -> None:
    """Return when an Optuna storage proxy answers at host:port; else one line saying what to do.

    On a throwaway channel, so that the client's own starts fresh. A proxy that accepts the call but
    is slow to answer it (waiting out its own database) passes: that is an outage, not a wrong URL."""
    import grpc  # noqa: PLC0415 (optional, 'aeopt[grpc]': a ModuleNotFoundError is one line in open_storage)

    where = f"cannot open storage {redact(url)}: "
    todo = (f"; is `aeopt storage proxy` running there? start one with `aeopt storage proxy "
            f"--storage DATABASE_URL --port {port}`, or fix the address")
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        why = _connect(grpc, channel)
        if why:
            raise StorageError(f"{where}no gRPC storage proxy answers at {host}:{port} ({why}){todo}")
        # Optuna's generated stub (a private module, as in search/proxy_grpc.py): any cheap call.
        from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc  # noqa: PLC0415

        request = api_pb2.GetStudyIdFromNameRequest(study_name="aeopt:probe")
        try:
            api_pb2_grpc.StorageServiceStub(channel).GetStudyIdFromName(request, timeout=CONNECT_SECONDS)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
                details = (exc.details() or code.name).splitlines()[0][:160]
                raise StorageError(f"{where}{host}:{port} does not answer as a gRPC storage proxy "
                                   f"({details}){todo}") from None
            # NOT_FOUND (no study of that name), a deadline, an error of the proxy's database: a proxy.


def _connect(grpc, channel) -> str | None:
    """None once `channel` is connected, else why not (refused, unresolvable, no answer in time)."""
    states: queue.Queue = queue.Queue()
    channel.subscribe(states.put, try_to_connect=True)
    deadline = time.monotonic() + CONNECT_SECONDS
    try:
        while True:
            state = states.get(timeout=max(0.0, deadline - time.monotonic()))
            if state == grpc.ChannelConnectivity.READY:
                return None
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                return "the connection failed: refused, a host name that does not resolve, or no gRPC there"
    except queue.Empty:
        return f"no answer within {CONNECT_SECONDS:g} s"
    finally:
        channel.unsubscribe(states.put)
