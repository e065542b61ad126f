"""The report's number for generation (`aeopt report --fid-classifier CNN.pt`): the Frechet distance
between the test images and as many new images from the shown autoencoder, and from each model given
with `--compare-generators`, on the penultimate features of aeopt's own trained CNN
(`aeopt.stages.generation` has the math and the sampling)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aeopt.errors import AeoptError
from aeopt.figures import image_rows
from aeopt.report.drawing import figure_item
from aeopt.report.page import Section
from aeopt.report.source import ShownModel, Workbench
from aeopt.stages.generation import (
    N_IMAGES,
    PRIORS,
    FeatureCNN,
    FrechetScorer,
    check_same_data,
    generate,
    how_sampled,
    load_feature_cnn,
)
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import prepare, stratified_subset, to_float
from aeopt.training.engine import mse

N_SHOWN = 10  # generated images per model in the figure


@dataclass
class GenerationInputs:
    """--fid-classifier and --compare-generators, read and checked before any model is trained."""

    cnn: FeatureCNN
    others: list[ShownModel] = field(default_factory=list)


def _generator_file(path: Path, device: torch.device) -> ShownModel:
    p = path / "checkpoint.pt" if path.is_dir() else path
    try:
        model, cfg, payload = load_checkpoint(p, device)
    except AeoptError as exc:
        raise AeoptError(f"--compare-generators {exc}") from None
    return ShownModel(model.eval(), cfg, f"the checkpoint {p}", str(p), payload.get("trial"),
                      payload.get("fold"), payload.get("epoch"))


def read_generation(fid_classifier: str | Path | None, compare: list[Path] | None, device: torch.device,
                    shown: Any = None) -> GenerationInputs | None:
    """The CNN and the models to compare, loaded and checked against the CNN's dataset; None
    without --fid-classifier. `shown` (a ShownModel, or the StudySpec whose best model is shown)
    has the shown model checked too, before minutes of figures and training."""
    if fid_classifier is None:
        if compare:
            raise AeoptError("--compare-generators needs --fid-classifier FILE (the classifier.pt of `aeopt "
                             "baseline cnn`): the distances are measured on that CNN's features")
        return None
    cnn = load_feature_cnn(fid_classifier, device)
    others = [_generator_file(p, device) for p in compare or []]
    for other in others:
        check_same_data(cnn, other.cfg.data.dataset, f"the generator {other.owner} was trained")
    if shown is not None:
        data = shown.cfg.data if isinstance(shown, ShownModel) else shown.data
        check_same_data(cnn, data.dataset, "the shown model was trained")
    return GenerationInputs(cnn, others)


@dataclass
class _Real:
    """The reference (test images) and, as a floor, as many other real images (the training split)."""

    test: torch.Tensor
    train: torch.Tensor


def _real_images(main: ShownModel, bench: Workbench) -> _Real:
    # The whole test split (up to N_IMAGES), whatever subsets the model's own run used, so that
    # every model is scored on the same images.
    whole = main.cfg.data.model_copy(update={"test_subset": None, "train_subset": None})
    data = prepare(whole, bench.data_dir)
    n = min(N_IMAGES, len(data.test), len(data.train))
    test = data.test.take(stratified_subset(data.test.y, n, 0)) if len(data.test) > n else data.test
    train = data.train.take(stratified_subset(data.train.y, n, 0)) if len(data.train) > n else data.train
    return _Real(to_float(test.x, bench.device), to_float(train.x, bench.device))


def _training_images(shown: ShownModel, bench: Workbench) -> torch.Tensor | None:
    """The model's own training split, to fit a Gaussian to its codes (None for a kind with a prior)."""
    if shown.cfg.model.kind in PRIORS:
        return None
    return to_float(prepare(shown.cfg.data, bench.data_dir).train.x, bench.device)


def _score(label: str, shown: ShownModel, real: _Real, scorer: FrechetScorer,
           bench: Workbench) -> tuple[dict[str, Any], torch.Tensor]:
    started = time.perf_counter()
    images = generate(shown.model, real.test.shape[0], train_x=_training_images(shown, bench), seed=0)
    row = {"name": label, "source": shown.source, "kind": shown.cfg.model.kind,
           "latent_dim": int(shown.model.latent_dim), "sampling": how_sampled(shown.model),
           "fd": scorer(images), "test_mse": mse(shown.model, real.test),
           "seconds": round(time.perf_counter() - started, 2)}
    return row, images[:N_SHOWN].cpu()


def _table(cnn: FeatureCNN, n: int, rows: list[dict[str, Any]], floor: float) -> list[tuple[str, str]]:
    table = [("feature network", cnn.describe()),
             ("images compared", f"{n} test images against {n} new images per model"),
             ("real images (reference)", f"FD {floor:.2f}: {n} training images against the test images")]
    table += [(f"{r['name']} ({r['kind']}, latent {r['latent_dim']})",
               f"FD {r['fd']:.2f}; new codes from {r['sampling']}; test MSE {r['test_mse']:.5f}")
              for r in rows]
    return table


def generation_section(main: ShownModel, gen: GenerationInputs,
                       bench: Workbench) -> tuple[Section, dict[str, Any]]:
    """The Frechet distance of each model's new images to the test images, a table and a figure."""
    check_same_data(gen.cnn, main.cfg.data.dataset, "the shown model was trained")
    real = _real_images(main, bench)
    scorer = FrechetScorer(gen.cnn.model, real.test)
    floor = scorer(real.train)
    rows, shown = [], []
    for label, model in [("shown model", main), *[(o.owner, o) for o in gen.others]]:
        row, images = _score(label, model, real, scorer, bench)
        rows.append(row)
        shown.append(images)
    n = int(real.test.shape[0])
    section = Section("Generation: Frechet distance", key="generation", intro=(
        "How close new images are to real ones, as one number: the Frechet distance between the Gaussians "
        "fitted to the features of the test images and of as many new images, on the last hidden layer of "
        "aeopt's own CNN trained on this dataset (FID with that CNN for Inception). Lower is better; "
        "two sets of real images give the floor. Comparable only under the same CNN and image count."))
    section.table = _table(gen.cnn, n, rows, floor)
    labels = [f"{r['name']}: FD {r['fd']:.1f}" for r in rows]
    fig = image_rows(shown, labels, "New images from each model (first 10 of those scored)")
    section.items.append(figure_item(bench.out, "generation_samples", "New images scored", fig,
                                     caption="The first images of each model's scored set; FD per row."))
    numbers = {"classifier": str(gen.cnn.path), "classifier_dataset": gen.cnn.dataset,
               "classifier_test_acc": gen.cnn.test_acc, "features": gen.cnn.n_features,
               "n_test": n, "n_generated": n, "fd_real_train_vs_test": floor, "models": rows}
    return section, numbers
