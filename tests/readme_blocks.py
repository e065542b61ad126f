"""README.md's ```bash blocks as runnable scripts, shortened by the README's own markers.

A block may follow an HTML comment `<!-- readme-test: ... -->` (blank lines between are allowed;
directives one per line or separated by ` ;; `):

    skip: REASON                    the whole block is not run; REASON is printed
    skip PREFIX: REASON             commands starting with PREFIX are not run
    add PREFIX: ARGS                ARGS appended to each command starting with PREFIX (a later
                                    option wins, so `--n-trials 2` shortens `--n-trials 50`)
    replace OLD => NEW              text replaced in the block (placeholders such as cuda:0)
    serve PREFIX: URL               commands starting with PREFIX run until URL answers, then stop
    timeout: SECONDS                the block's limit (default 600)
    # TEXT                          a note for the reader (why a replace or an add is there)

In ARGS, NEW and URL, `{port}` is a free local port (one per block) and `{dataset}` the dataset
the test runs on. Besides the markers, one rule applies to every block: `--data-dir ../shared/data`
becomes AEOPT_DATA_DIR when that is set, and otherwise is dropped, `--set data.dataset=digits`
taking its place on commands that take `--set` (the quickstart falls back to digits itself).
Anything that names a GPU, another machine or a placeholder (`cuda`, `db.example`, `...`,
`[--option]`) must be handled by a marker: `unhandled()` lists what is left.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"<!--\s*readme-test:(.*?)-->", re.S)
DEFAULT_TIMEOUT = 600.0  # a safety net: a loaded 2-core machine runs blocks many times slower
# Subcommands that take --set, for the ../shared/data rule.
TAKES_SET = ("aeopt train", "aeopt study create", "aeopt finetune", "aeopt baseline")
# What a runnable command may not contain once the markers are applied.
UNHANDLED = (
    (re.compile(r"cuda"), "names a GPU"),
    (re.compile(r"\.example\b"), "names another machine"),
    (re.compile(r"(?<![\w/])\.\.\.(?![\w/])"), "has a '...' placeholder"),
    (re.compile(r"\s\[--"), "has [optional] arguments (a synopsis)"),
    (re.compile(r"\.\./shared/"), "names ../shared outside --data-dir"),
)


class MarkerError(ValueError):
    """A readme-test marker that cannot be read."""


@dataclass
class Markers:
    skip: str | None = None
    skip_commands: list[tuple[str, str]] = field(default_factory=list)
    add: list[tuple[str, str]] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    serve: list[tuple[str, str]] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Block:
    line: int  # README line of the opening fence
    heading: str  # the section it sits in
    text: str
    markers: Markers

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")

    @property
    def name(self) -> str:
        return f"L{self.line}-{self.slug}"


def block_ids(blocks: list[Block]) -> list[str]:
    """Ids that survive edits elsewhere in the README: the section and the block's rank in it."""
    seen: dict[str, int] = {}
    ids = []
    for b in blocks:
        seen[b.slug] = seen.get(b.slug, 0) + 1
        ids.append(f"{b.slug}-{seen[b.slug]}")
    return ids


def _prefix_directive(body: str, kind: str) -> tuple[str, str]:
    prefix, sep, rest = body.partition(":")
    if not sep or not prefix.strip() or not rest.strip():
        raise MarkerError(f"'{kind} {body}': expected '{kind} PREFIX: VALUE'")
    return prefix.strip(), rest.strip()


def parse_markers(text: str) -> Markers:
    m = Markers()
    directives = [d.strip() for line in text.splitlines() for d in line.split(" ;; ")]
    for d in directives:
        if not d or d.startswith("#"):
            continue
        kind, _, body = d.partition(" ")
        if d.startswith("skip:"):
            m.skip = d.removeprefix("skip:").strip() or None
            if m.skip is None:
                raise MarkerError("'skip:' needs a reason")
        elif d.startswith("timeout:"):
            m.timeout = float(d.removeprefix("timeout:"))
        elif kind == "skip":
            m.skip_commands.append(_prefix_directive(body, kind))
        elif kind == "add":
            m.add.append(_prefix_directive(body, kind))
        elif kind == "serve":
            m.serve.append(_prefix_directive(body, kind))
        elif kind == "replace" and " => " in body:
            old, new = body.split(" => ", 1)
            m.replace.append((old.strip(), new.strip()))
        else:
            raise MarkerError(f"unknown readme-test directive '{d}'")
    return m


def bash_blocks(readme: Path) -> list[Block]:
    """Every ```bash block with its heading and the marker right before it (if any)."""
    lines = readme.read_text().splitlines()
    blocks, heading, pending, i = [], "", None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading, pending = line.lstrip("#").strip(), None
        elif line.startswith("<!--") and "readme-test:" in line:
            end = i
            while "-->" not in lines[end]:
                end += 1
            pending = parse_markers(MARKER.search("\n".join(lines[i:end + 1])).group(1))
            i = end
        elif line.startswith("```"):
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            if line.strip() == "```bash":
                blocks.append(Block(i + 1, heading, "\n".join(lines[i + 1:end]), pending or Markers()))
            pending, i = None, end
        elif line.strip():
            pending = None  # a marker applies only to the block directly after it
        i += 1
    return blocks


def _strip_comment(line: str) -> str:
    """A command line without its trailing `# comment` (not one inside quotes)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def commands(text: str) -> list[str]:
    """The block's commands: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [c for c in (_strip_comment(line).strip() for line in joined.splitlines()) if c]


@dataclass
class Step:
    command: str
    skip: str | None = None  # the marker's reason
    serve: str | None = None  # the URL to wait for


def _data_rule(segment: str, data_dir: str | None) -> str:
    if "../shared/data" not in segment:
        return segment
    if data_dir:
        return segment.replace("../shared/data", shlex.quote(data_dir))
    segment = re.sub(r"\s--data-dir\s+\.\./shared/data\b", "", segment)
    if segment.startswith(TAKES_SET):
        segment += " --set data.dataset=digits"
    return segment


def _segment(segment: str, m: Markers, data_dir: str | None, subs: dict[str, str]) -> str:
    segment = _data_rule(segment.strip(), data_dir)
    for prefix, args in m.add:
        if segment.startswith(prefix):
            segment += " " + args.format(**subs)
    return segment


def steps(block: Block, data_dir: str | None, port: int) -> list[Step]:
    """The block's commands as they will run, with the markers and the data rule applied."""
    m = block.markers
    subs = {"port": str(port), "dataset": "fashion_mnist" if data_dir else "digits"}
    text = block.text
    for old, new in m.replace:
        if old not in text:
            raise MarkerError(f"{block.name}: 'replace {old} => ...' matches nothing in the block")
        text = text.replace(old, new.format(**subs))
    out = []
    for cmd in commands(text):
        # `a && b`: each part is a command for the markers.
        cmd = " && ".join(_segment(s, m, data_dir, subs) for s in cmd.split(" && "))
        step = Step(cmd)
        for prefix, reason in m.skip_commands:
            if cmd.startswith(prefix):
                step.skip = reason
        for prefix, url in m.serve:
            if cmd.startswith(prefix):
                step.serve = url.format(**subs)
        out.append(step)
    return out


def unhandled(block: Block) -> list[str]:
    """What a runnable block still names that the test cannot run as written."""
    if block.markers.skip:
        return []
    problems = []
    for step in steps(block, data_dir=None, port=0):
        if step.skip:
            continue
        problems += [f"{block.name}: '{step.command}' {why}"
                     for rx, why in UNHANDLED if rx.search(step.command)]
    return problems
