"""open_storage(url): every study storage aeopt supports, each set up for many workers.

- sqlite:///path.db      embedded default; a busy timeout so a few local processes can share it
- postgresql://...       (or postgresql+psycopg://) many workers on many machines: small pre-pinged
                         pools, heartbeats, and the trial of a crashed worker is failed and re-run
- mysql+pymysql://...    any other SQLAlchemy URL goes to the same RDB storage
- journal:///path.log    (relative; //// for absolute) Optuna's journal file: several processes on one machine, no server
- redis://host:port/db   Optuna's journal on Redis
- grpc://host:port       a gRPC storage proxy (`aeopt storage proxy`) in front of any of the above,
                         for hundreds of workers that should not each hold database connections
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from aeopt.errors import StorageError

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///studies/aeopt.db"


def default_storage_url() -> str:
    return DEFAULT_URL


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("AEOPT_STORAGE") or DEFAULT_URL


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        return u.render_as_string(hide_password=True) if u.password else url
    except Exception:
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return url


def kind(url: str) -> str:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return {"postgres": "postgresql"}.get(scheme, scheme)


def _heartbeat_settings() -> tuple[int, int]:
    # A worker records a heartbeat every `interval` s; a RUNNING trial silent for `grace` s is
    # failed (and re-run) by the next worker that asks for a trial. Env vars let tests go faster.
    interval = int(os.environ.get("AEOPT_HEARTBEAT_INTERVAL", "15"))
    grace = int(os.environ.get("AEOPT_GRACE_PERIOD", str(max(4 * interval, 2))))
    return interval, grace


def _rdb(url: str) -> BaseStorage:
    interval, grace = _heartbeat_settings()
    engine_kwargs: dict = {}
    if kind(url) == "sqlite":
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Wait up to a minute for another process's write lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        # Many workers x small pools: 2 is the least an Optuna RDB process can run with (the
        # heartbeat thread takes its own connection); pre-ping survives server restarts.
        engine_kwargs.update(pool_size=2, max_overflow=3, pool_pre_ping=True, pool_recycle=1800)
        if kind(url) == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10, "application_name": "aeopt"}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=interval,
        grace_period=grace,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def normalize(url: str) -> str:
    # psycopg (3) is the driver we ship; plain postgresql:// would ask SQLAlchemy for psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_storage(url: str | None = None) -> BaseStorage:
    url = normalize(resolve_url(url))
    try:
        if url.startswith("journal://"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            # Like SQLite URLs: journal:///rel/path.log is relative, journal:////abs/path.log absolute.
            path = Path(url[len("journal:///"):] if url.startswith("journal:///") else url[len("journal://"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("redis://"):
            from optuna.storages.journal import JournalRedisBackend, JournalStorage

            return JournalStorage(JournalRedisBackend(url))
        if url.startswith("grpc://"):
            host, _, port = url[len("grpc://"):].rstrip("/").partition(":")
            return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port or 13000))
        return _rdb(url)
    except StorageError:
        raise
    except ModuleNotFoundError as exc:
        raise StorageError(f"storage {redact(url)} needs the Python package '{exc.name}'; pip install it") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        reason = reason.replace(url, redact(url))
        raise StorageError(f"cannot open storage {redact(url)}: {reason}; check the URL and that the server is running") from None


def supports_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage)


def is_single_machine(url: str | None) -> bool:
    return kind(normalize(resolve_url(url))) in ("sqlite", "journal")
