"""The denoising comparison: a plain and a denoising autoencoder on inputs with noise std 0.1 * i.

Two studies' best models (`--denoising-study`) are compared as they are. Otherwise the report's
experiment is repeated: one architecture trained twice by the train stage, without and with input
noise, on the same split for the same budget. A checkpoint from cross-validation (trained on one
fold's images) would not be a fair opponent for a model trained on the 80/20 split, so both sides
are trained, except a side the report already trained from the very same configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aeopt.config import ConvAEConfig, RunConfig
from aeopt.errors import AeoptError
from aeopt.figures import image_rows
from aeopt.report import analysis
from aeopt.report.drawing import figure_item, lines
from aeopt.report.page import Grid, Section
from aeopt.report.source import ShownModel, Workbench
from aeopt.training.kinds.aae import code_dim

log = logging.getLogger(__name__)

DEFAULT_NOISE = 0.3  # the denoising partner's noise std when no configuration names one
N_LEVELS = 6  # noise std 0.0 .. 0.5
WHY = ("the comparison repeats the experiment: one architecture trained twice the same way on the 80/20 "
       "split, without and with input noise, so that only the noise differs")


@dataclass(frozen=True)
class DenoisingChoice:
    """What the report does for the denoising comparison (`--denoising`), and whether the default chose it."""

    mode: str  # "skip", "train" (a plain and a denoising AE trained here) or "reuse" (a study's best model)
    study: str | None = None  # the denoising_ae study, for "reuse"
    default: bool = False

    @property
    def flag(self) -> str:
        return f"--denoising study:{self.study}" if self.mode == "reuse" else f"--denoising {self.mode}"

    def chosen_by(self, device_type: str) -> str:
        if self.default and self.mode != "reuse":
            return f"the default on {'CUDA' if device_type == 'cuda' else 'a CPU'}"
        return self.flag

    def others(self) -> str:
        """How to get the other choices, as one sentence."""
        ways = {"skip": "--denoising skip leaves the comparison out",
                "train": "--denoising train trains a plain and a denoising AE of this architecture here "
                         "(minutes on a CPU)",
                "reuse": "--denoising study:NAME compares with the best model of a denoising_ae study"}
        rest = "; ".join(v for k, v in ways.items() if k != self.mode)
        return f"{rest[0].upper()}{rest[1:]}."

    def note(self, device_type: str) -> str:
        """Which choice made this section, and how to get the others, for the page."""
        return f"Chosen by {self.chosen_by(device_type)}. {self.others()}"


def choose_denoising(value: str | None, study: str | None, device_type: str) -> DenoisingChoice:
    """--denoising skip | train | study:NAME (--denoising-study NAME is study:NAME). By default a named
    study is reused; otherwise the pair is trained on CUDA and skipped on a CPU, where it takes minutes."""
    if value in (None, "", "auto"):
        if study:
            return DenoisingChoice("reuse", study, default=True)
        return DenoisingChoice("train" if device_type == "cuda" else "skip", default=True)
    if value.startswith("study:"):
        name = value.removeprefix("study:").strip()
        if not name:
            raise AeoptError("--denoising study: needs a study name, e.g. --denoising study:denoising_ae")
        if study and study != name:
            raise AeoptError(f"--denoising {value} and --denoising-study {study} name different studies; "
                             "pass one")
        return DenoisingChoice("reuse", name)
    if value in ("skip", "train"):
        if study:
            raise AeoptError(f"--denoising {value} and --denoising-study {study} disagree; pass one of them")
        return DenoisingChoice(value)
    raise AeoptError(f"--denoising {value}: use skip, train, or study:NAME (a denoising_ae study to reuse)")


CONV_KINDS = ("conv_ae", "denoising_ae", "aae")  # kinds with a conv encoder and decoder to train as a pair


def partner_config(cfg: RunConfig, kind: str, noise: float = 0.0) -> RunConfig:
    """The same architecture and training as `cfg`, as a plain or a denoising autoencoder. An AAE's
    encoder and decoder are a conv AE's with a code of its full width (style plus categories): that
    conv AE, without the discriminator and the prior."""
    d = cfg.model_dump(mode="json")
    model = d["model"]
    if model["kind"] == "aae":
        model = {k: v for k, v in model.items() if k in ConvAEConfig.model_fields}
        model["latent_dim"] = code_dim(cfg.model)
    d["model"] = {**model, "kind": kind, "noise_std": noise if kind == "denoising_ae" else 0.0}
    return RunConfig.model_validate(d)


def pair_missing(kind: str) -> str | None:
    """Why no pair can be trained from a model of this kind (None when one can)."""
    if kind in CONV_KINDS:
        return None
    return f"a {kind} has no convolutional encoder and decoder to train without and with input noise"


def require_trainable(choice: DenoisingChoice, kind: str) -> None:
    """`--denoising train` asked for by name fails at once for a model it cannot be done for: the user
    expects the comparison on the page, and finds out before minutes of t-SNE, not in a skipped section.
    (By default on CUDA the section is skipped and says why: nobody asked for it.)"""
    why = pair_missing(kind)
    if choice.mode == "train" and not choice.default and why is not None:
        raise AeoptError(f"--denoising train: {why}; pass --denoising study:NAME (a denoising_ae study) or "
                         "--denoising skip")


def _base(main: ShownModel, partner: ShownModel | None) -> ShownModel | None:
    """Whose architecture both sides take: the main model's, else (a VAE; an AAE beside a denoising
    study) the denoising study's."""
    kind = main.cfg.model.kind
    if kind == "denoising_ae" and partner is not None:
        log.warning("the main model is itself a denoising_ae: comparing its architecture, "
                    "not --denoising-study's")
    if kind in ("conv_ae", "denoising_ae") or (kind in CONV_KINDS and partner is None):
        return main
    return partner


def _side(base: ShownModel, cfg: RunConfig, what: str, bench: Workbench) -> ShownModel:
    # A model this report already trained from this very configuration is reused, not trained again.
    if base.trained is not None and base.cfg.model_dump() == cfg.model_dump():
        return base
    model, trained = bench.train(cfg, why=WHY, what=what)
    return ShownModel(model, cfg, f"{what}, trained here", base.owner, trained=trained)


def denoising_pair(main: ShownModel, partner: ShownModel | None,
                   bench: Workbench) -> tuple[ShownModel, ShownModel] | None:
    """(plain AE, denoising AE) to compare, or None for a VAE without a denoising study."""
    if main.cfg.model.kind == "conv_ae" and partner is not None:
        return main, partner
    base = _base(main, partner)
    if base is None:
        return None
    arch = ("architecture" if base.cfg.model.kind != "aae" else
            "encoder and decoder as a conv AE (no discriminator, no prior)")
    plain = _side(base, partner_config(base.cfg, "conv_ae"), f"{base.owner}'s {arch} without noise", bench)
    noise = base.cfg.model.noise_std if base.cfg.model.kind == "denoising_ae" else DEFAULT_NOISE
    den = _side(base, partner_config(base.cfg, "denoising_ae", noise),
                f"{base.owner}'s {arch} with noise std {noise:g}", bench)
    return plain, den


def _examples(plain: ShownModel, den: ShownModel, x: torch.Tensor, stds: list[float]) -> Any:
    rows, labels = [], []
    for k in range(2):
        noisy = torch.cat([n.cpu() for n in analysis.noisy_inputs(x[k : k + 1], stds, seed=k)])
        rows += [noisy, analysis.outputs(plain.model, noisy), analysis.outputs(den.model, noisy)]
        labels += [f"noisy #{k + 1}", "conv AE", "denoising AE"]
    return image_rows(rows, labels, "Noisy inputs and both models' outputs", [f"std {s:.1f}" for s in stds])


def denoising_section(plain: ShownModel, den: ShownModel, x: torch.Tensor,
                      out: Path, note: str = "") -> tuple[Section, dict[str, Any]]:
    """Noisy inputs at std 0.1 * i, both models' outputs, and the MSE of each per noise level."""
    stds = analysis.noise_levels(N_LEVELS)
    curves = analysis.denoising_mse({"plain": plain.model, "denoising": den.model}, x, stds)
    section = Section("Denoising", "Gaussian noise of std 0.1 * i added to test images (clamped to [0, 1]). "
                                   f"Conv AE: {plain.source}. Denoising AE (trained with noise std "
                                   f"{den.cfg.model.noise_std:g}): {den.source}. {note}".rstrip(),
                      key="denoising")
    section.items.append(figure_item(out, "denoising_examples", "Noisy inputs and outputs",
                                     _examples(plain, den, x, stds)))
    fig, pfig = lines(stds, {"conv AE": curves["plain"], "denoising AE": curves["denoising"]},
                      "Reconstruction error from noisy inputs", ("noise std", "MSE to the clean image"))
    caption = "Mean squared error between each model's output and the clean test image."
    section.items.append(figure_item(out, "denoising_mse", "MSE per noise level", fig, pfig, caption))
    rows = [[f"{s:.1f}", f"{a:.4f}", f"{b:.4f}"]
            for s, a, b in zip(stds, curves["plain"], curves["denoising"], strict=True)]
    section.grids.append(Grid(["noise std", "conv AE MSE", "denoising AE MSE"], rows,
                              "MSE to the clean test image, per noise std of the input"))
    for who, side in (("conv AE", plain), ("denoising AE", den)):
        if side.trained is not None:
            section.table += side.trained.rows(who)
    numbers = {"noise_std": stds, "plain_source": plain.source, "denoising_source": den.source,
               "plain_trained_here": plain.trained.as_dict() if plain.trained else None,
               "denoising_trained_here": den.trained.as_dict() if den.trained else None,
               "mse_plain": curves["plain"], "mse_denoising": curves["denoising"]}
    return section, numbers


def skipped_section(choice: DenoisingChoice | None = None, device_type: str = "cpu",
                    kind: str = "vae") -> Section:
    """The section when nothing is compared: skipped by choice (which, and how to get the comparison), or
    a model of a `kind` with no conv architecture, and no denoising study to take one from."""
    if choice is not None and choice.mode == "skip":
        why = (f"{choice.chosen_by(device_type)}, as the comparison trains two autoencoders here"
               if choice.default else choice.flag)
        return Section("Denoising", f"Skipped ({why}). {choice.others()}", key="denoising")
    why = pair_missing(kind) or f"no pair could be made from a {kind}"
    return Section("Denoising", f"Skipped: {why}; pass --denoising study:NAME (a denoising_ae study) to add "
                                "one.", key="denoising")
