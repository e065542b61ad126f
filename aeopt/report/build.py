"""`aeopt report`: a study and its best model, or one given autoencoder checkpoint, as PNG figures,
`report.json` (the numbers) and one self-contained HTML page.

Sections follow the homework report: the search itself (with a study), the model shown and its
reconstructions, the latent space by PCA and t-SNE, new samples, denoising at noise std 0.1 * i
and, given a fine-tune folder, the classifier's confusion matrix and per-class accuracy. The
report reads; where it needs a model it does not have, the train stage trains it (`source.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aeopt.config import StudySpec
from aeopt.errors import AeoptError, StudyError
from aeopt.files import atomic_write_text
from aeopt.progress import Progress, progress
from aeopt.report.aae import aae_section
from aeopt.report.denoising import (
    DenoisingChoice,
    choose_denoising,
    denoising_pair,
    denoising_section,
    require_trainable,
    skipped_section,
)
from aeopt.report.finetune import finetune_section, read_run
from aeopt.report.generation import GenerationInputs, generation_section, read_generation
from aeopt.report.leftovers import CHECKPOINTS, remove_leftovers, report_files, written_checkpoints
from aeopt.report.model import latent_section, load_sample, model_section, samples_section
from aeopt.report.page import Section, render_html
from aeopt.report.source import ShownModel, Workbench, best_of_study, from_file
from aeopt.report.study import require_best, search_section
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study
from aeopt.stages.metrics import ClassifierRun
from aeopt.training.engine import resolve_device

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What the user named, read and checked before any figure is drawn or model trained."""

    storage: Storage | None = None  # where the studies are (None with --checkpoint alone)
    study: Any | None = None  # an optuna.Study (only search/ and cli/ import optuna)
    spec: StudySpec | None = None
    partner: tuple[Any, StudySpec] | None = None  # --denoising study:NAME (or --denoising-study NAME)
    denoising: DenoisingChoice = DenoisingChoice("skip", default=True)  # --denoising
    given: ShownModel | None = None  # --checkpoint
    finetune: ClassifierRun | None = None
    generation: GenerationInputs | None = None  # --fid-classifier (and --compare-generators)


def _load(storage: Storage | None, name: str, option: str) -> tuple[Any, StudySpec]:
    if storage is None:
        raise ValueError(f"{option} {name} needs a storage: pass storage=open_storage(url)")
    study, spec = load_study(storage, name)
    require_best(study)
    return study, spec


def read_inputs(study_name: str | None, storage: Storage | None, *, checkpoint: str | Path | None,
                finetune: str | Path | None, denoising_study: str | None, bench: Workbench) -> Inputs:
    """Everything named, read first: a wrong name fails before minutes of t-SNE and training."""
    if study_name is None and checkpoint is None:
        raise AeoptError("name what to report: --study NAME (a study and its best model), --checkpoint FILE "
                         "(one autoencoder), or both")
    inputs = Inputs(storage if study_name is not None or denoising_study is not None else None)
    if study_name is not None:
        inputs.study, inputs.spec = _load(storage, study_name, "--study")
        if checkpoint is None and inputs.spec.task != "autoencoder":
            raise StudyError(f"study '{study_name}' tunes a {inputs.spec.task}, not an autoencoder; pass "
                             "--checkpoint FILE to show an autoencoder beside its search")
    if denoising_study is not None:
        inputs.partner = _load(storage, denoising_study, "--denoising-study")
        kind = inputs.partner[1].model.kind
        if kind != "denoising_ae":
            raise AeoptError(f"--denoising study:{denoising_study} is a {kind} study; "
                             "name a denoising_ae study")
    if finetune is not None:
        inputs.finetune = read_run(finetune)
    if checkpoint is not None:
        inputs.given = from_file(checkpoint, bench.device)
    return inputs


def _steps(inputs: Inputs) -> int:
    # model, reconstructions, latent space, samples, denoising, html; plus the search and the fine-tune.
    return 6 + (inputs.study is not None) + (inputs.finetune is not None) + (inputs.generation is not None)


def _main_model(inputs: Inputs, bench: Workbench) -> ShownModel:
    if inputs.given is not None:
        if inputs.spec is not None and inputs.spec.data.dataset != inputs.given.cfg.data.dataset:
            log.warning("the study searched on %s, the checkpoint was trained on %s",
                        inputs.spec.data.dataset, inputs.given.cfg.data.dataset)
        return inputs.given
    return best_of_study(inputs.study, inputs.spec, inputs.storage, bench)


def _denoising(main: ShownModel, inputs: Inputs, bench: Workbench,
               x: Any) -> tuple[Section, dict[str, Any] | None]:
    choice, device_type = inputs.denoising, bench.device.type
    if choice.mode == "skip":
        return skipped_section(choice, device_type), None
    partner = None
    if inputs.partner is not None:
        partner = best_of_study(*inputs.partner, inputs.storage, bench)
        if partner.cfg.data.dataset != main.cfg.data.dataset:
            log.warning("the denoising study trained on %s, the main model on %s; comparing on %s",
                        partner.cfg.data.dataset, main.cfg.data.dataset, main.cfg.data.dataset)
    pair = denoising_pair(main, partner, bench)
    if pair is None:
        return skipped_section(choice, device_type, main.cfg.model.kind), None
    section, found = denoising_section(*pair, x, bench.out, choice.note(device_type))
    return section, {**found, "choice": choice.flag, "by_default": choice.default}


def _sections(inputs: Inputs, bench: Workbench, max_points: int,
              bar: Progress) -> tuple[list[Section], dict[str, Any], ShownModel]:
    sections: list[Section] = []
    numbers: dict[str, Any] = {}
    if inputs.study is not None:
        sections.append(search_section(inputs.study, inputs.spec, bench.out))
        bar.update({"step": "study plots"})
    main = _main_model(inputs, bench)
    numbers.update(model=main.cfg.model.kind, dataset=main.cfg.data.dataset, **main.as_dict())
    bar.update({"step": "model"})
    sample = load_sample(main, bench.data_dir, bench.device, max_points)
    title = "The given model" if inputs.given is not None else "The best trial's model"
    section, found = model_section(main, sample, bench.out, title)
    sections.append(section)
    numbers.update(found)
    bar.update({"step": "reconstructions"})
    section, found = latent_section(main, sample, bench.out)
    sections.append(section)
    numbers.update(found)
    bar.update({"step": "latent space"})
    sections.append(samples_section(main, sample, bench.out, max_points))
    bar.update({"step": "new samples"})
    if main.cfg.model.kind == "aae":
        section, numbers["aae"] = aae_section(main, sample, bench.out, inputs.study)
        sections.append(section)
    if inputs.generation is not None:
        section, numbers["generation"] = generation_section(main, inputs.generation, bench)
        sections.append(section)
        bar.update({"step": "generation"})
    section, found = _denoising(main, inputs, bench, sample.x)
    sections.append(section)
    if found is not None:
        numbers["denoising"] = found
    bar.update({"step": "denoising"})
    if inputs.finetune is not None:
        section, numbers["finetune"] = finetune_section(inputs.finetune, bench.out)
        sections.append(section)
        bar.update({"step": "fine-tune"})
    return sections, numbers, main


def drawn_figures(sections: list[Section], out: Path) -> list[str]:
    """The PNGs the sections drew, relative to `out`: what the page shows, not whatever is in the folder."""
    return sorted(item.png.relative_to(out).as_posix() for s in sections for item in s.items
                  if item.png is not None and not item.missing)


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


def build_report(study_name: str | None, out: str | Path, *, storage: Storage | None = None,
                 checkpoint: str | Path | None = None, finetune: str | Path | None = None,
                 data_dir: str | None = None, device: str | None = None, denoising_study: str | None = None,
                 denoising: str | None = None,
                 max_points: int = 2000, show_progress: bool = True, fid_classifier: str | Path | None = None,
                 compare_generators: list[Path] | None = None, final_out: str | Path | None = None) -> Path:
    """Write every figure as PNG, report.json and report.html (self-contained) to `out`; returns the page.

    `study_name` (read from `storage`) adds the search section and, without `checkpoint`, shows the
    study's best model; `checkpoint` shows that autoencoder instead (no storage needed).
    `denoising`: skip, train or study:NAME (see `choose_denoising`; `denoising_study` is study:NAME).
    `final_out`: where `out` ends up, for the log line (the CLI builds in a staging folder moved there).
    A figure or checkpoint an earlier report left in `out` that this one did not write is removed
    (`leftovers.py`).
    """
    out = Path(out)
    bench = Workbench(out, resolve_device(device), data_dir, show_progress)
    choice = choose_denoising(denoising, denoising_study, bench.device.type)
    inputs = read_inputs(study_name, storage, checkpoint=checkpoint, finetune=finetune,
                         denoising_study=choice.study, bench=bench)
    inputs.denoising = choice
    shown = inputs.given.cfg if inputs.given is not None else inputs.spec
    require_trainable(choice, shown.model.kind)
    inputs.generation = read_generation(fid_classifier, compare_generators, bench.device,
                                        shown=inputs.given or inputs.spec)
    out.mkdir(parents=True, exist_ok=True)
    previous = report_files(out)
    head: dict[str, Any] = {"study": study_name,
                            "storage": inputs.storage.display if inputs.storage is not None else None,
                            "checkpoint": str(checkpoint) if checkpoint is not None else None}
    with progress(_steps(inputs), "report", unit="step", enabled=show_progress) as bar:
        sections, numbers, main = _sections(inputs, bench, max_points, bar)
        numbers = {**head, **numbers, "figures": drawn_figures(sections, out),
                   CHECKPOINTS: written_checkpoints(out)}
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        where = [f"{k} {head[k]}" for k in ("storage", "checkpoint") if head[k]]
        subtitle = "; ".join([f"{main.cfg.model.kind} on {main.cfg.data.dataset}", *where, f"written {when}"])
        title = f"aeopt report: {study_name or checkpoint}"
        atomic_write_text(out / "report.html", render_html(title, subtitle, sections, out))
        atomic_write_text(out / "report.json", json.dumps(numbers, indent=2, default=_json_default) + "\n")
        bar.update({"step": "html"})
    remove_leftovers(out, previous, [*numbers["figures"], *numbers[CHECKPOINTS]])
    log.info("wrote %s and %d PNG figures", Path(final_out or out) / "report.html", len(numbers["figures"]))
    return out / "report.html"
