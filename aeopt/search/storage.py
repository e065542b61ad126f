"""Storage: the study storage, opened once at the CLI edge and passed down as one value.

`open_storage(url)` returns a `Storage`: the Optuna storage object, the URL it was opened with (kept
private to this module's callers that must start other processes) and `display`, the URL with any
password masked, for every log line, error and page. Supported URLs, each set up for many workers:

- sqlite:///path.db      embedded default; a busy timeout so a few local processes can share it
- postgresql://...       (or postgresql+psycopg://) many workers on many machines: small pre-pinged
                         pools, heartbeats, and the trial of a crashed worker is failed and re-run
- mysql+pymysql://...    any other SQLAlchemy URL goes to the same RDB storage
- journal:///path.log    (relative; //// for absolute) Optuna's journal file: several processes on one
                         machine, no server
- redis://host:port/db   Optuna's journal on Redis
- grpc://host:port       a gRPC storage proxy (`aeopt storage proxy`) in front of any of the above,
                         for more workers than the database has connections for (heartbeats
                         through a lease in the trials, as on journal storages); opened only once a
                         proxy answers there (search/proxy_probe.py)

Every storage comes wrapped in `aeopt.search.retry.RetryingStorage`: a database restart or a cut link
is waited out (up to AEOPT_OUTAGE_SECONDS, default 180) instead of killing the worker.
`open_storage(url, create=False)`, for commands that only read an existing study, refuses an SQLite
or journal file that does not exist, and a database without Optuna's tables (an empty one, another
program's), instead of creating them. A journal URL on a file that is no Optuna journal is refused
either way (the file is left as it is).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalRedisBackend

from aeopt.errors import AeoptError, StorageError
from aeopt.search.env import env_int
from aeopt.search.heartbeat import HeartbeatGrpcStorage, HeartbeatJournalStorage, heartbeat_enabled
from aeopt.search.proxy_probe import grpc_address, probe
from aeopt.search.retry import RetryingStorage, RetryPolicy, is_restarting, outage_seconds, reason
from aeopt.search.urls import comma_hosts, redact, scrub, unencoded_at

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///studies/aeopt.db"


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("AEOPT_STORAGE") or DEFAULT_URL


def kind(url: str) -> str:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return {"postgres": "postgresql"}.get(scheme, scheme)


def _heartbeat_settings() -> tuple[int, int]:
    # A worker records a heartbeat every `interval` s; a RUNNING trial silent for `grace` s is
    # failed (and re-run) by the next worker that asks for a trial. Env vars let tests go faster.
    interval = env_int("AEOPT_HEARTBEAT_INTERVAL") or 15
    grace = env_int("AEOPT_GRACE_PERIOD") or max(4 * interval, 2)
    return interval, grace


def _file_path(url: str) -> Path | None:
    """The file an SQLite or journal URL names (None for in-memory SQLite and server URLs)."""
    if url.startswith("journal://"):
        # Like SQLite URLs: journal:///rel/path.log is relative, journal:////abs/path.log absolute.
        return Path(url[len("journal:///"):] if url.startswith("journal:///") else url[len("journal://"):])
    if kind(url) == "sqlite":
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        return Path(path).expanduser() if path and path != ":memory:" else None
    return None


def _rdb(url: str, pool_size: int = 2, create: bool = True) -> BaseStorage:
    interval, grace = _heartbeat_settings()
    engine_kwargs: dict = {}
    if kind(url) == "sqlite":
        path = _file_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Wait up to a minute for another process's write lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        # Many workers x small pools: 2 is the least an Optuna RDB process can run with (the
        # heartbeat thread takes its own connection); pre-ping survives server restarts.
        # (`aeopt storage proxy` asks for one connection per gRPC handler thread instead.)
        engine_kwargs.update(pool_size=pool_size, max_overflow=3, pool_pre_ping=True, pool_recycle=1800)
        if kind(url) == "postgresql":
            # A link that goes silent (cut cable, dead host) is noticed within about a minute instead
            # of TCP's ~15: keepalives for idle pooled connections, a send timeout for busy ones;
            # the retrying storage then opens a new connection once the server answers again.
            engine_kwargs["connect_args"] = {
                "connect_timeout": 10, "application_name": "aeopt", "keepalives": 1, "keepalives_idle": 30,
                "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000}
    if not create:
        _check_optuna_tables(url, engine_kwargs)

    def build() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            # A reader creates nothing: Optuna's tables were found above (its schema version is still
            # checked: an older one is refused with Optuna's `optuna storage upgrade` hint, not migrated).
            skip_table_creation=not create,
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )

    for attempt in range(_TABLE_RACE_ATTEMPTS):
        try:
            rdb = build()
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Processes opening a new PostgreSQL database at once race to create Optuna's tables: the
            # losers' CREATE TABLE meets the winner's (a UniqueViolation on pg_type, a DuplicateTable, a
            # second version row). The tables are there by the time the loser asks again.
            if not create or attempt == _TABLE_RACE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    # What optuna.create_study / load_study would wrap an RDBStorage in themselves (they leave other
    # storages, such as the retrying wrapper, as they are): the cache of finished trials that keeps
    # a sampler's every ask from reading the whole study again.
    return optuna.storages._CachedStorage(rdb)


_TABLE_RACE_ATTEMPTS = 5  # tries at creating Optuna's tables while other processes create them too (_rdb)

# How Optuna starts every line of a journal file (JournalStorage._write_log: compact JSON, op_code first).
_JOURNAL_LINE = b'{"op_code":'
_SQLITE_HEADER = b"SQLite format 3\x00"


def _journal_line(line: bytes) -> bool:
    if line.startswith(_JOURNAL_LINE) and line.rstrip().endswith(b"}"):
        return True  # as Optuna writes every line: no need to parse it
    try:
        entry = json.loads(line)
    except ValueError:  # not JSON, or not text at all (UnicodeDecodeError)
        return False
    return isinstance(entry, dict) and "op_code" in entry


def _check_journal(url: str, path: Path, display: str) -> None:
    """Refuse an existing file that is not an Optuna journal, before Optuna appends its first entry
    to it (its reader skips a bad last line, so a one-line file of notes would open as an empty
    journal and get a study appended). An empty file is a new journal. A bad last line is what
    Optuna itself skips: a write torn by a crash, taken as such after journal lines, or alone when it
    begins as a journal line does (the first entry torn)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        if f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER:
            raise StorageError(f"{display}: not an Optuna journal file but an SQLite database; open it as "
                               f"sqlite:{url[len('journal:'):]}")
        f.seek(0)
        good = 0
        for number, line in enumerate(f, start=1):
            if line.endswith(b"\n") and _journal_line(line):
                good += 1
                continue
            last = not f.read(1)
            torn = good > 0 or line.startswith(_JOURNAL_LINE) or _JOURNAL_LINE.startswith(line)
            if last and torn:
                return
            raise StorageError(f"{display}: not an Optuna journal file (line {number} is no journal entry); "
                               "name a new file, or a journal that aeopt or Optuna wrote (this file was "
                               "left as it is)")


def _check_optuna_tables(url: str, engine_kwargs: dict) -> None:
    """Refuse a database without Optuna's tables (an empty one, another program's) before RDBStorage,
    which would create its 13 tables there. One connection, one catalog query; it fails as RDBStorage's
    would when the server is down (and _open says so)."""
    engine = sqlalchemy.create_engine(url, connect_args=engine_kwargs.get("connect_args", {}),
                                      poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    if not {"studies", "version_info"} <= tables:
        # The URL to paste, unless it holds a password (as studies.storage_flag).
        shown = shlex.quote(url) if redact(url) == url else "URL"
        raise StorageError(f"{redact(url)} holds no Optuna studies (a wrong database?); create one with "
                           f"`aeopt study create SPEC --storage {shown}`")


def _journal(backend: BaseJournalBackend) -> BaseStorage:
    # Journal storages get the same heartbeats as RDB ones, through aeopt's lease (search/heartbeat.py).
    interval, grace = _heartbeat_settings()
    return HeartbeatJournalStorage(
        backend, heartbeat_interval=interval, grace_period=grace,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def normalize(url: str) -> str:
    # psycopg (3) is the driver we ship; plain postgresql:// would ask SQLAlchemy for psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class Storage:
    """An opened study storage: the Optuna object, its URL and the URL as it may be shown."""

    optuna: BaseStorage
    url: str = field(repr=False)  # may hold a password: pass it only to child processes' environment
    display: str

    @property
    def kind(self) -> str:
        return kind(self.url)

    @property
    def single_machine(self) -> bool:
        """SQLite and journal files: several processes on one machine, not many machines."""
        return self.kind in ("sqlite", "journal")

    @property
    def heartbeat(self) -> bool:
        """Whether a dead worker's trial is detected, failed and re-run (RDB and journal storages)."""
        return heartbeat_enabled(self.optuna)

    def __str__(self) -> str:
        return self.display


def open_storage(url: str | None = None, *, create: bool = True, pool_size: int = 2) -> Storage:
    """Open the storage at `url` (else AEOPT_STORAGE, else the embedded SQLite default).

    `create=False` is for commands that read an existing study: an SQLite or journal file that does
    not exist, or a database without Optuna's tables, is an error, and nothing is created. Storage
    calls ride out outages (search/retry.py).
    `pool_size`: the connections an RDB storage keeps open (3 more in a burst)."""
    url = normalize(resolve_url(url))
    display = redact(url)
    path = _file_path(url)
    if not create and path is not None and not path.is_file():
        raise StorageError(f"no study storage at {display} (no file {path.absolute()}): create a study first "
                           "with `aeopt study create conv_ae`")
    policy = RetryPolicy(window=outage_seconds())
    inner = _open_waiting(url, policy, pool_size, create)
    # Every storage has been reached by now: an RDB storage connected when it was built, a journal
    # (file or Redis) was read to its end by Optuna's JournalStorage, and a gRPC proxy was probed
    # (_open). So a later refusal is an outage to wait out.
    retrying = RetryingStorage(inner, display=display, policy=policy, reached=True, url=url)
    return Storage(retrying, url, display)


def _open_waiting(url: str, policy: RetryPolicy, pool_size: int = 2, create: bool = True) -> BaseStorage:
    """`_open`, waiting out a server that says it is restarting (an RDB storage connects at once)."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return _open(url, pool_size, create)
        except _Transient as exc:
            left = started + policy.window - time.monotonic()
            if left <= 0:
                raise exc.storage_error from None
            if attempt == 0:
                log.warning("storage %s unreachable (%s); retrying for up to %g s", redact(url),
                            scrub(reason(exc.cause), url), policy.window)
            time.sleep(min(policy.delay(attempt), left))
            attempt += 1


class _Transient(Exception):
    def __init__(self, cause: BaseException, storage_error: StorageError):
        super().__init__(str(storage_error))
        self.cause = cause
        self.storage_error = storage_error


def _open(url: str, pool_size: int = 2, create: bool = True) -> BaseStorage:
    try:
        path = _file_path(url)
        if url.startswith("journal://"):
            assert path is not None
            _check_journal(url, path, redact(url))  # before Optuna's backend creates or appends anything
            path.parent.mkdir(parents=True, exist_ok=True)
            return _journal(JournalFileBackend(str(path)))
        if url.startswith("redis://"):
            return _journal(JournalRedisBackend(url))
        if url.startswith("grpc://"):
            host, port = grpc_address(url)
            probe(url, host, port)  # the client below connects only on its first call
            # The proxy forwards no heartbeats: the client keeps a lease, as on journal storages.
            interval, grace = _heartbeat_settings()
            return HeartbeatGrpcStorage(
                host=host, port=port, heartbeat_interval=interval, grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        return _rdb(url, pool_size, create)
    except AeoptError:  # already one line for the user (a bad setting, a missing file)
        raise
    except ModuleNotFoundError as exc:
        raise StorageError(f"storage {redact(url)} needs the Python package '{exc.name}'; "
                           "pip install it") from None
    except Exception as exc:
        # Scrubbed before it is cut short: a cut could leave the start of a password unmatched.
        text = str(exc).strip()
        reason_ = scrub(text.splitlines()[0], url)[:200] if text else type(exc).__name__
        hint = "; a password holding '@' must be written %40 in the URL" if unencoded_at(url) else ""
        if comma_hosts(url):
            hint += "; list several hosts as query parameters: postgresql://USER@/DB?host=h1:5432&host=h2:5432"
        error = StorageError(f"cannot open storage {redact(url)}: {reason_}; check the URL and that the "
                             f"server is running{hint}")
        if is_restarting(exc):
            raise _Transient(exc, error) from None
        raise error from None
