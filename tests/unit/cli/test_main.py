"""The `aeopt` entry point: which module each command lives in, that a command imports only its own
module (start-up time), and that user errors are one line with no traceback and no password."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer

from aeopt.cli import COMMANDS, command_of
from aeopt.search.storage import open_storage
from tests.conftest import run_cli


@pytest.mark.parametrize("argv,name", [
    ([], None),
    (["--help"], None),
    (["study", "list"], "study"),
    (["--debug", "-q", "worker", "--study", "x"], "worker"),
    (["-q", "compare", "a", "b"], "compare"),
])
def test_command_of(argv, name):
    assert command_of(argv) == name


def _names(module: str) -> set[str]:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, as the real app is
        pass

    importlib.import_module(f"aeopt.cli.{module}").register(app)
    return {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}


def test_every_command_is_registered_by_the_module_the_table_names():
    for module in dict.fromkeys(COMMANDS.values()):
        assert _names(module) == {name for name, m in COMMANDS.items() if m == module}, module


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for name in COMMANDS:
        assert f" {name} " in r.stdout, name


def test_a_study_command_imports_neither_torch_nor_the_dashboard(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/s.db")  # an empty storage: `study list` creates none
    code = ("import sys; from aeopt.cli import main; "
            f"code = main(['study', 'list', '--storage', 'sqlite:///{tmp_path}/s.db']); "
            "print(code, sorted(m for m in ('torch', 'optuna_dashboard', 'plotly') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    expected = ["no studies yet: aeopt study create conv_ae", "0 []"]
    assert r.stdout.splitlines() == expected, r.stderr


def test_user_errors_are_one_line_without_the_password(tmp_path):
    r = run_cli("study", "list", "--storage", "postgresql://user:hunter2@127.0.0.1:1/nodb", cwd=tmp_path)
    assert r.returncode == 2 and "hunter2" not in r.stderr + r.stdout
    assert r.stderr.startswith("error: cannot open storage postgresql+psycopg://user:***@127.0.0.1:1/nodb")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("study", "show", "nope", "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert r.returncode == 2
    db = f"{tmp_path}/s.db"
    assert r.stderr.strip() == (f"error: no study storage at sqlite:///{db} (no file {db}): "
                                "create a study first with `aeopt study create conv_ae`")
    assert not (tmp_path / "s.db").exists()  # a read-only command creates no storage
    open_storage(f"sqlite:///{tmp_path}/s.db")
    r = run_cli("study", "show", "nope", "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: no study named 'nope' in sqlite:///{tmp_path}/s.db (there are none: "
                                "run `aeopt study create SPEC.yaml`)")


def test_the_log_handler_writes_to_the_stderr_of_the_moment(monkeypatch):
    import io
    import logging

    from aeopt.cli import StderrHandler

    handler = StderrHandler()
    log = logging.getLogger("aeopt.test_stderr_handler")
    log.addHandler(handler)
    log.propagate = False
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        log.warning("one")
        first.close()  # as a test's capture is closed after it
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        log.warning("two")  # raised "I/O operation on closed file" with a handler bound to `first`
        assert second.getvalue() == "two\n"
    finally:
        log.removeHandler(handler)
