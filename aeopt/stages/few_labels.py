"""Few labels: classifiers on pretrained encoders at small label budgets, mean +- std over label draws.

Each encoder (a trained autoencoder's state, or None for random initialisation) is pretrained once,
elsewhere, on the whole training split without labels; here it is fine-tuned once per label draw:
1. draw `labels` images from the training split, stratified and seeded by the draw, and split them
   80/20 (the 20 % stop early and pick the epoch: never the test split);
2. fine-tune a head and the encoder on them (`finetune_once`: the fine-tune stage's recipe, with
   the head alone first when `finetune.probe_epochs` > 0);
3. pseudo-labels (Lee, "Pseudo-Label", ICML 2013 workshop; self-training): the classifier labels
   the unlabelled training images, the `per_class` most confident of each predicted class join the
   labelled ones, and a fresh classifier from the same pretrained encoder trains on them all, still
   stopped early on the 20 % of true labels; `rounds` times;
4. consistency regularisation (`consistency`, off unless given: FixMatch, in
   aeopt/training/consistency.py): the last classifier trains on, labelled batches beside
   confident guesses on weak views of the unlabelled images as targets for strong views;
5. the test split scores the classifier of each reported stage once (the first fine-tune, and the
   last stage's), after every choice was made on validation labels.

With `spreading` (`aeopt baseline few-labels --spread`), label spreading on the encoder's codes
(aeopt/training/label_spreading.py: a k-NN graph of the training pool's codes, no gradient step)
takes step 2's place: the first classifier is the spread, and the first pseudo-label round takes
its most confident labels (spread from the 80 % alone, so the 20 % still judge what trains on them).

A semi-supervised AAE (`model.categories` > 0) takes another path per draw, `semi_supervised_draw`:
its own labelled phase (aeopt/training/kinds/aae_ssl.py), its category head the classifier, no
pseudo-labels; the test split scores it once.

Knows nothing about Optuna; `aeopt compare` reads the folder `write_label_draws` writes.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from aeopt.config import FinetuneRun, load_finetune_config, run_config
from aeopt.errors import AeoptError
from aeopt.files import atomic_write_text, make_folder
from aeopt.progress import progress
from aeopt.stages.classifier_run import LabelledData, evaluate_on_test, labelled_split
from aeopt.stages.finetune_fit import FinetuneSetup, finetune_once, split_xy
from aeopt.stages.pretrain import autoencoder_state
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.consistency import ConsistencySettings, fit_consistency
from aeopt.training.data import Split, stratified_split, stratified_subset, to_float, training_pool
from aeopt.training.engine import set_seed
from aeopt.training.kinds.aae_ssl import SemiSupervisedSettings, fit_semi_supervised
from aeopt.training.label_spreading import CodeSpace, SpreadSettings, encode, graph, propagate, vote
from aeopt.training.models import build_model
from aeopt.training.supervised import Classifier, augmentation_for, evaluate

LABEL_DRAWS_FILE = "label_draws.json"
# The few-label fine-tune recipe, as `--set` overrides of the `finetune:` section (chosen before any
# test figure was seen): the head alone first, then the whole network; strong weight decay (AdamW);
# shifts and flips come with `augment: auto` below 5,000 labelled images.
RECIPE = ["finetune.probe_epochs=3", "finetune.max_epochs=20", "finetune.patience=6",
          "finetune.weight_decay=0.01", "finetune.head_hidden=64"]


@dataclass(frozen=True)
class PseudoLabels:
    """Self-training after the first fine-tune; rounds = 0 turns it off."""

    rounds: int = 1
    per_class: int = 400  # most confident unlabelled images kept per predicted class


@dataclass
class DrawResult:
    draw: int
    test_acc: float  # after the last stage (pseudo-labels, consistency): the figure the method reports
    test_acc_labelled_only: float  # the first fine-tune, on the drawn labels alone
    val_acc: float
    pseudo_label_acc: list[float] = field(default_factory=list)  # per round: agreement with true labels
    seconds: float = 0.0
    consistency: list[dict[str, float]] = field(default_factory=list)  # its validation record, if on
    n_test: int = 0  # the test images that scored it (`aeopt compare` checks rows share a test set)
    test_set: str | None = None  # their Split.digest()


@dataclass
class BudgetResult:
    """One encoder at one label budget over its draws."""

    encoder: str
    labels: int
    draws: list[DrawResult]
    dataset: str | None = None

    @property
    def test_accs(self) -> list[float]:
        return [d.test_acc for d in self.draws]

    def summary(self) -> dict[str, Any]:
        def mean_std(values: list[float]) -> tuple[float, float]:
            return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0

        acc, std = mean_std(self.test_accs)
        only, only_std = mean_std([d.test_acc_labelled_only for d in self.draws])
        return {"encoder": self.encoder, "labels": self.labels, "draws": len(self.draws),
                "dataset": self.dataset, "n_test": self.draws[0].n_test if self.draws else None,
                "test_set": self.draws[0].test_set if self.draws else None,
                "test_acc_mean": acc, "test_acc_std": std,
                "labelled_only_test_acc_mean": only, "labelled_only_test_acc_std": only_std,
                "val_acc_mean": statistics.fmean(d.val_acc for d in self.draws),
                "seconds": sum(d.seconds for d in self.draws), "per_draw": [asdict(d) for d in self.draws]}


def most_confident(probs: torch.Tensor, per_class: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row indices, predicted labels): the `per_class` most confident rows of each predicted class
    of class scores `probs`, so that a pseudo-labelled set stays balanced when the teacher favours
    some classes."""
    confidence, predicted = probs.max(1)
    keep = []
    for c in range(n_classes):
        idx = torch.nonzero(predicted == c).flatten()
        keep.append(idx[confidence[idx].argsort(descending=True)[:per_class]])
    idx = torch.sort(torch.cat(keep)).values
    return idx, predicted[idx]


@torch.no_grad()
def confident_pseudo_labels(model: Classifier, x: torch.Tensor, per_class: int,
                            n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices into x, predicted labels): `most_confident` of the classifier's softmax on x."""
    probs = evaluate(model, x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
                     probabilities=True).probabilities
    return most_confident(probs, per_class, n_classes)


@dataclass(frozen=True)
class SpreadTeacher:
    """Label spreading on the encoder's codes (`spreading` given), in place of the first fine-tune."""

    test_acc: float  # the spread from all drawn labels, voted onto the test split
    val_acc: float  # the spread from the 80 % alone, on the 20 % (graph nodes without their labels)
    scores: torch.Tensor  # that 80 % spread's scores of the pool's images outside the draw
    agreement: float  # how often those scores' argmax is the true label: reported, never used


def spread_teacher(cfg: FinetuneRun, ae_state: dict[str, torch.Tensor] | None, pool: Split,
                   test: Split, drawn: torch.Tensor, rest: torch.Tensor, *, draw: int, n_classes: int,
                   settings: SpreadSettings, device: torch.device) -> SpreadTeacher:
    """The training pool's codes (the pretrained encoder, or random weights seeded by the draw) as
    a k-NN graph, the drawn labels spread over it (aeopt/training/label_spreading.py). The test
    split never enters the graph: its images vote. Pseudo-labels come from the spread of the 80 %
    only, so that the 20 % still judge the fine-tune on them with labels nothing has seen."""
    set_seed(draw)
    model = build_model(run_config(cfg)).to(device)
    if ae_state is not None:
        model.load_state_dict(ae_state)
    # Seconds to a minute a draw on a CPU: a bar (a log line off a terminal) per stage of it.
    with progress(3, f"{len(drawn)} labels, spreading, draw {draw}", unit="stage") as bar:
        z = encode(model, to_float(pool.x, device))
        space = CodeSpace(z)
        g = space(z)
        bar.update({"codes": len(g)})
        tr, va = stratified_split(pool.y[drawn], cfg.data.val_fraction, draw)
        y = pool.y.to(device)
        train_pos, val_pos = drawn[tr].to(device), drawn[va].to(device)
        affinity = graph(g, settings)  # one k-NN graph for both spreads of the draw
        partial = propagate(affinity, train_pos, y[train_pos], n_classes, settings)
        val_acc = float((partial[val_pos].argmax(1) == y[val_pos]).float().mean())
        rest = rest.to(device)
        agreement = float((partial[rest].argmax(1) == y[rest]).float().mean())
        bar.update({"val_acc": val_acc})
        full = propagate(affinity, drawn.to(device), y[drawn.to(device)], n_classes, settings)
        voted = vote(space(encode(model, to_float(test.x, device))), g, full, settings)
        test_acc = float((voted.argmax(1).cpu() == test.y).float().mean())
        bar.update()
    return SpreadTeacher(test_acc, val_acc, partial[rest], agreement)


def one_draw(cfg: FinetuneRun, ae_state: dict[str, torch.Tensor] | None, *, labels: int, draw: int,
             pseudo: PseudoLabels, device: torch.device, data_dir: str | None = None,
             consistency: ConsistencySettings | None = None,
             spreading: SpreadSettings | None = None) -> DrawResult:
    """Fine-tune on draw `draw` of `labels` training labels, or spread them over the encoder's codes
    (`spreading` given); then pseudo-labels, then consistency regularisation when given. The test
    split scores the first and the last classifier once each."""
    started = time.perf_counter()
    data_cfg = cfg.data.model_copy(update={"split_seed": draw})
    cfg = cfg.model_copy(update={"data": data_cfg, "seed": draw})
    data = labelled_split(data_cfg, labels, data_dir)
    n_classes = len(data.classes)
    if getattr(cfg.model, "categories", 0):
        return semi_supervised_draw(cfg, ae_state, data, labels=labels, draw=draw, device=device,
                                    data_dir=data_dir, started=started)
    setup = FinetuneSetup(cfg, ae_state, n_classes, device)
    train, val = split_xy(data.train, device), split_xy(data.val, device)
    pool = training_pool(data_cfg, data_dir=data_dir)
    # The drawn images (validation ones included) are not pseudo-labelled: early stopping must see
    # only true labels it never trained on. Same indices as labelled_split's draw.
    drawn = stratified_subset(pool.y, labels, draw)
    rest = torch.ones(len(pool), dtype=torch.bool)
    rest[drawn] = False
    rest = torch.nonzero(rest).flatten()
    unlabelled, truth = split_xy(pool.take(rest), device)
    agreement: list[float] = []
    if spreading is not None:
        teacher = spread_teacher(cfg, ae_state, pool, data.test, drawn, rest, draw=draw,
                                 n_classes=n_classes, settings=spreading, device=device)
        model, first, val_acc = None, teacher.test_acc, teacher.val_acc
        agreement.append(teacher.agreement)
    else:
        model, fit = finetune_once(setup, train, val, seed=draw, desc=f"{labels} labels, draw {draw}")
        first, val_acc = evaluate_on_test([model], data.test, n_classes, device).accuracy, fit.best_val_acc
    for _ in range(pseudo.rounds):
        if model is None:  # the spread is the first round's teacher
            idx, guessed = most_confident(teacher.scores, pseudo.per_class, n_classes)
        else:
            idx, guessed = confident_pseudo_labels(model, unlabelled, pseudo.per_class, n_classes)
        # Both teachers score on the host (sklearn's spread; `evaluate`'s probabilities): on CUDA the
        # guesses must join the labels on the device.
        idx, guessed = idx.to(device), guessed.to(device)
        if model is not None:
            agreement.append(float((guessed == truth[idx]).float().mean()))  # reported, never used to choose
        grown = (torch.cat([train[0], unlabelled[idx]]), torch.cat([train[1], guessed]))
        desc = f"{labels} labels + pseudo, draw {draw}"
        model, fit = finetune_once(setup, grown, val, seed=draw, desc=desc)
        val_acc = fit.best_val_acc
    record = []
    if consistency is not None:
        if model is None:
            raise AeoptError("consistency regularisation trains a classifier: with label spreading "
                             "it needs at least one pseudo-label round (--pseudo-rounds 1)")
        weak = augmentation_for(cfg.finetune.augment, cfg.data.dataset, train[0].shape[0])
        # Thousands of steps run minutes a draw on a CPU: a bar (a log line off a terminal) per check.
        checks = -(-consistency.steps // consistency.eval_every)
        with progress(checks, f"{labels} labels + consistency, draw {draw}", unit="check") as bar:
            model, cfit = fit_consistency(
                model, train, val, unlabelled, seed=draw, settings=consistency, weak=weak,
                on_eval=lambda step, row: bar.update({"step": step, "val_acc": row["val_acc"],
                                                      "confident": row["mask"]}))
        val_acc, record = cfit.val_acc, cfit.history
    later = model is not None and (pseudo.rounds or consistency is not None)
    last = evaluate_on_test([model], data.test, n_classes, device).accuracy if later else first
    return DrawResult(draw=draw, test_acc=last, test_acc_labelled_only=first, val_acc=val_acc,
                      pseudo_label_acc=agreement, seconds=round(time.perf_counter() - started, 1),
                      consistency=record, n_test=len(data.test),
                      test_set=data.test.digest())


def semi_supervised_draw(cfg: FinetuneRun, ae_state: dict[str, torch.Tensor] | None, data: LabelledData, *,
                         labels: int, draw: int, device: torch.device, data_dir: str | None,
                         started: float) -> DrawResult:
    """The semi-supervised AAE (`model.categories` > 0): from its trained state (None: fresh
    weights), `model.ssl_steps` steps of reconstruction and adversarial terms on the unlabelled
    training images and cross-entropy on the draw's labelled ones; its category head is the
    classifier. The drawn images (validation ones too) are not among the unlabelled; no
    pseudo-labels (the categorical prior does their work); the test split scores it once."""
    set_seed(draw)  # before the model: fresh weights (ae_state None) are the draw's, not the RNG's history
    model = build_model(run_config(cfg)).to(device)
    if ae_state is not None:
        model.load_state_dict(ae_state)
    pool = training_pool(cfg.data, data_dir=data_dir)
    rest = torch.ones(len(pool), dtype=torch.bool)
    rest[stratified_subset(pool.y, labels, draw)] = False
    unlabelled, _ = split_xy(pool.take(torch.nonzero(rest).flatten()), device)
    train, val = split_xy(data.train, device), split_xy(data.val, device)
    clf, fit = fit_semi_supervised(model, unlabelled, train, val, lr=cfg.optim.lr, seed=draw,
                                   settings=SemiSupervisedSettings(steps=cfg.model.ssl_steps))
    acc = evaluate_on_test([clf], data.test, len(data.classes), device).accuracy
    return DrawResult(draw=draw, test_acc=acc, test_acc_labelled_only=acc, val_acc=fit.best_val_acc,
                      seconds=round(time.perf_counter() - started, 1), n_test=len(data.test),
                      test_set=data.test.digest())


Encoder = tuple[FinetuneRun, "dict[str, torch.Tensor] | None"]


def label_budget(encoders: dict[str, Encoder], budgets: list[int], draws: int, *, pseudo: PseudoLabels,
                 device: torch.device, data_dir: str | None = None,
                 consistency: ConsistencySettings | None = None,
                 spreading: SpreadSettings | None = None) -> list[BudgetResult]:
    """Every encoder (name -> (its fine-tune config, its pretrained state; None: random
    initialisation)) at every label budget, over draws 0 .. draws-1 (the same draws for each)."""
    for cfg, _ in encoders.values():  # a budget the data cannot hold fails before any draw trains
        for n in {min(budgets), max(budgets)}:
            labelled_split(cfg.data, n, data_dir, field="--budgets")
    return [BudgetResult(name, n, [one_draw(cfg, state, labels=n, draw=d, pseudo=pseudo, device=device,
                                            data_dir=data_dir, consistency=consistency, spreading=spreading)
                                   for d in range(draws)], dataset=cfg.data.dataset)
            for n in budgets for name, (cfg, state) in encoders.items()]


def load_encoders(checkpoints: dict[str, str | Path], random_like: str | Path | None, overrides: list[str],
                  device: torch.device) -> tuple[dict[str, Encoder], dict[str, str]]:
    """(encoders for `label_budget`, where each comes from): each named checkpoint's trained state
    with its own config plus `overrides`, and "random", the network of `random_like` from random
    initialisation."""
    encoders: dict[str, Encoder] = {}
    sources: dict[str, str] = {}
    for name, path in checkpoints.items():
        model, run_cfg, _ = load_checkpoint(path, device)
        encoders[name] = (load_finetune_config(None, overrides, base=run_cfg), autoencoder_state(model))
        c = run_cfg.contrastive
        # Where an encoder's features come from matters to the reading: say so beside its path.
        sources[name] = str(path) + (f" (trained with the contrastive term: weight {c.weight:g}, "
                                     f"temperature {c.temperature:g})" if c.weight > 0 else "")
    if random_like is not None:
        _, run_cfg, _ = load_checkpoint(random_like)
        cfg = load_finetune_config(None, [*overrides, "finetune.init=random"], base=run_cfg)
        encoders["random"] = (cfg, None)
        sources["random"] = f"random initialisation, the network of {random_like}"
    return encoders, sources


def write_label_draws(out: str | Path, results: list[BudgetResult], info: dict[str, Any]) -> Path:
    """out/label_draws.json: the summaries and `info` (configs, epochs, pseudo-label settings)."""
    path = make_folder(Path(out)) / LABEL_DRAWS_FILE
    atomic_write_text(path, json.dumps({"info": info, "results": [r.summary() for r in results]}, indent=2))
    return path


class NotLabelDraws(AeoptError):
    pass


def read_label_draws(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / LABEL_DRAWS_FILE
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError) as e:
        raise NotLabelDraws(f"{path}: not a label-budget result ({e})") from None
