"""The storage value object: passwords masked in every form a URL can hold one, and the URL
itself kept only where a child process needs it."""

from __future__ import annotations

import optuna
import pytest

from aeopt.errors import StorageError
from aeopt.search.storage import Storage, open_storage, redact


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
