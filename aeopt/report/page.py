"""The report's page: sections of tables and figures, rendered as one self-contained HTML file.

plotly.js is embedded inline and every PNG as a data URI, so the page opens offline from any folder.
(Named page.py, not html.py: a module named like the standard library's `html` invites confusion.)
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs


@dataclass
class Item:
    """One figure: a PNG on disk, optionally an interactive plotly twin for the page."""

    key: str
    title: str
    png: Path | None = None
    plotly: Any = None
    caption: str = ""
    missing: str = ""  # why the figure could not be drawn (shown instead of it)


@dataclass
class Grid:
    """A table of numbers with a header row: one row per case, one column per model or measure."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    title: str
    intro: str = ""
    items: list[Item] = field(default_factory=list)
    table: list[tuple[str, str]] = field(default_factory=list)  # label: value rows
    key: str = ""  # the section's id on the page (its position when empty)
    grids: list[Grid] = field(default_factory=list)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1rem 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
figure { margin: 1.5rem 0; } figcaption { color: #555; font-size: 0.9rem; }
img { max-width: 100%; height: auto; } table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }
.missing { color: #a33; font-style: italic; } .meta { color: #666; font-size: 0.85rem; }
nav a { margin-right: 1rem; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #555; font-size: 0.9rem; padding-bottom: 0.3rem; }
"""


def _item_html(item: Item, out: Path) -> str:
    parts = [f'<figure id="{item.key}">', f"<h3>{html.escape(item.title)}</h3>"]
    if item.missing:
        parts.append(f'<p class="missing">Not available: {html.escape(item.missing)}</p>')
    elif item.plotly is not None:
        # Axis titles and tick labels push the margins out instead of being cut off at the plot's edge.
        item.plotly.update_xaxes(automargin=True)
        item.plotly.update_yaxes(automargin=True)
        parts.append(pio.to_html(item.plotly, include_plotlyjs=False, full_html=False, default_width="100%",
                                 div_id=f"plot-{item.key}",
                                 config={"displaylogo": False, "responsive": True}))
    elif item.png is not None:
        data = base64.b64encode(item.png.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(item.title)}" src="data:image/png;base64,{data}">')
    caption = html.escape(item.caption)
    if item.png is not None and not item.missing:
        caption += f' <a href="{html.escape(item.png.relative_to(out).as_posix())}">PNG</a>'
    if caption:
        parts.append(f"<figcaption>{caption}</figcaption>")
    parts.append("</figure>")
    return "\n".join(parts)


def _grid_html(grid: Grid) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in grid.header)
    body = "".join("<tr>" + "".join(f'<td class="num">{html.escape(v)}</td>' for v in row) + "</tr>"
                   for row in grid.rows)
    caption = f"<caption>{html.escape(grid.caption)}</caption>" if grid.caption else ""
    return f'<table class="grid">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section_html(section: Section, anchor: str, out: Path) -> str:
    parts = [f'<section id="{anchor}"><h2>{html.escape(section.title)}</h2>']
    if section.intro:
        parts.append(f"<p>{html.escape(section.intro)}</p>")
    if section.table:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in section.table)
        parts.append(f"<table>{rows}</table>")
    parts.extend(_grid_html(grid) for grid in section.grids)
    parts.extend(_item_html(item, out) for item in section.items)
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, subtitle: str, sections: list[Section], out: Path) -> str:
    """The whole page; PNG links are relative to `out`, the folder the page is written to."""
    anchors = [s.key or f"s{i}" for i, s in enumerate(sections)]
    nav = " ".join(f'<a href="#{a}">{html.escape(s.title)}</a>'
                   for a, s in zip(anchors, sections, strict=True))
    body = "\n".join(_section_html(s, a, out) for a, s in zip(anchors, sections, strict=True))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p>
<nav>{nav}</nav>
{body}
</body></html>
"""
