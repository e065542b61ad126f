"""Every command's `--help` reads as prose: no value metavar (`<bool>`) beside a flag, and no sentence
broken where its source line was hard-wrapped.

The check, precisely: help is rendered 1000 columns wide, so the terminal wraps nothing. For every
paragraph of help text in the source (a command's docstring, an option's help) whose lines are
hard-wrapped, the last word of each line and the first word of the next must appear on one rendered
line, separated by one space. A paragraph whose later lines are indented (examples aligned under each
other) is a layout and is left out, as are words with rich markup brackets in them.
"""

from __future__ import annotations

import inspect

import pytest
import typer

from aeopt import cli
from aeopt.cli.common import flowing, tidy_help


def _tree() -> typer.core.TyperGroup:
    """The click command tree as typer builds it, every command registered, help untouched."""
    cli._register([])
    return typer.main.get_command(cli.app)


def _paths(command, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = [(prefix, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _paths(sub, (*prefix, name))
    return found


def _wrapped_pairs(text: str | None, first_paragraph_only: bool = False) -> list[str]:
    """'last-word first-word' for each hard wrap inside a prose paragraph of `text`."""
    if not text:
        return []
    paragraphs = inspect.cleandoc(text).split("\n\n")
    pairs = []
    for paragraph in paragraphs[:1] if first_paragraph_only else paragraphs:
        lines = paragraph.split("\n")
        if paragraph.startswith("\b") or any(line[:1].isspace() for line in lines[1:]):
            continue
        for a, b in zip(lines, lines[1:], strict=False):
            if a.split() and b.split():
                pair = f"{a.split()[-1]} {b.split()[0]}"
                if "[" not in pair and "]" not in pair:
                    pairs.append(pair)
    return pairs


def _expected_pairs(command) -> list[str]:
    """What this command's --help shows of the source: its help, its options' help, and the first
    paragraph of each sub-command's help (the command list)."""
    pairs = _wrapped_pairs(command.help)
    for param in command.params:
        pairs += _wrapped_pairs(getattr(param, "help", None))
    for sub in getattr(command, "commands", {}).values():
        pairs += _wrapped_pairs(sub.short_help or sub.help, first_paragraph_only=True)
    return pairs


def _help(path: tuple[str, ...], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # rich reads it: nothing wraps at the terminal's edge
    capsys.readouterr()
    code = cli.main([*path, "--help"])
    out = capsys.readouterr().out
    assert code == 0, (path, out)
    return out


TREE = _tree()
PATHS = _paths(TREE)


def test_the_walk_finds_every_command_and_source_wraps_to_check():
    names = {" ".join(p) for p, _ in PATHS}
    assert {"", "report", "dashboard", "study", "study create", "worker", "train"} <= names
    assert len(names) >= 15
    # The check has something to bite on: the sources are hard-wrapped.
    assert sum(len(_expected_pairs(c)) for _, c in PATHS) > 10


@pytest.mark.parametrize("path", [p for p, _ in PATHS], ids=lambda p: " ".join(p) or "aeopt")
def test_help_has_no_flag_metavar_and_no_sentence_broken_mid_line(path, capsys, monkeypatch):
    command = dict(PATHS)[path]
    out = _help(path, capsys, monkeypatch)
    assert "<bool>" not in out and "BOOLEAN" not in out, out
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    broken = [pair for pair in _expected_pairs(command) if not any(pair in line for line in lines)]
    where = f"aeopt {' '.join(path)} --help"
    assert not broken, f"{where} breaks these source lines mid-sentence: {broken}\n{out}"


def test_flowing_joins_prose_and_keeps_layouts():
    text = """First line of a sentence
    that goes on.

    Examples: aeopt a
              aeopt b
    """
    assert flowing(text) == "First line of a sentence that goes on.\n\nExamples: aeopt a\n          aeopt b"
    assert flowing(None) is None and flowing("\b\nkeep\nthis") == "\b\nkeep\nthis"


def test_tidy_help_clears_flag_metavars_only():
    group = _tree()
    tidy_help(group)
    create = group.commands["study"].commands["create"]
    flags = [p for p in create.params if getattr(p, "is_flag", False)]
    values = [p for p in create.params if not getattr(p, "is_flag", False)]
    # A value option keeps its metavar: none, or its own such as --denoising's <mode>.
    assert flags and all(p.metavar == "" for p in flags) and all(p.metavar is None for p in values)
    report = {p.name: p for p in group.commands["report"].params}
    assert report["denoising"].metavar == "<mode>"
