"""Supervised classification: a head on an encoder, and the training loop shared by the fine-tune
stage and the CNN baseline.

Same style as aeopt.training.engine: whole float tensors on the device, random-permutation batches,
augmentation done on whole batches on the device (no PIL, no per-sample transforms), an
`on_epoch` seam for callers (a study prunes through it). Knows nothing about Optuna.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aeopt import threads
from aeopt.config import CNNConfig, FinetuneConfig, SupervisedConfig
from aeopt.training.engine import NonFiniteLossError, set_seed
from aeopt.training.kinds.base import Dropout, random_stream
from aeopt.training.layout import for_device, fused_optimizer_ok
from aeopt.training.models import Autoencoder
from aeopt.training.schedules import StepSchedule

log = logging.getLogger(__name__)

EVAL_BATCH = 4096
# on_epoch(epoch, validation accuracy, validation loss); may raise to stop the run.
OnClassifierEpoch = Callable[[int, float, float], None]


# ----- models ------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """An encoder (images -> code) and a head: one hidden layer, then `n_classes` logits."""

    def __init__(self, encoder: nn.Module, code_dim: int, hidden: int = 64, n_classes: int = 10,
                 dropout: float = 0.2, normalize_code: bool = True):
        super().__init__()
        self.encoder = encoder
        # An autoencoder's code has an arbitrary scale (early in training it can vary by 1e-2
        # across images); batch-normalizing it lets the same head learning rate work for any code.
        norm = [nn.BatchNorm1d(code_dim)] if normalize_code else []
        self.head = nn.Sequential(
            *norm,
            nn.Linear(code_dim, hidden),
            nn.ReLU(),
            Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        self.frozen = False

    def freeze_encoder(self) -> Classifier:
        """Train the head only (a probe of the representation): no gradients, and the encoder
        stays in eval mode so dropout is off and batch-norm statistics do not move."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.frozen = True
        self.encoder.eval()
        return self

    def unfreeze_encoder(self) -> Classifier:
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self.frozen = False
        self.encoder.train(self.training)
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                code = self.encoder(x)
            return self.head(code)
        return self.head(self.encoder(x))


class BaselineCNN(nn.Module):
    """The report's comparison model: a plain supervised CNN from scratch (see aeopt.stages.baseline)."""

    def __init__(self, cfg: CNNConfig, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, cfg.c1, 3, padding=1), nn.BatchNorm2d(cfg.c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(cfg.c1, cfg.c2, 3, padding=1), nn.BatchNorm2d(cfg.c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(cfg.c2 * 7 * 7, cfg.fc), nn.ReLU(), Dropout(cfg.dropout),
            nn.Linear(cfg.fc, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_classifier(ae: Autoencoder, ft: FinetuneConfig, n_classes: int) -> Classifier:
    """A head on `ae`'s encoder, as the fine-tune settings describe it; `.encoder` returns the code
    (the VAE's encoder returns its mean). Shares the encoder module with `ae`."""
    clf = Classifier(ae.encoder, ae.latent_dim, ft.head_hidden, n_classes, ft.head_dropout, ft.head_norm)
    if ft.encoder_dropout is not None:
        for module in clf.encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = ft.encoder_dropout
    if ft.mode == "frozen":
        clf.freeze_encoder()
    return clf


# ----- augmentation ------------------------------------------------------------------------------


AUTO_SHIFT_BELOW = 5000


def augmentation_for(setting: str, dataset: str, n_train: int | None = None) -> tuple[int, bool]:
    """(max shift in pixels, horizontal flips) for an `augment` setting and training-set size."""
    if setting == "auto":
        few = n_train is not None and n_train < AUTO_SHIFT_BELOW
        if dataset == "fashion_mnist":
            setting = "shift_flip" if few else "flip"
        else:
            setting = "shift" if few else "none"
    return {"none": (0, False), "flip": (0, True), "shift": (2, False), "shift_flip": (2, True)}[setting]


def augment(x: torch.Tensor, generator: torch.Generator, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translations (zero padded) and horizontal flips of a whole batch, on its device."""
    n, _, h, w = x.shape
    dev = x.device
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(-1), x)
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n, 1), device=dev, generator=generator)
        rows = torch.arange(h, device=dev).view(1, h) + dy  # [n, h]
        cols = torch.arange(w, device=dev).view(1, w) + dx  # [n, w]
        # One gather for the batch: crop image i at its own offset (dy_i, dx_i).
        batch = torch.arange(n, device=dev).view(n, 1, 1)
        x = padded[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)]  # [n, h, w, c]
        x = x.permute(0, 3, 1, 2)
    return x


# ----- training ----------------------------------------------------------------------------------


@dataclass
class ClassifierFit:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    best_val_loss: float = math.inf
    epochs: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    predictions: torch.Tensor  # [N] on the CPU
    probabilities: torch.Tensor | None = None  # [N, C] on the CPU, when asked for


def _optimizer(model: nn.Module, cfg: SupervisedConfig, encoder_lr_scale: float,
               extra: list[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    enc = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.")]
    enc += [p for p in extra or [] if p.requires_grad]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    groups = [{"params": rest, "lr": cfg.lr}]
    if enc:
        groups.append({"params": enc, "lr": cfg.lr * encoder_lr_scale})
    # The fused kernel updates every parameter in one pass (one launch on CUDA, where small models
    # are launch-bound; on the CPU measured faster too: aeopt.training.layout).
    fused = fused_optimizer_ok(p for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, probabilities: bool = False,
             amp: bool = False) -> Evaluation:
    """Accuracy and mean cross-entropy of `model` on float images `x` and labels `y` (eval mode)."""
    model.eval()
    correct = torch.zeros((), device=x.device)
    total_loss = torch.zeros((), device=x.device)
    preds, probs = [], []
    for start in range(0, x.shape[0], EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
            logits = model(xb)
        logits = logits.float()
        total_loss += F.cross_entropy(logits, yb, reduction="sum")
        pred = logits.argmax(1)
        correct += (pred == yb).sum()
        preds.append(pred.cpu())
        if probabilities:
            probs.append(logits.softmax(1).cpu())
    n = max(x.shape[0], 1)
    predictions = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return Evaluation(float(correct) / n, float(total_loss) / n, predictions,
                      torch.cat(probs) if probabilities else None)


class _EpochLoop:
    """One training epoch of `fit_classifier`: random-permutation batches, augmentation and the
    optional auxiliary loss, all drawn from one generator so a run is reproducible from its seed."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
                 cfg: SupervisedConfig, gen: torch.Generator, *, augmentation: tuple[int, bool], amp: bool,
                 aux_loss: Callable[[torch.Generator], torch.Tensor] | None):
        self.model, self.opt, self.gen, self.aux_loss = model, opt, gen, aux_loss
        self.base_lrs = [group["lr"] for group in opt.param_groups]
        self.x, self.y = train
        self.shift, self.flip = augmentation
        self.label_smoothing = cfg.label_smoothing
        self.device = self.x.device
        self.use_amp = amp and self.device.type == "cuda"
        self.n = self.x.shape[0]
        self.batch = min(cfg.batch_size, self.n)
        self.steps = max(math.ceil(self.n / self.batch), cfg.min_steps_per_epoch)
        self.passes = math.ceil(self.steps * self.batch / self.n)
        # Planned over max_epochs, stepped per batch (aeopt.training.schedules).
        self.schedule = StepSchedule(cfg.schedule, self.steps, cfg.max_epochs,
                                     warmup_epochs=cfg.warmup_epochs,
                                     pct_start=cfg.pct_start)

    def _set_lr(self) -> None:
        factor = self.schedule.next()
        for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = self.x[idx], self.y[idx]
        if self.shift or self.flip:
            xb = augment(xb, self.gen, self.shift, self.flip)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            logits = self.model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=self.label_smoothing)
        if self.aux_loss is not None:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                loss = loss + self.aux_loss(self.gen)
        return loss, (logits.detach().argmax(1) == yb).sum()

    def run(self) -> tuple[float, float]:
        """(mean training loss, accuracy on the augmented batches) of one epoch."""
        self.model.train()
        # Several random permutations back to back when an epoch needs more than one pass.
        order = torch.cat([torch.randperm(self.n, device=self.device, generator=self.gen)
                           for _ in range(self.passes)])
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        # Dropout masks from this run's generator too (the engine's Trainer does the same): the same
        # numbers whatever else the process runs, folds in concurrent lanes included.
        with random_stream(self.gen):
            for s in range(self.steps):
                idx = order[s * self.batch : (s + 1) * self.batch]
                if idx.numel() == 0:
                    break
                threads.tick()  # follow the cores free now (aeopt.threads)
                loss, hits = self._loss(idx)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if not self.schedule.constant:
                    self._set_lr()
                self.opt.step()
                # Accumulated on the device: an .item() per step would sync the GPU every batch.
                total += loss.detach() * idx.numel()
                correct += hits
                seen += idx.numel()
        return float(total) / seen, float(correct) / seen


def fit_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: SupervisedConfig,
    device: torch.device,
    *,
    seed: int,
    augmentation: tuple[int, bool] = (0, False),
    encoder_lr_scale: float = 1.0,
    amp: bool = False,
    on_epoch: OnClassifierEpoch | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    aux_loss: Callable[[torch.Generator], torch.Tensor] | None = None,
    aux_params: list[nn.Parameter] | None = None,
) -> tuple[nn.Module, ClassifierFit]:
    """Train with early stopping on validation accuracy (ties: lower validation loss) and restore
    the best weights. `train` and `val` are (float images in [0, 1], int64 labels) on `device`.

    `aux_loss(generator)`, when given, is added to every step's loss (already weighted), and
    `aux_params` (parameters outside `model` it trains, at the encoder's learning rate) join the
    optimizer; their best-epoch values are not restored (they are not part of the classifier)."""
    set_seed(seed)
    model = for_device(model, device)  # channels-last on the CPU (aeopt.training.layout)
    opt = _optimizer(model, cfg, encoder_lr_scale, aux_params)
    loop = _EpochLoop(model, opt, train, cfg, torch.Generator(device=device).manual_seed(seed),
                      augmentation=augmentation, amp=amp, aux_loss=aux_loss)
    result = ClassifierFit()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        train_loss, train_acc = loop.run()
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"classifier training loss is {train_loss} (lower finetune.lr)")
        ev = evaluate(model, *val, amp=amp)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc_augmented": train_acc,
               "val_loss": ev.loss, "val_acc": ev.accuracy}
        if progress:
            progress(epoch, row)
        if on_epoch:
            on_epoch(epoch, ev.accuracy, ev.loss)
        if _record_epoch(result, row):
            best_state = copy.deepcopy(model.state_dict())
        elif cfg.patience and epoch - result.best_epoch >= cfg.patience:
            result.stopped_early = True
            log.info("early stop at epoch %d (best %d, val acc %.4f)", epoch, result.best_epoch,
                     result.best_val_acc)
            break
    model.load_state_dict(best_state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - start
    return model, result


def _record_epoch(result: ClassifierFit, row: dict[str, float]) -> bool:
    """Add an epoch's row; True when it is the best so far (validation accuracy, ties: lower loss)."""
    result.history.append(row)
    result.epochs = int(row["epoch"])
    if (row["val_acc"], -row["val_loss"]) <= (result.best_val_acc, -result.best_val_loss):
        return False
    result.best_val_acc, result.best_val_loss = row["val_acc"], row["val_loss"]
    result.best_epoch = result.epochs
    return True


# ----- metrics -----------------------------------------------------------------------------------


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    idx = y_true.cpu().long() * n_classes + y_pred.cpu().long()
    counts = torch.bincount(idx, minlength=n_classes * n_classes).view(n_classes, n_classes)
    return counts.tolist()


def per_class_accuracy(matrix: list[list[int]], classes: list[str]) -> dict[str, float]:
    out = {}
    for i, name in enumerate(classes):
        row_total = sum(matrix[i])
        out[name] = matrix[i][i] / row_total if row_total else float("nan")
    return out
