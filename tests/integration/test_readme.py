"""The README, played: every ```bash block runs, in order, in one fresh folder.

Blocks run on scikit-learn's digits (on the real Fashion-MNIST when AEOPT_DATA_DIR is set), in a
temp folder holding copies of configs/ and studies/, so later blocks find the studies and files
that earlier ones made. A block fails on a non-zero exit or a traceback in its output. Long runs
are shortened, and GPU-only or multi-machine commands skipped, by the README's own
`<!-- readme-test: ... -->` markers (tests/readme_blocks.py says what they may say).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.readme_blocks import Block, MarkerError, bash_blocks, block_ids, parse_markers, steps, unhandled

BLOCKS = bash_blocks(REPO / "README.md")
TRACEBACK = "Traceback (most recent call last)"

# Runs a command until its URL answers, then stops it with SIGTERM (a background job of a
# non-interactive shell ignores SIGINT); the server must have answered and stopped cleanly.
SERVE = r"""
_readme_serve() {
  local url=$1 up=1 rc=0 pid; shift
  "$@" & pid=$!
  for _ in $(seq 1 240); do
    if python -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; then
      up=0; break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -TERM "$pid" 2>/dev/null; wait "$pid" || rc=$?
  if [ "$up" -ne 0 ]; then echo "readme-test: $url never answered (the server exited $rc)"; return 1; fi
  echo "readme-test: $url answered; stopped with SIGTERM, exit $rc"
  case $rc in 0|143) return 0 ;; *) return 1 ;; esac
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(block: Block, data_dir: str | None, port: int) -> tuple[str, list[str]]:
    """The bash script that plays the block, and the commands it leaves out (with reasons)."""
    lines, left_out = ["set -eo pipefail", SERVE], []
    for step in steps(block, data_dir, port):
        if step.skip:
            left_out.append(f"{step.command}  ({step.skip})")
            continue
        lines.append(f"echo {shlex.quote('$ ' + step.command)}")
        serve = f"_readme_serve {shlex.quote(step.serve)} " if step.serve else ""
        lines.append(serve + step.command)
    return "\n".join(lines) + "\n", left_out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One folder for the whole README: configs/ and studies/ as a fresh clone has them."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "configs", root / "configs")
    ignore = shutil.ignore_patterns("*.db", "*.db-journal", "*.log", "artifacts")
    shutil.copytree(REPO / "studies", root / "studies", ignore=ignore)
    return root


def _run(block: Block, workdir: Path) -> tuple[int | None, str, list[str]]:
    data_dir = os.environ.get("AEOPT_DATA_DIR") or None
    text, left_out = script(block, data_dir, _free_port())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "AEOPT_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(["bash", "-c", text], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=block.markers.timeout)
        return proc.returncode, out, left_out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, left_out


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=block_ids(BLOCKS))
def test_block_runs(block: Block, workdir: Path):
    if block.markers.skip:
        pytest.skip(f"README {block.name}: {block.markers.skip}")
    rc, out, left_out = _run(block, workdir)
    print(out)
    for cmd in left_out:
        print(f"left out: {cmd}")
    last = [line for line in out.splitlines() if line.startswith("$ ")][-1:] or ["(before the first command)"]
    tail = "\n".join(out.splitlines()[-30:])
    where = f"README {block.name}, at {last[0]}"
    if rc is None:
        pytest.fail(f"{where}: still running after {block.markers.timeout:.0f} s\n{tail}")
    assert rc == 0, f"{where}: exit {rc}\n{tail}"
    assert TRACEBACK not in out, f"{where}: a traceback in the output\n{tail}"


def test_every_block_runs_or_says_why(capsys):
    """Each skip has a reason; no GPU, other machine or placeholder is left to run unhandled."""
    skipped = [f"{b.name}: {b.markers.skip}" for b in BLOCKS if b.markers.skip]
    skipped += [f"{b.name}: '{s.command}': {s.skip}" for b in BLOCKS for s in steps(b, None, 0) if s.skip]
    with capsys.disabled():
        print("\nREADME blocks and commands the README test skips:\n  " + "\n  ".join(skipped))
    problems = [p for b in BLOCKS for p in unhandled(b)]
    assert not problems, "add a readme-test marker for:\n" + "\n".join(problems)
    assert len(BLOCKS) > len([b for b in BLOCKS if b.markers.skip]) + 5


def test_markers_parse_and_apply():
    m = parse_markers("add aeopt worker: --n-trials {port} ;; replace cuda:0 => cpu\n"
                      "skip aeopt launch: two GPUs")
    block = Block(7, "Create, run", "aeopt worker --study s --device cuda:0 \\\n  --n-trials 50  # comment\n"
                  "aeopt launch --devices cuda:0\naeopt train c.yaml --data-dir ../shared/data", m)
    got = steps(block, data_dir=None, port=99)
    assert [s.command for s in got] == ["aeopt worker --study s --device cpu --n-trials 50 --n-trials 99",
                                       "aeopt launch --devices cpu",
                                       "aeopt train c.yaml --set data.dataset=digits"]
    assert got[1].skip == "two GPUs"
    assert steps(block, data_dir="/d d", port=1)[2].command == "aeopt train c.yaml --data-dir '/d d'"
    with pytest.raises(MarkerError, match="needs a reason"):
        parse_markers("skip:")
    with pytest.raises(MarkerError, match="unknown"):
        parse_markers("skipp: x")
    assert unhandled(Block(1, "x", "aeopt worker --device cuda:0", parse_markers(""))) != []
