"""`aeopt report`: a study and its best model, as PNG figures and one self-contained HTML page.

The page embeds plotly.js inline and every image as a data URI, so it opens offline from any
folder. Sections follow the homework report: the search itself (optimization history, what
pruning cut, parameter importances, parallel coordinates), the best configuration
(reconstructions, the latent space by PCA and t-SNE, new samples), denoising at noise std
0.1 * i, and, given a fine-tune folder, the classifier's confusion matrix and per-class accuracy.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
import torch

from aeopt.report import analysis
from aeopt.config import RunConfig
from aeopt.errors import AeoptError, StudyError
from aeopt.training.models import VAE, Autoencoder
import matplotlib.pyplot as plt

from aeopt.figures import reconstruction_figure, save_figure
from aeopt.progress import progress

log = logging.getLogger(__name__)

DEFAULT_NOISE = 0.3  # the denoising partner of a plain AE, when no denoising study is given
CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Item:
    """One figure: a PNG on disk, optionally an interactive plotly twin for the HTML page."""

    key: str
    title: str
    png: Path | None = None
    plotly: Any = None
    caption: str = ""
    missing: str = ""  # why the figure could not be drawn (shown instead of it)


@dataclass
class Section:
    title: str
    intro: str = ""
    items: list[Item] = field(default_factory=list)
    table: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BestModel:
    model: Autoencoder
    cfg: RunConfig
    source: str  # where it came from, for the page
    study: str
    trial: int | None


# ----- the study -----------------------------------------------------------------------------------


def _study_plots(study: optuna.Study, out: Path) -> list[Item]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    # fANOVA with a fixed seed: the same study gives the same importances in both renderings.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    plots = [
        ("optimization_history", "Optimization history",
         "Objective (mean CV validation loss) of each finished trial and the best so far.",
         lambda m: m.plot_optimization_history(study)),
        ("intermediate_values", "Intermediate values",
         "Mean CV validation loss per epoch of every trial: curves that stop early were pruned.",
         lambda m: m.plot_intermediate_values(study)),
        ("param_importances", "Parameter importances", "fANOVA importance of each searched parameter for the objective.",
         lambda m: m.plot_param_importances(study, evaluator=evaluator)),
        ("parallel_coordinate", "Parallel coordinates",
         "Each line is a finished trial through its parameter values, coloured by objective.",
         lambda m: m.plot_parallel_coordinate(study)),
    ]
    items = []
    for key, title, caption, draw in plots:
        item = Item(key, title, caption=caption)
        try:
            # Optuna's matplotlib plots switch the global style to ggplot: keep that to these figures.
            with warnings.catch_warnings(), matplotlib.rc_context():
                # The backend is marked experimental, and degenerate axes (one trial) warn: neither
                # says anything the reader can act on.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = draw(vis_mpl)
                fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
                fig.set_size_inches(14 if key == "parallel_coordinate" else 9, 6 if key == "parallel_coordinate" else 5)
                item.png = save_figure(fig, out / f"study_{key}.png")
                item.plotly = draw(vis)
        except Exception as exc:  # e.g. importances with one trial or an empty search space
            plt.close("all")
            item.missing = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            log.info("%s not drawn: %s", title.lower(), item.missing)
        items.append(item)
    return items


def _study_table(study: optuna.Study, spec) -> list[tuple[str, str]]:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = study.best_trial
    rows = [
        ("study", study.study_name),
        ("model", spec.model.kind),
        ("dataset", spec.data.dataset),
        ("trials", ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))),
        ("best trial", f"#{best.number}: objective {best.value:.6g}"),
    ]
    rows += [(f"best {k}", _fmt(v)) for k, v in best.params.items()]
    for key in ("cv_std", "epochs", "best_epoch", "seconds", "device"):
        if key in best.user_attrs:
            rows.append((f"best trial {key}", _fmt(best.user_attrs[key])))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ----- the best model --------------------------------------------------------------------------------


def best_model(study: optuna.Study, spec, *, data_dir: str | None, device: torch.device, show_progress: bool,
               out: Path, storage_url: str | None = None) -> BestModel:
    """The best trial's model: its checkpoint artifact if it has one, else trained on the spot."""
    from aeopt.search.artifacts import find_best_checkpoint
    from aeopt.training.checkpoint import load_checkpoint, save_checkpoint
    from aeopt.stages.train import train_run

    try:
        best = study.best_trial
    except ValueError:
        raise StudyError(f"study '{study.study_name}' has no completed trial yet; run `aeopt worker --study "
                         f"{study.study_name}` first") from None
    ckpt = find_best_checkpoint(study, out / "checkpoints", storage_url)
    if ckpt is not None:
        model, cfg, _ = load_checkpoint(ckpt, device)
        log.info("best trial #%d of %s: using its checkpoint artifact", best.number, study.study_name)
        return BestModel(model.eval(), cfg, f"checkpoint artifact of trial #{best.number}", study.study_name, best.number)
    cfg = spec.run_config(best.params)
    log.info("best trial #%d of %s has no checkpoint: training its configuration (up to %d epochs, early stopping)",
             best.number, study.study_name, cfg.budget.max_epochs)
    model, metrics = train_run(cfg, data_dir=data_dir, device=str(device), show_progress=show_progress)
    save_checkpoint(out / "checkpoints" / f"{study.study_name}_best.pt", model, cfg,
                    {k: v for k, v in metrics.items() if k != "history"}, extra={"study": study.study_name, "trial": best.number})
    return BestModel(model.eval(), cfg, f"trial #{best.number}'s configuration trained here ({metrics['epochs']} epochs)",
                     study.study_name, best.number)


def _partner(cfg: RunConfig, kind: str, noise: float = 0.0) -> RunConfig:
    """The same architecture and training as `cfg`, as a plain or a denoising autoencoder."""
    d = cfg.model_dump(mode="json")
    d["model"]["kind"] = kind
    d["model"]["noise_std"] = noise if kind == "denoising_ae" else 0.0
    return RunConfig.model_validate(d)


def _train_here(cfg: RunConfig, *, data_dir, device, show_progress, what: str) -> BestModel:
    from aeopt.stages.train import train_run

    log.info("training %s for the denoising comparison", what)
    model, metrics = train_run(cfg, data_dir=data_dir, device=str(device), show_progress=show_progress)
    return BestModel(model.eval(), cfg, f"{what}, trained here ({metrics['epochs']} epochs)", "", None)


def denoising_pair(main: BestModel, denoising: BestModel | None, *, data_dir, device,
                   show_progress) -> tuple[BestModel, BestModel] | None:
    """(plain AE, denoising AE) to compare, or None for a VAE study without --denoising-study.

    Two studies' best checkpoints are compared as they are. Otherwise the report's experiment is
    repeated: one architecture trained twice, without and with input noise, on the same split for
    the same epochs; a checkpoint from cross-validation (trained on fewer images) would not be a
    fair opponent for a model trained here, so both are trained here.
    """
    kind = main.cfg.model.kind
    if kind == "conv_ae" and denoising is not None:
        return main, denoising
    if kind == "denoising_ae":
        if denoising is not None:
            log.warning("the study is itself a denoising_ae study: comparing its own best model, not --denoising-study's")
        base = main.cfg
    elif kind == "conv_ae":
        base = main.cfg
    elif denoising is not None:
        base = denoising.cfg
    else:
        return None
    owner = main.study if denoising is None or kind != "vae" else denoising.study
    plain = _train_here(_partner(base, "conv_ae"), data_dir=data_dir, device=device, show_progress=show_progress,
                        what=f"{owner}'s best architecture without noise")
    noise = base.model.noise_std if base.model.kind == "denoising_ae" else DEFAULT_NOISE
    den = _train_here(_partner(base, "denoising_ae", noise), data_dir=data_dir, device=device, show_progress=show_progress,
                      what=f"{owner}'s best architecture with noise std {noise:g}")
    return plain, den


# ----- figures of the best model -------------------------------------------------------------------


def _image_grid(rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None, title: str):
    n = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.05, len(rows) * 1.15 + 0.6), squeeze=False)
    for r, imgs in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels:
                ax.set_title(col_labels[c], fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _mosaic(images: torch.Tensor, n: int, coords: np.ndarray, title: str, dims: str):
    """An n x n grid of decoded images as one picture, with the latent coordinates on the axes."""
    tiles = images[:, 0].numpy().reshape(n, n, 28, 28)
    big = tiles.transpose(0, 2, 1, 3).reshape(n * 28, n * 28)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(big, cmap="gray", vmin=0, vmax=1)
    ticks = np.arange(n) * 28 + 14
    ax.set_xticks(ticks, [f"{c:.2f}" for c in coords], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [f"{c:.2f}" for c in coords[::-1]], fontsize=7)
    ax.set_xlabel(dims.split(",")[0])
    ax.set_ylabel(dims.split(",")[1])
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _scatter(emb: np.ndarray, labels: np.ndarray, classes: list[str], title: str, axis: tuple[str, str], out: Path, key: str,
             caption: str) -> Item:
    import plotly.graph_objects as go

    fig, ax = plt.subplots(figsize=(8, 6.5))
    pfig = go.Figure()
    for c, name in enumerate(classes):
        m = labels == c
        if not m.any():
            continue
        color = CLASS_COLORS[c % len(CLASS_COLORS)]
        ax.scatter(emb[m, 0], emb[m, 1], s=6, alpha=0.7, color=color, label=name)
        # SVG scatter, not WebGL: the page must render where there is no GPU (headless, CI).
        pfig.add_trace(go.Scatter(x=emb[m, 0], y=emb[m, 1], mode="markers", name=name,
                                  marker={"size": 5, "color": color, "opacity": 0.75}))
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    pfig.update_layout(title=title, xaxis_title=axis[0], yaxis_title=axis[1], height=560, template="plotly_white")
    return Item(key, title, save_figure(fig, out / f"{key}.png"), pfig, caption)


def _stratified_test(test, n: int, seed: int = 0):
    from aeopt.training.data import stratified_subset

    return test.take(stratified_subset(test.y, n, seed)) if len(test) > n else test


def model_sections(bm: BestModel, out: Path, *, data_dir: str | None, device: torch.device, max_points: int,
                   bar) -> tuple[list[Section], dict[str, Any], Any]:
    """Reconstructions, latent maps and new samples of the best model."""
    from aeopt.training.data import prepare, to_float
    from aeopt.training.engine import mse, noise_std

    data = prepare(bm.cfg.data, data_dir)
    test = _stratified_test(data.test, max_points)
    x = to_float(test.x, device)
    labels = test.y.cpu().numpy()
    numbers: dict[str, Any] = {"test_mse": mse(bm.model, x), "n_points": int(x.shape[0])}
    kind = bm.cfg.model.kind
    recon_section = Section("Best configuration", f"Model: {kind}, from the {bm.source}.")
    recon_section.table = [("test MSE (clean inputs)", f"{numbers['test_mse']:.5f}"),
                           ("test images analysed", str(numbers["n_points"])),
                           ("latent dimensions", str(bm.model.latent_dim))]

    # Test images beside their reconstructions (from noisy inputs too, for a denoising AE).
    sample = x[:10]
    std = noise_std(bm.cfg)
    noisy = analysis.noisy_inputs(sample, [std])[0] if std > 0 else None
    recon = analysis.outputs(bm.model, noisy if noisy is not None else sample)
    fig = reconstruction_figure(sample.cpu(), recon, noisy.cpu() if noisy is not None else None,
                                f"{kind}: test images and reconstructions (test MSE {numbers['test_mse']:.4f})")
    recon_section.items.append(Item("reconstructions", "Test images and their reconstructions",
                                    save_figure(fig, out / "reconstructions.png"),
                                    caption="Top: test images" + (f"; middle: with noise std {std}" if noisy is not None else "")
                                    + "; bottom: the model's reconstructions."))
    bar.update({"step": "reconstructions"})

    # The latent space in 2-D, coloured by class.
    codes = analysis.latent_codes(bm.model, x)
    latent = Section("Latent space", "Codes of test images (the VAE's mean codes), mapped to 2-D and coloured by class.")
    emb, ratios = analysis.pca_2d(codes)
    latent.items.append(_scatter(emb, labels, data.classes, f"PCA of the {codes.shape[1]}-D latent space",
                                 (f"PC1 ({ratios[0]:.0%} of variance)", f"PC2 ({ratios[1]:.0%} of variance)"), out, "latent_pca",
                                 "The two directions of largest variance of the codes: a linear view."))
    numbers["pca_explained_variance"] = ratios
    if codes.shape[0] >= 5:
        latent.items.append(_scatter(analysis.tsne_2d(codes), labels, data.classes, "t-SNE of the latent space",
                                     ("t-SNE 1", "t-SNE 2"), out, "latent_tsne",
                                     "t-SNE keeps neighbours together: separated clusters are classes the code tells apart."))
    else:
        latent.items.append(Item("latent_tsne", "t-SNE of the latent space", missing="fewer than 5 test images"))
    bar.update({"step": "latent space"})

    # New samples from latent codes.
    gen = Section("New samples from latent codes")
    train_x = to_float(_stratified_test(data.train, max(max_points, 1000)).x, device)
    pairs = analysis.pick_pairs(labels, 4, seed=0)
    # Each row starts and ends with the two real images, so the decoded path can be judged against them.
    rows = [torch.cat([x[a : a + 1].cpu(), analysis.interpolate(bm.model, x[a : a + 1], x[b : b + 1], steps=10),
                       x[b : b + 1].cpu()]) for a, b in pairs]
    interp = _image_grid(rows, [f"{data.classes[labels[a]]} → {data.classes[labels[b]]}" for a, b in pairs], None,
                         "Interpolation between the codes of two test images")
    interp_item = Item("interpolations", "Interpolations", save_figure(interp, out / "interpolations.png"),
                       caption="First and last column: two test images; between them, decoded evenly spaced points "
                               "on the line between their codes.")
    if isinstance(bm.model, VAE):
        gen.intro = "The VAE's prior N(0, I) is a distribution to sample from: decode its samples and a grid of its quantiles."
        samples = analysis.prior_samples(bm.model, 30, seed=0)
        fig = _image_grid([samples[i * 10 : (i + 1) * 10] for i in range(3)], ["", "", ""], None,
                          "Images decoded from codes sampled from the prior N(0, I)")
        gen.items.append(Item("prior_samples", "Samples from the prior", save_figure(fig, out / "prior_samples.png")))
        grid_n = 15
        images, coords = analysis.latent_grid(bm.model, grid_n)
        dims = "z1,z2" if bm.model.latent_dim == 2 else "z1 (others 0),z2 (others 0)"
        fig = _mosaic(images, grid_n, coords,
                      f"Latent manifold: decoded codes on a {grid_n}x{grid_n} grid of N(0,1) quantiles", dims)
        gen.items.append(Item("latent_manifold", "The 2-D latent manifold", save_figure(fig, out / "latent_manifold.png"),
                              caption="Codes at the 5%..95% quantiles of N(0, 1)"
                              + ("." if bm.model.latent_dim == 2 else
                                 f" in the first two of {bm.model.latent_dim} dimensions; the rest are 0 (the prior mean).")))
    else:
        gen.intro = ("A plain autoencoder has no prior: new codes are drawn from a Gaussian fitted to the codes of "
                     "training images, then decoded.")
        train_codes = analysis.latent_codes(bm.model, train_x)
        samples = analysis.gaussian_samples(bm.model, train_codes, 30, seed=0)
        fig = _image_grid([samples[i * 10 : (i + 1) * 10] for i in range(3)], ["", "", ""], None,
                          "Images decoded from codes drawn from a Gaussian fitted to training codes")
        gen.items.append(Item("gaussian_samples", "Samples from a Gaussian fitted to training codes",
                              save_figure(fig, out / "gaussian_samples.png")))
    gen.items.append(interp_item)
    bar.update({"step": "new samples"})
    return [recon_section, latent, gen], numbers, (data, x, labels)


def denoising_section(plain: BestModel, den: BestModel, x: torch.Tensor, out: Path) -> tuple[Section, dict[str, Any]]:
    """Noisy inputs at std 0.1 * i, both models' outputs, and the MSE of each per noise level."""
    import plotly.graph_objects as go

    stds = analysis.noise_levels(6)
    curves = analysis.denoising_mse({"plain": plain.model, "denoising": den.model}, x, stds)
    section = Section("Denoising", f"Gaussian noise of std 0.1 * i added to test images (clamped to [0, 1]). "
                                   f"Plain AE: {plain.source}. Denoising AE (trained with noise std "
                                   f"{den.cfg.model.noise_std}): {den.source}.")
    rows, labels = [], []
    for k in range(2):
        img = x[k : k + 1]
        noisy = torch.cat([n.cpu() for n in analysis.noisy_inputs(img, stds, seed=k)])
        rows += [noisy, analysis.outputs(plain.model, noisy), analysis.outputs(den.model, noisy)]
        labels += [f"noisy #{k + 1}", "conv AE", "denoising AE"]
    fig = _image_grid(rows, labels, [f"std {s:.1f}" for s in stds], "Noisy inputs and both models' outputs")
    section.items.append(Item("denoising_examples", "Noisy inputs and outputs", save_figure(fig, out / "denoising_examples.png")))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pfig = go.Figure()
    for key, label in (("plain", "conv AE"), ("denoising", "denoising AE")):
        ax.plot(stds, curves[key], marker="o", label=label)
        pfig.add_trace(go.Scatter(x=stds, y=curves[key], mode="lines+markers", name=label))
    ax.set_xlabel("noise std")
    ax.set_ylabel("MSE to the clean image")
    ax.set_title("Reconstruction error from noisy inputs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    pfig.update_layout(title="Reconstruction error from noisy inputs", xaxis_title="noise std",
                       yaxis_title="MSE to the clean image", height=450, template="plotly_white")
    section.items.append(Item("denoising_mse", "MSE per noise level", save_figure(fig, out / "denoising_mse.png"), pfig,
                              "Mean squared error between each model's output and the clean test image."))
    section.table = [("noise std", "  ".join(f"{s:.1f}" for s in stds)),
                     ("conv AE MSE", "  ".join(f"{v:.4f}" for v in curves["plain"])),
                     ("denoising AE MSE", "  ".join(f"{v:.4f}" for v in curves["denoising"]))]
    return section, {"noise_std": stds, "plain_source": plain.source, "denoising_source": den.source,
                     "mse_plain": curves["plain"], "mse_denoising": curves["denoising"]}


# ----- fine-tuning ---------------------------------------------------------------------------------


def read_finetune(folder: Path) -> dict[str, Any]:
    """Confusion matrix, class names, per-class and overall test accuracy from an `aeopt finetune`
    folder, read defensively: any of them may be missing, and the matrix may sit in metrics.json
    or confusion_matrix.json."""
    if not folder.is_dir():
        raise AeoptError(f"--finetune {folder}: no such folder; pass the --out folder of `aeopt finetune`")
    found: dict[str, Any] = {}
    docs = []
    for name in ("metrics.json", "confusion_matrix.json"):
        p = folder / name
        if p.is_file():
            try:
                docs.append(json.loads(p.read_text()))
            except (ValueError, OSError) as exc:
                log.warning("%s: not readable JSON (%s); skipping it", p, type(exc).__name__)
    if not docs:
        raise AeoptError(f"--finetune {folder}: no metrics.json or confusion_matrix.json there; "
                         f"run `aeopt finetune ... --out {folder}`")
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        for key in ("matrix", "confusion_matrix", "confusion"):
            value = doc.get(key)
            if isinstance(value, dict):
                value = value.get("matrix")
            if _is_square(value) and "matrix" not in found:
                found["matrix"] = [[float(v) for v in row] for row in value]
        for key in ("classes", "class_names", "labels"):
            if isinstance(doc.get(key), list) and all(isinstance(c, str) for c in doc[key]) and "classes" not in found:
                found["classes"] = list(doc[key])
        for key in ("per_class_acc", "per_class_accuracy"):
            value = doc.get(key)
            if isinstance(value, dict) and "per_class" not in found:
                found["per_class"] = {str(k): _num(v) for k, v in value.items()}
            elif isinstance(value, list) and "per_class" not in found:
                found["per_class"] = {str(i): _num(v) for i, v in enumerate(value)}
        for key in ("test_acc", "test_accuracy", "accuracy"):
            if isinstance(doc.get(key), (int, float)) and "test_acc" not in found:
                found["test_acc"] = float(doc[key])
        for key in ("model", "mode", "dataset"):
            if isinstance(doc.get(key), str) and key not in found:
                found[key] = doc[key]
    matrix = found.get("matrix")
    if matrix is not None:
        n = len(matrix)
        if len(found.get("classes", [])) != n:
            per_class_names = list(found.get("per_class", {}))
            found["classes"] = per_class_names if len(per_class_names) == n else [str(i) for i in range(n)]
        if "per_class" not in found:
            found["per_class"] = {c: (matrix[i][i] / sum(matrix[i]) if sum(matrix[i]) else math.nan)
                                  for i, c in enumerate(found["classes"])}
    if matrix is None and "per_class" not in found:
        raise AeoptError(f"--finetune {folder}: found no confusion matrix or per-class accuracy in its JSON files")
    return found


def _is_square(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(r, list) and len(r) == len(value) for r in value)
            and all(isinstance(v, (int, float)) for r in value for v in r))


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def finetune_section(ft: dict[str, Any], folder: Path, out: Path) -> tuple[Section, dict[str, Any]]:
    import plotly.graph_objects as go

    acc = ft.get("test_acc")
    section = Section("Fine-tuned classifier", f"From {folder}" + (f": test accuracy {acc:.4f}." if acc is not None else "."))
    if "matrix" in ft:
        matrix = np.array(ft["matrix"], dtype=float)
        classes = ft["classes"]
        fig, ax = plt.subplots(figsize=(0.7 * len(classes) + 3, 0.7 * len(classes) + 2))
        im = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        top = matrix.max() if matrix.size else 0
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{matrix[i, j]:g}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > top / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title("Confusion matrix on the test split")
        fig.tight_layout()
        pfig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", text=matrix, texttemplate="%{text:g}",
                                    hovertemplate="true %{y}<br>predicted %{x}<br>%{z:g}<extra></extra>"))
        pfig.update_layout(title="Confusion matrix on the test split", xaxis_title="predicted class", yaxis_title="true class",
                           yaxis_autorange="reversed", height=600, template="plotly_white")
        section.items.append(Item("confusion_matrix", "Confusion matrix", save_figure(fig, out / "confusion_matrix.png"), pfig,
                                  "Rows: true class; columns: predicted class."))
    per_class = ft.get("per_class", {})
    if per_class:
        names, values = list(per_class), [per_class[k] for k in per_class]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.bar(range(len(names)), values, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        if acc is not None:
            ax.axhline(acc, color="#c44e52", linestyle="--", label=f"overall {acc:.3f}")
            ax.legend()
        ax.set_title("Per-class test accuracy")
        fig.tight_layout()
        pfig = go.Figure(go.Bar(x=names, y=values, marker_color="#4c72b0"))
        pfig.update_layout(title="Per-class test accuracy", yaxis_range=[0, 1], yaxis_title="test accuracy", height=450,
                           template="plotly_white")
        section.items.append(Item("per_class_accuracy", "Per-class accuracy",
                                  save_figure(fig, out / "per_class_accuracy.png"), pfig))
    return section, {"test_acc": acc, "per_class_acc": per_class}


# ----- HTML --------------------------------------------------------------------------------------


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px; padding: 1rem 2rem;
       color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
figure { margin: 1.5rem 0; } figcaption { color: #555; font-size: 0.9rem; }
img { max-width: 100%; height: auto; } table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }
.missing { color: #a33; font-style: italic; } .meta { color: #666; font-size: 0.85rem; } nav a { margin-right: 1rem; }
"""


def _item_html(item: Item, out: Path) -> str:
    import plotly.io as pio

    parts = [f'<figure id="{item.key}">', f"<h3>{html.escape(item.title)}</h3>"]
    if item.missing:
        parts.append(f'<p class="missing">Not available: {html.escape(item.missing)}</p>')
    elif item.plotly is not None:
        parts.append(pio.to_html(item.plotly, include_plotlyjs=False, full_html=False, default_width="100%",
                                 div_id=f"plot-{item.key}", config={"displaylogo": False, "responsive": True}))
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


def render_html(title: str, subtitle: str, sections: list[Section], out: Path) -> str:
    from plotly.offline import get_plotlyjs

    body = []
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    for i, s in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>')
        if s.intro:
            body.append(f"<p>{html.escape(s.intro)}</p>")
        if s.table:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in s.table)
            body.append(f"<table>{rows}</table>")
        body.extend(_item_html(item, out) for item in s.items)
        body.append("</section>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p>
<nav>{nav}</nav>
{chr(10).join(body)}
</body></html>
"""


# ----- the whole report ----------------------------------------------------------------------------


def build_report(study_name: str, out: str | Path, *, storage_url: str | None = None, finetune: str | Path | None = None,
                 data_dir: str | None = None, device: str | None = None, denoising_study: str | None = None,
                 max_points: int = 2000, show_progress: bool = True) -> Path:
    """Write every figure as PNG and `report.html` (self-contained) to `out`; returns the HTML path."""
    from datetime import UTC, datetime

    from aeopt.files import atomic_write_text
    from aeopt.search.storage import redact, resolve_url
    from aeopt.search.studies import load_study
    from aeopt.training.engine import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    study, spec = load_study(storage_url, study_name)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise StudyError(f"study '{study_name}' has no completed trial yet; run `aeopt worker --study {study_name}` first")
    den_study = load_study(storage_url, denoising_study) if denoising_study else None
    if den_study is not None and den_study[1].model.kind != "denoising_ae":
        raise AeoptError(f"--denoising-study {denoising_study} is a {den_study[1].model.kind} study; name a denoising_ae study")
    # Read the fine-tune folder first: a wrong path should fail before minutes of t-SNE and training.
    ft = read_finetune(Path(finetune)) if finetune else None
    numbers: dict[str, Any] = {"study": study_name, "storage": redact(resolve_url(storage_url))}
    steps = 7 + (1 if finetune else 0)
    with progress(steps, "report", unit="step", enabled=show_progress) as bar:
        search = Section("The search", "Optuna's own plots of the study.")
        search.table = _study_table(study, spec)
        search.items = _study_plots(study, out)
        bar.update({"step": "study plots"})

        main = best_model(study, spec, data_dir=data_dir, device=dev, show_progress=show_progress, out=out,
                          storage_url=resolve_url(storage_url))
        numbers.update(best_trial=main.trial, best_source=main.source, model=main.cfg.model.kind)
        bar.update({"step": "best model"})
        sections, model_numbers, (data, x, _) = model_sections(main, out, data_dir=data_dir, device=dev,
                                                                max_points=max_points, bar=bar)
        numbers.update(model_numbers)
        sections.insert(0, search)

        den = None
        if den_study is not None:
            den = best_model(den_study[0], den_study[1], data_dir=data_dir, device=dev, show_progress=show_progress, out=out,
                             storage_url=resolve_url(storage_url))
            if den.cfg.data.dataset != main.cfg.data.dataset:
                log.warning("the denoising study trained on %s, the main study on %s; comparing on %s",
                            den.cfg.data.dataset, main.cfg.data.dataset, main.cfg.data.dataset)
        pair = denoising_pair(main, den, data_dir=data_dir, device=dev, show_progress=show_progress)
        if pair is not None:
            section, numbers["denoising"] = denoising_section(*pair, x, out)
            sections.append(section)
        else:
            sections.append(Section("Denoising", "Skipped: a VAE study has no autoencoder to compare; pass "
                                                 "--denoising-study NAME to add one."))
        bar.update({"step": "denoising"})

        if ft is not None:
            section, numbers["finetune"] = finetune_section(ft, Path(finetune), out)
            sections.append(section)
            bar.update({"step": "fine-tune"})

        numbers["figures"] = sorted(p.name for p in out.glob("*.png"))
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        subtitle = f"{main.cfg.model.kind} on {main.cfg.data.dataset}; storage {numbers['storage']}; written {when}"
        page = render_html(f"aeopt report: {study_name}", subtitle, sections, out)
        atomic_write_text(out / "report.html", page)
        atomic_write_text(out / "report.json", json.dumps(numbers, indent=2, default=_json_default) + "\n")
        bar.update({"step": "html"})
    log.info("wrote %s and %d PNG figures", out / "report.html", len(numbers["figures"]))
    return out / "report.html"


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return str(v)

