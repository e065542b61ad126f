"""Static PNG figures shared by the stages, the trial artifacts and the report.

Figures are built with matplotlib's object API (`Figure`), not pyplot: no global backend or figure
registry, so drawing works the same headless, in worker threads and beside a GUI. The CLI entry
selects the Agg backend for the pyplot figures that Optuna's own plots make.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

from aeopt.files import atomic_write_bytes


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # a pyplot figure (Optuna's plots) stays registered until closed
        pyplot.close(fig)
    return path


def image_rows(rows: list[torch.Tensor], labels: list[str], title: str | None = None,
               col_labels: list[str] | None = None) -> Figure:
    """A grid with one row per tensor of [n, 1, 28, 28] images in [0, 1], optionally a title per column."""
    n = rows[0].shape[0]
    fig = Figure(figsize=(n * 1.05, len(rows) * 1.1 + (0.3 if col_labels else 0.0)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (imgs, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels:
                ax.set_title(col_labels[c], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def reconstruction_figure(original: torch.Tensor, reconstructed: torch.Tensor,
                          noisy: torch.Tensor | None = None, title: str | None = None) -> Figure:
    rows, labels = [original], ["original"]
    if noisy is not None:
        rows, labels = rows + [noisy], labels + ["noisy"]
    return image_rows(rows + [reconstructed], labels + ["reconstructed"], title)


def confusion_figure(matrix: list[list[int]], classes: list[str], title: str) -> Figure:
    n = len(classes)
    fig = Figure(figsize=(0.75 * n + 2, 0.75 * n + 1.5))
    ax = fig.subplots()
    data = torch.tensor(matrix, dtype=torch.float32)
    norm = data / data.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
