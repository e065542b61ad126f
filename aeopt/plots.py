"""Static PNG figures (matplotlib, headless). The HTML report builds on these and on plotly."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aeopt.checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def image_rows(rows: list[torch.Tensor], labels: list[str], title: str | None = None):
    """A grid with one row per tensor of [n, 1, 28, 28] images in [0, 1]."""
    n = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.0, len(rows) * 1.1), squeeze=False)
    for r, (imgs, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def reconstruction_figure(original: torch.Tensor, reconstructed: torch.Tensor, noisy: torch.Tensor | None = None,
                          title: str | None = None):
    rows, labels = [original], ["original"]
    if noisy is not None:
        rows, labels = rows + [noisy], labels + ["noisy"]
    return image_rows(rows + [reconstructed], labels + ["reconstructed"], title)
