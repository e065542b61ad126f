"""The report's own figures: each a matplotlib `Figure` (object API, no pyplot) for the PNG and, where
the page gains from it, a plotly twin for the HTML. The shared image grids are in `aeopt.figures`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure

from aeopt.figures import save_figure
from aeopt.report.page import Item

CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]
BAR_COLOR = "#4c72b0"


def figure_item(out: Path, key: str, title: str, fig: Figure, plotly: Any = None, caption: str = "") -> Item:
    """Save `fig` as out/KEY.png and describe it for the page."""
    return Item(key, title, save_figure(fig, out / f"{key}.png"), plotly, caption)


def class_points(ax: Any, pfig: go.Figure, emb: np.ndarray, labels: np.ndarray, classes: list[str], *,
                 size: float = 6, opacity: float = 0.7) -> None:
    """2-D points coloured by class, added to a matplotlib axes and its plotly twin."""
    for c, name in enumerate(classes):
        m = labels == c
        if not m.any():
            continue
        color = CLASS_COLORS[c % len(CLASS_COLORS)]
        ax.scatter(emb[m, 0], emb[m, 1], s=size, alpha=opacity, color=color, label=name)
        # SVG scatter, not WebGL: the page must render where there is no GPU (headless, CI).
        pfig.add_trace(go.Scatter(x=emb[m, 0], y=emb[m, 1], mode="markers", name=name,
                                  marker={"size": size - 1, "color": color, "opacity": opacity + 0.05}))


def scatter(emb: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
            axis: tuple[str, str], *, under: Any = None) -> tuple[Figure, go.Figure]:
    """2-D points coloured by class; `under(ax, pfig)` draws first, below the points (a density)."""
    fig = Figure(figsize=(8, 6.5))
    ax = fig.subplots()
    pfig = go.Figure()
    if under is not None:
        under(ax, pfig)
    class_points(ax, pfig, emb, labels, classes)
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    pfig.update_layout(title=title, xaxis_title=axis[0], yaxis_title=axis[1], height=560,
                       template="plotly_white")
    return fig, pfig


def mosaic(images: torch.Tensor, n: int, coords: np.ndarray, title: str, dims: tuple[str, str],
           row_ticks: list[str] | None = None) -> Figure:
    """Decoded images in rows of n as one picture, with the latent coordinates on the axes: `coords`
    along the columns and, unless `row_ticks` names the rows, `coords` top to bottom (a square grid)."""
    rows = images.shape[0] // n
    tiles = images[:, 0].numpy().reshape(rows, n, 28, 28)
    big = tiles.transpose(0, 2, 1, 3).reshape(rows * 28, n * 28)
    # The same tile size for one row as for a square: the figure's height follows the rows.
    fig = Figure(figsize=(8, 1.6 + 6.4 * rows / n))
    ax = fig.subplots()
    ax.imshow(big, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks(np.arange(n) * 28 + 14, [f"{c:.2f}" for c in coords], rotation=90, fontsize=7)
    ticks = row_ticks if row_ticks is not None else [f"{c:.2f}" for c in coords[::-1]]
    ax.set_yticks(np.arange(rows) * 28 + 14 if ticks else [], ticks, fontsize=7)  # []: no y axis
    ax.set_xlabel(dims[0])
    ax.set_ylabel(dims[1])
    ax.set_title(title)
    fig.tight_layout()
    return fig


def lines(x: list[float], curves: dict[str, list[float]], title: str,
          axis: tuple[str, str]) -> tuple[Figure, go.Figure]:
    """One line with markers per named curve."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    pfig = go.Figure()
    for label, y in curves.items():
        ax.plot(x, y, marker="o", label=label)
        pfig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label))
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    pfig.update_layout(title=title, xaxis_title=axis[0], yaxis_title=axis[1], height=450,
                       template="plotly_white")
    return fig, pfig


def accuracy_bars(values: dict[str, float], title: str,
                  overall: float | None = None) -> tuple[Figure, go.Figure]:
    """Accuracy per class in [0, 1], with the overall accuracy as a dashed line."""
    names, heights = list(values), list(values.values())
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.bar(range(len(names)), heights, color=BAR_COLOR)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    if overall is not None:
        ax.axhline(overall, color="#c44e52", linestyle="--", label=f"overall {overall:.3f}")
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    pfig = go.Figure(go.Bar(x=names, y=heights, marker_color=BAR_COLOR, name="per class"))
    if overall is not None:
        # The PNG's dashed overall line, with its legend entry, in the page's twin too.
        pfig.add_trace(go.Scatter(x=names, y=[overall] * len(names), mode="lines",
                                  name=f"overall {overall:.3f}", line={"color": "#c44e52", "dash": "dash"}))
    pfig.update_layout(title=title, yaxis_range=[0, 1], yaxis_title="test accuracy", height=450,
                       template="plotly_white", showlegend=overall is not None)
    return fig, pfig


def confusion_heatmap(matrix: list[list[int]], classes: list[str], title: str) -> go.Figure:
    """The page's interactive confusion matrix (the PNG is `aeopt.figures.confusion_figure`)."""
    z = np.asarray(matrix, dtype=float)
    pfig = go.Figure(go.Heatmap(z=z, x=classes, y=classes, colorscale="Blues", text=z,
                                texttemplate="%{text:g}",
                                hovertemplate="true %{y}<br>predicted %{x}<br>%{z:g}<extra></extra>"))
    pfig.update_layout(title=title, xaxis_title="predicted class", yaxis_title="true class",
                       yaxis_autorange="reversed", height=600, template="plotly_white")
    return pfig
