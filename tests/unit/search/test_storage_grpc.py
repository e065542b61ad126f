"""Opening a grpc:// storage: one line at once when no proxy answers there (Optuna's client only
connects on its first call); once opened, a proxy restart is waited out like any outage. Against a
real in-process proxy server, as `aeopt storage proxy` serves it."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from optuna.storages import RDBStorage

from aeopt.errors import StorageError
from aeopt.search.storage import open_storage

pytest.importorskip("grpc", reason="the gRPC proxy needs grpcio (pip install 'aeopt[grpc]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_proxy_at_the_address_is_one_line_at_once():
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        open_storage(f"grpc://127.0.0.1:{port}")
    msg = str(err.value)
    assert time.monotonic() - started < 5  # refused: no waiting out an outage that never began
    assert "\n" not in msg
    assert msg.startswith(f"cannot open storage grpc://127.0.0.1:{port}: no gRPC storage proxy answers at "
                          f"127.0.0.1:{port} (the connection failed")
    assert f"is `aeopt storage proxy` running there? start one with `aeopt storage proxy --storage " \
           f"DATABASE_URL --port {port}`" in msg


@pytest.mark.parametrize("url", ["grpc://user:hunter2@127.0.0.1:13000", "grpc://127.0.0.1:99999",
                                 "grpc://127.0.0.1:port", "grpc://127.0.0.1:1/db"])
def test_a_malformed_address_is_one_line(url):
    with pytest.raises(StorageError) as err:
        open_storage(url)
    msg = str(err.value)
    assert "expected grpc://HOST:PORT" in msg and "hunter2" not in msg and "\n" not in msg


def test_an_opened_proxys_restart_is_waited_out(tmp_path, monkeypatch):
    from aeopt.search.proxy import ProxyStorage
    from aeopt.search.proxy_grpc import make_server

    monkeypatch.setenv("AEOPT_OUTAGE_SECONDS", "60")
    port = _free_port()
    backend = ProxyStorage(RDBStorage(f"sqlite:///{tmp_path}/behind.db"))
    servers = [make_server(backend, "127.0.0.1", port, threads=2)]
    servers[0].start()
    try:
        storage = open_storage(f"grpc://127.0.0.1:{port}")
        servers[0].stop(0).wait()  # the proxy goes away before the storage's first call

        def restart() -> None:
            time.sleep(1.5)
            servers.append(make_server(backend, "127.0.0.1", port, threads=2))
            servers[-1].start()

        threading.Thread(target=restart, daemon=True).start()
        # Reached once (the probe when it was opened): the first call waits for the proxy to return.
        assert storage.optuna.get_all_studies() == []
        assert len(servers) == 2
    finally:
        for server in servers:
            server.stop(0)
