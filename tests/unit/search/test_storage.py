"""The storage value object: passwords masked in every form a URL can hold one, and the URL
itself kept only where a child process needs it."""

from __future__ import annotations

import optuna
import pytest

from aeopt.errors import StorageError
from aeopt.search.storage import Storage, open_storage, redact
from aeopt.search.urls import comma_hosts, scrub


@pytest.mark.parametrize("url,shown", [
    ("grpc://user:pw@host:13000", "grpc://user:***@host:13000"),
    ("postgresql://aeopt:secret@db.example:5432/aeopt", "postgresql://aeopt:***@db.example:5432/aeopt"),
    # An unencoded '@' and '/' in the password: everything up to the last '@' before the host is masked.
    ("postgresql://u:p@ss/w@rd@db.example:5432/aeopt", "postgresql://u:***@db.example:5432/aeopt"),
    ("mysql+pymysql://u:a:b@h/db", "mysql+pymysql://u:***@h/db"),
    ("postgresql://u:secret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    # A password in the query string.
    ("postgresql://u@db/x?password=secret&sslmode=require", "postgresql://u@db/x?password=***&sslmode=require"),
    ("postgresql://u@db/x?sslmode=require&PASSWORD=s3cr@t", "postgresql://u@db/x?sslmode=require&PASSWORD=***"),
    # libpq's multi-host list, no port, a unix socket folder in the query or percent-encoded as the host.
    ("postgresql://u:s3cret@10.0.0.1:5432,10.0.0.2:5432/db", "postgresql://u:***@10.0.0.1:5432,10.0.0.2:5432/db"),
    ("postgresql://u:s3cret@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:s3cret@/x?host=/tmp", "postgresql://u:***@/x?host=/tmp"),
    ("postgresql://u:s3cret@%2Ftmp/x", "postgresql://u:***@%2Ftmp/x"),
    ("postgresql://u:p@ss@/x?host=/var/run/postgresql", "postgresql://u:***@/x?host=/var/run/postgresql"),
    ("postgresql://u:p%40ss@db/x", "postgresql://u:***@db/x"),
    # Nothing after any '@' reads as a host: all up to the last '@' is masked, user name too.
    ("postgresql://u:s3cret@h1 h2/db", "postgresql://***@h1 h2/db"),
    ("postgresql://u:s3c@ret@h1;h2/db", "postgresql://***@h1;h2/db"),
])
def test_passwords_are_masked(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url", [
    "sqlite:///data/a@b/x.db",  # an '@' in a path is not a user
    "sqlite:////abs/p@x/y.db",
    "journal:////abs/p@x.log",
    "postgresql://alice@db:5432/x",  # a user name alone is not a secret
    "grpc://host:13000",
    "not a url",
])
def test_urls_without_a_password_are_unchanged(url):
    assert redact(url) == url


def test_open_storage_keeps_the_url_private_and_shows_it_masked(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/a@b.db")
    assert isinstance(storage.optuna.inner._backend, optuna.storages.RDBStorage)
    assert storage.kind == "sqlite" and storage.single_machine and storage.heartbeat
    assert storage.display == storage.url == f"sqlite:///{tmp_path}/a@b.db"
    assert "url" not in repr(storage)  # the raw URL is left out of repr (it may hold a password)
    assert str(storage) == storage.display


def test_kind_ignores_the_driver_and_heartbeats_come_from_rdb_storages():
    url = "postgresql+psycopg://u:pw@h/db"
    storage = Storage(optuna.storages.InMemoryStorage(), url, redact(url))
    assert storage.kind == "postgresql" and not storage.single_machine
    assert not storage.heartbeat  # an in-memory (or journal) storage records no heartbeats
    assert "pw" not in repr(storage) and "pw" not in str(storage)


def test_a_failed_open_names_the_storage_without_its_password():
    with pytest.raises(StorageError) as err:
        open_storage("postgresql://user:hunter2@127.0.0.1:1/nodb")  # nothing listens on port 1
    msg = str(err.value)
    assert "hunter2" not in msg and "postgresql+psycopg://user:***@127.0.0.1:1/nodb" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("url,hidden", [
    # The driver ends the password at the first '@' and names the rest in its error, as a host.
    ("postgresql://postgres:pa@SECRETHALF@127.0.0.1:5432/db", "SECRETHALF"),
    # A comma-separated host list: no host matched the old pattern, and the URL was shown whole.
    ("postgresql://postgres:s3cret@127.0.0.1:5432,127.0.0.2:5432/postgres", "s3cret"),
    ("postgresql://postgres:s3%40cret@127.0.0.1:1,127.0.0.2:1/postgres", "cret"),
])
def test_a_failed_open_shows_no_part_of_the_password(url, hidden):
    with pytest.raises(StorageError) as err:
        open_storage(url)
    msg = str(err.value)
    assert hidden not in msg and "\n" not in msg
    assert msg.startswith("cannot open storage postgresql+psycopg://")


def test_a_comma_host_list_is_answered_with_the_form_sqlalchemy_takes():
    # SQLAlchemy reads "h1:5432,h2:5432" as one host whose port is "5432,h2:5432" (its error: "invalid
    # literal for int()"); the form it takes works, with the first host down and the second up.
    with pytest.raises(StorageError) as err:
        open_storage("postgresql://postgres:s3cret@127.0.0.1:1,127.0.0.2:1/postgres")
    assert "?host=h1:5432&host=h2:5432" in str(err.value) and "s3cret" not in str(err.value)
    assert not comma_hosts("postgresql://u:p,w@h/db")  # a ',' in the password is no host list
    assert not comma_hosts("postgresql://u@/db?host=a:1,b:2") and not comma_hosts("sqlite:///a,b.db")
    assert comma_hosts("postgresql://a:1,b:2/db")


def test_scrub_masks_every_form_of_the_password_in_a_drivers_message():
    url = "postgresql://u:ab%40cd@ef@h:5432/db"  # password 'ab%40cd@ef': URL-decoded 'ab@cd@ef'
    said = f"failed to resolve host 'ef@h'; password ab@cd@ef, cd, ab%40cd; url {url}"
    shown = scrub(said, url)
    assert shown == "failed to resolve host '***@h'; password ***, ***, ***; url postgresql://u:***@h:5432/db"
    assert scrub("connection refused", "sqlite:///a@b.db") == "connection refused"
    # A short piece is masked where it stands alone, not inside a word of the message.
    said = "password failed; host 'pa@db'"
    assert scrub(said, "postgresql://u:x@pa@db/x") == "password failed; host '***@db'"


def test_default_is_aeopt_storage_then_the_embedded_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_storage().url == "sqlite:///studies/aeopt.db"
    assert (tmp_path / "studies").is_dir()
    monkeypatch.setenv("AEOPT_STORAGE", f"journal:///{tmp_path}/j.log")
    storage = open_storage()
    assert storage.kind == "journal" and storage.single_machine and storage.heartbeat


def test_a_bad_heartbeat_setting_names_the_variable_and_creates_nothing(tmp_path, monkeypatch):
    from aeopt.errors import ConfigError

    monkeypatch.setenv("AEOPT_HEARTBEAT_INTERVAL", "abc")
    with pytest.raises(ConfigError, match="AEOPT_HEARTBEAT_INTERVAL='abc' is not a whole number"):
        open_storage(f"sqlite:///{tmp_path}/x.db")
    assert not (tmp_path / "x.db").exists()


def _sqlite_file(path) -> bytes:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x)")
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("content,says", [
    (b"some notes", "line 1 is no journal entry"),  # one line, no newline: Optuna skips it as a torn write
    (b"some notes\n", "line 1 is no journal entry"),
    (b'{"a": 1}\n{"b": 2}\n', "line 1 is no journal entry"),
    (b'[1, 2]\n', "line 1 is no journal entry"),
    (b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\nnotes\nmore notes\n',
     "line 2 is no journal entry"),
    (bytes(range(256)), "line 1 is no journal entry"),
    (None, "not an Optuna journal file but an SQLite database; open it as sqlite:///"),
])
@pytest.mark.parametrize("create", [True, False])
def test_a_journal_url_on_a_file_of_another_kind_leaves_it_untouched(content, says, create, tmp_path):
    path = tmp_path / "notes.txt"
    content = _sqlite_file(path) if content is None else content
    path.write_bytes(content)
    url = f"journal:///{path}"
    with pytest.raises(StorageError) as caught:
        open_storage(url, create=create)
    message = str(caught.value)
    assert message.startswith(f"{url}: not an Optuna journal file") and says in message, message
    assert "\n" not in message
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_journal_torn_by_a_crash_mid_write_still_opens(tmp_path):
    path = tmp_path / "j.log"
    storage = open_storage(f"journal:///{path}")
    optuna.create_study(storage=storage.optuna, study_name="s").optimize(lambda t: 1.0, n_trials=1)
    with path.open("ab") as f:  # a worker killed mid-append: half an entry, no newline
        f.write(b'{"op_code":4,"worker_id":"w","study_id":0,"dat')
    names = [s.study_name for s in open_storage(f"journal:///{path}", create=False).optuna.get_all_studies()]
    assert names == ["s"]
    first = tmp_path / "first.log"  # the very first entry torn: nothing but the start of a journal line
    for torn in (b'{"op_code":0,"worker_id":"w","stu', b'{"op'):
        first.write_bytes(torn)
        assert open_storage(f"journal:///{first}", create=False).optuna.get_all_studies() == []
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert open_storage(f"journal:///{empty}").optuna.get_all_studies() == []


@pytest.fixture
def empty_pg_url(pg_server_url):
    """A PostgreSQL database of this test's own, created empty on the session's server and dropped after."""
    import uuid

    import psycopg
    import sqlalchemy

    server = sqlalchemy.engine.make_url(pg_server_url)
    name = f"aeopt_test_empty_{uuid.uuid4().hex[:8]}"
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tables(url: str) -> set[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_reader_on_a_database_without_optuna_tables_creates_none(empty_pg_url, tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:  # another program's SQLite file
        db.execute("CREATE TABLE notes (x)")
    db.close()
    for url in (empty_pg_url, f"sqlite:///{other}"):
        before = _tables(url)
        with pytest.raises(StorageError) as caught:
            open_storage(url, create=False)
        # No password in these URLs: the command to run next names the storage to paste as it is.
        assert str(caught.value) == (f"{redact(url)} holds no Optuna studies (a wrong database?); create one "
                                     f"with `aeopt study create SPEC --storage {url}`")
        assert _tables(url) == before  # nothing created
        # `aeopt study create` (create=True) still sets the database up, and then readers open it.
        open_storage(url).optuna.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
        assert {"studies", "trials", "version_info", "alembic_version"} <= _tables(url)
        assert [s.study_name for s in open_storage(url, create=False).optuna.get_all_studies()] == ["s"]
