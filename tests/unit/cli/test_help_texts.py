"""What --help says: the choices an option takes, its default when it has one, what leaving it out does,
and examples that run where a user is (not only inside the checkout)."""

from __future__ import annotations

from aeopt import cli


def _help(path: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # rich reads it: nothing wraps at the terminal's edge
    capsys.readouterr()
    assert cli.main([*path, "--help"]) == 0
    return " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_finetune_mode_shows_its_choices(capsys, monkeypatch):
    out = _help(["finetune"], capsys, monkeypatch)
    assert "--mode full|frozen" in out and "<str>" not in out.split("--mode")[1][:40], out
