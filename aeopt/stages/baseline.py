"""The report's comparison model: a plain supervised CNN trained from scratch.

The network (the "Homework 1" CNN of the report, reconstructed as a standard small CNN):

    conv 3x3 (c1) - batch norm - ReLU - max-pool 2   28 -> 14
    conv 3x3 (c2) - batch norm - ReLU - max-pool 2   14 -> 7
    flatten (c2 * 7 * 7) - linear (fc) - ReLU - dropout - linear (10)

It is trained exactly like the fine-tuned classifier (aeopt.training.supervised.fit_classifier: the same
stratified 80/20 split, optimizer, schedule, epoch budget, early stopping on validation
accuracy, augmentation) and evaluated once on the test split, with the same metrics, so the two are
compared on equal terms; only the initialisation and the architecture differ.
"""

from __future__ import annotations

import time
from pathlib import Path

from aeopt.config import BaselineRun
from aeopt.progress import progress
from aeopt.stages.classifier_run import (
    classifier_metrics,
    evaluate_on_test,
    labelled_split,
    write_classifier_outputs,
)
from aeopt.stages.finetune_fit import show_on, split_xy
from aeopt.stages.metrics import ClassifierMetrics
from aeopt.training.engine import resolve_device, set_seed
from aeopt.training.supervised import BaselineCNN, augmentation_for, evaluate, fit_classifier


def train_baseline(cfg: BaselineRun, *, data_dir: str | None = None, device: str | None = None,
                   out: str | Path | None = None, amp: bool = False,
                   show_progress: bool = True) -> ClassifierMetrics:
    """Train the CNN from scratch on the (labelled) 80/20 split, evaluate on test once."""
    started = time.perf_counter()
    dev = resolve_device(device)
    # The same labelled split as the fine-tune stage, chosen by the same data and label settings.
    data = labelled_split(cfg.data, cfg.train.labels, data_dir, field="train.labels")
    set_seed(cfg.seed)
    model = BaselineCNN(cfg.model, len(data.classes)).to(dev)
    train_xy, val_xy = split_xy(data.train, dev), split_xy(data.val, dev)
    aug = augmentation_for(cfg.train.augment, cfg.data.dataset, len(data.train))
    with progress(cfg.train.max_epochs, "baseline cnn", enabled=show_progress) as bar:
        model, fit = fit_classifier(model, train_xy, val_xy, cfg.train, dev, seed=cfg.seed, augmentation=aug,
                                    amp=amp, progress=show_on(bar))
    # The test split is touched once, after training.
    test = evaluate_on_test([model], data.test, len(data.classes), dev, amp=amp)
    metrics = classifier_metrics(
        task="baseline", model="cnn", mode="scratch", init="random", dataset=cfg.data.dataset, data=data,
        labels=cfg.train.labels, classifier=model, fit=fit, test=test,
        train_acc=evaluate(model, *train_xy, amp=amp).accuracy, seconds=fit.seconds, started=started,
        device=dev, config=cfg.model_dump(mode="json"))
    if out is not None:
        write_classifier_outputs(out, metrics, test, data.classes, model, cfg, data.source)
    return metrics
