"""The figures an earlier report left in the output folder that this one did not draw.

A report written into a folder that holds an earlier one replaces its files one by one; a figure
the new report does not draw (a VAE's latent manifold, when the new report shows a conv AE) would
stay beside it and be taken for part of it. Only files the earlier report itself wrote are removed:
those its report.json lists *and* its page links, so that a PNG a user put in the folder stays (a
report.json written before the list was exact named every PNG in the folder, the page never did).
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_LINKED_PNG = re.compile(r'<a href="([^"<>]+\.png)">PNG</a>')


def report_figures(folder: Path) -> set[str]:
    """The PNGs (relative to `folder`) the report in `folder` drew; empty when there is none."""
    try:
        listed = json.loads((folder / "report.json").read_text()).get("figures") or []
        page = (folder / "report.html").read_text()
    except (OSError, ValueError, AttributeError):  # no report, or not one aeopt wrote
        return set()
    linked = {html.unescape(m.group(1)) for m in _LINKED_PNG.finditer(page)}
    return {name for name in listed if isinstance(name, str) and name in linked}


def remove_leftovers(folder: Path, previous: set[str], drawn: set[str] | list[str]) -> list[str]:
    """Delete the figures of `previous` (an earlier report's, see `report_figures`) not in `drawn`."""
    gone = sorted(previous - set(drawn))
    root = folder.resolve()
    for name in gone:
        path = folder / name
        if root not in path.resolve().parents:  # a hand-edited list must not reach outside the folder
            continue
        path.unlink(missing_ok=True)
    if gone:
        log.info("removed %d figure(s) of the earlier report in %s that this one does not draw: %s",
                 len(gone), folder, ", ".join(gone))
    return gone
