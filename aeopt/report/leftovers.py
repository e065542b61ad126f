"""The figures and checkpoints an earlier report left in the output folder that this one did not write.

A report written into a folder that holds an earlier one replaces its files one by one; a figure
the new report does not draw (a VAE's latent manifold, when the new report shows a conv AE) would
stay beside it and be taken for part of it, and so would another study's checkpoints. Only files the
earlier report itself wrote are removed: figures its report.json lists *and* its page links, so that
a PNG a user put in the folder stays (a report.json written before the list was exact named every PNG
in the folder, the page never did), and the checkpoints its report.json lists under checkpoints/
(a report.json written before that list names none, so their checkpoints stay).
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_LINKED_PNG = re.compile(r'<a href="([^"<>]+\.png)">PNG</a>')
CHECKPOINTS = "checkpoints"  # the report's folder of the models it downloaded or trained


def written_checkpoints(folder: Path) -> list[str]:
    """The checkpoint files under `folder`/checkpoints (relative to `folder`): what report.json lists."""
    root = folder / CHECKPOINTS
    return sorted(p.relative_to(folder).as_posix() for p in root.rglob("*.pt") if p.is_file())


def report_files(folder: Path) -> set[str]:
    """The PNGs the report in `folder` drew and the checkpoints it wrote (relative to `folder`); empty
    when there is none."""
    try:
        numbers = json.loads((folder / "report.json").read_text())
        listed, checkpoints = numbers.get("figures") or [], numbers.get(CHECKPOINTS) or []
        page = (folder / "report.html").read_text()
    except (OSError, ValueError, AttributeError):  # no report, or not one aeopt wrote
        return set()
    linked = {html.unescape(m.group(1)) for m in _LINKED_PNG.finditer(page)}
    figures = {name for name in listed if isinstance(name, str) and name in linked}
    return figures | {name for name in checkpoints if isinstance(name, str)
                      and name.startswith(CHECKPOINTS + "/") and name.endswith(".pt")}


def remove_leftovers(folder: Path, previous: set[str], written: set[str] | list[str]) -> list[str]:
    """Delete the files of `previous` (an earlier report's, see `report_files`) not in `written`, and
    the checkpoint folders that leaves empty."""
    gone = sorted(previous - set(written))
    root = folder.resolve()
    for name in gone:
        path = folder / name
        if root not in path.resolve().parents:  # a hand-edited list must not reach outside the folder
            continue
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent.resolve() != root and root in parent.resolve().parents and not any(parent.iterdir()):
            parent.rmdir()  # checkpoints/<study>/ of a study this report does not show
            parent = parent.parent
    if gone:
        log.info("removed %d file(s) of the earlier report in %s that this one did not write: %s",
                 len(gone), folder, ", ".join(gone))
    return gone
