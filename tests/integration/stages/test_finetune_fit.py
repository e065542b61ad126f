"""The pieces the fine-tune stage shares with the classifier study: the one pretraining path and the
one k-fold fine-tune loop. Tiny real runs on the synthetic dataset, on the CPU."""

from __future__ import annotations

import pytest
import torch

from aeopt.config import FinetuneRun, run_config
from aeopt.errors import ConfigError
from aeopt.stages.finetune_fit import FinetuneSetup, finetune_folds, finetune_once, split_xy
from aeopt.stages.pretrain import autoencoder_state, pretrained_autoencoder
from aeopt.stages.train import train_run
from aeopt.training.data import prepare, stratified_folds, training_pool
from aeopt.training.engine import set_seed
from aeopt.training.models import build_model

pytestmark = pytest.mark.slow

CPU = torch.device("cpu")
TINY = {
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6, "dropout": 0.0},
    "data": {"dataset": "synthetic", "train_subset": 300},
    "budget": {"max_epochs": 2, "batch_size": 64, "patience": 0},
    "finetune": {"max_epochs": 2, "min_steps_per_epoch": 4, "batch_size": 64, "lr": 1e-2, "head_hidden": 16},
    "seed": 0,
}


def _cfg(**finetune) -> FinetuneRun:
    return FinetuneRun.model_validate({**TINY, "finetune": {**TINY["finetune"], **finetune}})


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_pretraining_path_for_the_stage_and_the_study(tmp_path):
    cfg = _cfg()
    # The stage's way (as `aeopt train` does: outputs written, test split evaluated) ...
    staged, info = pretrained_autoencoder(cfg, device=CPU, out=tmp_path / "ae")
    assert info["source"] == "trained" and "test_mse" in info
    assert (tmp_path / "ae" / "checkpoint.pt").is_file()
    # ... and a study's (test split untouched, nothing written) train the very same weights.
    studied, info = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    assert info["source"] == "trained" and "test_mse" not in info and info["epochs"] == 2
    assert _same(autoencoder_state(staged), autoencoder_state(studied))
    model, _ = train_run(run_config(cfg), device="cpu", show_progress=False)
    assert _same(autoencoder_state(model), autoencoder_state(staged))

    loaded, info = pretrained_autoencoder(cfg, device=CPU, checkpoint=tmp_path / "ae" / "checkpoint.pt")
    assert info["source"] == "checkpoint" and _same(autoencoder_state(loaded), autoencoder_state(staged))
    other = FinetuneRun.model_validate({**TINY, "model": {"kind": "vae", "latent_dim": 3}})
    with pytest.raises(ConfigError, match=r"its model section \(conv_ae\) differs from the config's \(vae\)"):
        pretrained_autoencoder(other, device=CPU, checkpoint=tmp_path / "ae" / "checkpoint.pt")

    fresh, info = pretrained_autoencoder(_cfg(init="random"), device=CPU, checkpoint=tmp_path / "nothing.pt")
    set_seed(0)
    seeded = build_model(run_config(cfg))
    assert info == {"source": "random init"} and _same(fresh.state_dict(), seeded.state_dict())


def test_every_run_starts_from_the_same_autoencoder_weights():
    cfg = _cfg()
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    state = autoencoder_state(ae)
    setup = FinetuneSetup(cfg, state, 10, CPU)
    (a, _), (b, _) = setup.fresh(), setup.fresh()
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    assert _same(a.encoder.state_dict(), encoder) and _same(a.state_dict(), b.state_dict())
    # No autoencoder state: the network from random init, as `finetune.init: random` describes it.
    random_init, _ = FinetuneSetup(cfg, None, 10, CPU).fresh()
    assert not _same(random_init.encoder.state_dict(), encoder)
    with pytest.raises(ValueError, match="unlabelled"):
        FinetuneSetup(_cfg(recon_weight=0.5), state, 10, CPU).aux(ae)


def test_k_fold_loop_reports_each_fold_and_is_reproducible():
    cfg = _cfg()
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    setup = FinetuneSetup(cfg, autoencoder_state(ae), 10, CPU)
    pool = training_pool(cfg.data)
    seen: list[tuple[int, int]] = []
    # One thread throughout: a convolution's weight gradient sums over the batch in per-thread parts,
    # so "reproducible" holds for a fixed thread count, and the governor may move it between runs
    # on a busy machine (seen in CI: one fold's accuracy 0.17 against 0.2; at 2 threads this loop
    # gives [0.27, 0.17, 0.1] every time, at 1 thread [0.1, 0.2, 0.1]).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = finetune_folds(setup, pool, 3, 5, concurrent=False,
                                on_epoch=lambda fold, epoch, _acc, _loss: seen.append((fold, epoch)))
        again = finetune_folds(setup, pool, 3, 5, keep_models=False, concurrent=False)
        tr, va = stratified_folds(pool.y, 3, 5)[0]
        _, fit = finetune_once(setup, split_xy(pool.take(tr), CPU), split_xy(pool.take(va), CPU),
                               seed=cfg.seed)
    finally:
        torch.set_num_threads(before)
    assert seen == [(k, e) for k in range(3) for e in (1, 2)]
    assert len(result.models) == 3 and result.fold_epochs == [2, 2, 2]
    assert result.val_acc_mean == pytest.approx(sum(result.fold_val_acc) / 3) and result.val_acc_std >= 0
    assert again.fold_val_acc == result.fold_val_acc and again.models == []
    # Fold 0 of the loop is exactly one fine-tune on that fold, with seed cfg.seed + 0.
    assert fit.best_val_acc == result.fold_val_acc[0]


def test_probe_and_reconstruction_term_run_through_the_loop():
    cfg = _cfg(probe_epochs=1, recon_weight=0.1)
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    data = prepare(cfg.data)
    setup = FinetuneSetup(cfg, autoencoder_state(ae), 10, CPU, unlabelled=split_xy(data.train, CPU)[0])
    model, fit = finetune_once(setup, split_xy(data.train, CPU), split_xy(data.val, CPU), seed=0)
    # One record of both phases: the probe's epoch, then the whole network's two.
    assert fit.epochs == 3 and [row["epoch"] for row in fit.history] == [1, 2, 3] and 1 <= fit.best_epoch <= 3
    assert not model.frozen


@pytest.mark.parametrize("changes", [
    {},  # full fine-tune, cosine schedule, a last partial batch each epoch
    {"probe_epochs": 1, "encoder_lr_scale": 0.3, "schedule": "onecycle"},  # head first, then all, two lrs
    {"mode": "frozen", "max_epochs": 6, "patience": 1, "lr": 0.2},  # folds that stop early, each its own
])
def test_fused_folds_match_one_fold_after_another(changes):
    # No dropout and no augmentation: the two paths then draw the same batches from the same seeds,
    # so they must agree to float rounding (dropout masks come from other random streams when fused).
    # No batch norm on the code either: the bias of the layer before it has a zero true gradient, and
    # Adam turns either path's rounding noise there into a whole learning-rate step (seen: 2e-2 apart).
    cfg = _cfg(head_dropout=0.0, head_norm=False, augment="none", min_steps_per_epoch=1, **changes)
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    setup = FinetuneSetup(cfg, autoencoder_state(ae), 10, CPU)
    pool = training_pool(cfg.data)
    seen: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    runs = {fused: finetune_folds(setup, pool, 3, 5, fused=fused,
                                  on_epoch=lambda fold, epoch, _a, _l, f=fused: seen[f].append((fold, epoch)))
            for fused in (False, True)}
    seq, fused = runs[False], runs[True]
    assert fused.fold_epochs == seq.fold_epochs
    for a, b in zip(seq.fits, fused.fits, strict=True):
        assert [r["epoch"] for r in a.history] == [r["epoch"] for r in b.history]
        for key in ("val_loss", "train_loss"):
            assert [r[key] for r in b.history] == pytest.approx([r[key] for r in a.history], rel=1e-3), key
        assert b.best_epoch == a.best_epoch
    # Fused, the folds report epoch by epoch (fold 0 first each epoch); the same reports in all.
    assert sorted(seen[True]) == sorted(seen[False])
    assert seen[True][:3] == [(0, 1), (1, 1), (2, 1)]
    # Each fold's best weights are back in its model, as the sequential run leaves them.
    for m_seq, m_fused in zip(seq.models, fused.models, strict=True):
        for (name, a), b in zip(m_seq.state_dict().items(), m_fused.state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5), name
    if "patience" in changes:
        assert any(f.stopped_early for f in fused.fits)


def test_folds_side_by_side_give_the_numbers_of_one_fold_after_another():
    # Dropout in the head and the encoder, augmentation, a probe phase and the reconstruction term:
    # every random draw a fold makes comes from its own generator, so lanes cannot change a number.
    cfg = _cfg(probe_epochs=1, recon_weight=0.1, head_dropout=0.3, encoder_dropout=0.2, augment="shift")
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    data = prepare(cfg.data)
    setup = FinetuneSetup(cfg, autoencoder_state(ae), 10, CPU, unlabelled=split_xy(data.train, CPU)[0])
    pool = training_pool(cfg.data)
    seen: list[tuple[int, int]] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the lanes' own count, so the kernels sum in the same order
    try:
        seq = finetune_folds(setup, pool, 3, 5, concurrent=False)
    finally:
        torch.set_num_threads(before)
    side = finetune_folds(setup, pool, 3, 5, concurrent=True,
                          on_epoch=lambda fold, epoch, _a, _l: seen.append((fold, epoch)))
    assert sorted(seen) == [(k, e) for k in range(3) for e in (1, 2)]
    for a, b in zip(seq.fits, side.fits, strict=True):
        assert a.history == b.history
    for m_seq, m_side in zip(seq.models, side.models, strict=True):
        assert _same(m_seq.state_dict(), m_side.state_dict())


def test_a_pruned_fold_stops_the_folds_beside_it():
    cfg = _cfg(max_epochs=8, patience=0)
    ae, _ = pretrained_autoencoder(cfg, device=CPU, evaluate_test=False)
    setup = FinetuneSetup(cfg, autoencoder_state(ae), 10, CPU)
    seen: list[tuple[int, int]] = []

    class Pruned(Exception):
        pass

    def hook(fold: int, epoch: int, _acc: float, _loss: float) -> None:
        seen.append((fold, epoch))
        if fold == 0 and epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        finetune_folds(setup, training_pool(cfg.data), 2, 5, concurrent=True, on_epoch=hook)
    # Fold 1 ran beside fold 0 and stopped within an epoch or so of the prune, not at its epoch 8.
    assert max(e for f, e in seen if f == 1) <= 4 and (0, 3) not in seen
