"""The contrastive auxiliary term: NT-Xent, its step, the run config's `contrastive:` section, the
engine's hook, and (slow) an encoder that classifies digits better from few labels with it."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from aeopt.config import ConvAEConfig, load_run_config
from aeopt.config.run import RunConfig
from aeopt.errors import ConfigError
from aeopt.training.contrastive import ContrastiveTerm, contrastive_loss, nt_xent
from aeopt.training.data import load_dataset, prepare, stratified_subset, to_float
from aeopt.training.engine import Trainer, contrastive_term, fit
from aeopt.training.models import build_model

CPU = torch.device("cpu")


def test_nt_xent_is_low_for_matching_pairs_and_log_of_the_choices_for_indistinct_ones():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 64, generator=gen)
    matched = nt_xent(a, a + 0.01 * torch.randn(16, 64, generator=gen), temperature=0.1)
    shuffled = nt_xent(a, a[torch.randperm(16, generator=gen)], 0.1)
    assert matched < 0.1 and shuffled > 1.0, (matched, shuffled)
    # All projections equal: each of the 2n must guess its partner among 2n - 1 equal ones.
    same = nt_xent(torch.ones(4, 3), torch.ones(4, 3), temperature=0.5)
    assert same == pytest.approx(torch.log(torch.tensor(7.0)).item(), rel=1e-5)


def test_the_term_lowers_its_loss_and_trains_the_encoder():
    torch.manual_seed(0)
    model = build_model(RunConfig(model=ConvAEConfig(c1=8, c2=16, c3=16, fc=32, latent_dim=16, dropout=0.0)))
    term = ContrastiveTerm(model.encoder, 16, weight=1.0, temperature=0.5, projection=32, flip=False,
                           optimizer=torch.optim.Adam, lr=3e-3, device=CPU)
    x = to_float(load_dataset("digits").train.x[:128], CPU)
    before = contrastive_loss(model.encoder, term.head, x, temperature=0.5, batch=128, flip=False)
    first = model.encoder[0].weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        term.step(x, gen)
    after = contrastive_loss(model.encoder, term.head, x, temperature=0.5, batch=128, flip=False)
    # Chance is log(255) = 5.54; measured 5.54 -> 5.3 (digits' strong views are hard for a tiny net).
    assert after < before - 0.1, (before, after)
    assert not torch.equal(first, model.encoder[0].weight)
    assert all(not k.startswith("head") for k in model.state_dict())  # the head is not the model's


def test_config_section_defaults_off_and_bad_values_are_one_line_errors():
    cfg = load_run_config("conv_ae")
    assert cfg.contrastive.weight == 0 and contrastive_term(build_model(cfg), cfg, CPU) is None
    on = load_run_config("conv_ae", ["contrastive.weight=0.5", "contrastive.temperature=0.2"])
    term = Trainer(build_model(on), on, CPU, seed=0).contrastive
    assert term is not None and term.weight == 0.5 and term.temperature == 0.2
    for bad, field in (("contrastive.weight=-1", "weight"), ("contrastive.temperature=0", "temperature"),
                       ("contrastive.wieght=1", "wieght")):
        with pytest.raises(ConfigError) as err:
            load_run_config("conv_ae", [bad])
        assert field in str(err.value) and "\n" not in str(err.value).strip(), str(err.value)


def test_every_kind_gets_the_term_from_the_engine_and_it_moves_the_encoder():
    small = {"c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4}
    x = to_float(load_dataset("digits").train.x[:128], CPU)
    for model_cfg in ({"kind": "conv_ae", **small}, {"kind": "aae", **small, "disc_hidden": 8}):
        encoders = []
        for weight in (0.0, 1.0):
            cfg = RunConfig.model_validate({"model": model_cfg, "budget": {"batch_size": 32},
                                            "contrastive": {"weight": weight, "projection": 8}})
            torch.manual_seed(0)
            trainer = Trainer(build_model(cfg), cfg, CPU, seed=0)
            assert (trainer.contrastive is not None) == (weight > 0)
            trainer.train_epoch(x)
            encoders.append(torch.cat([p.flatten() for p in trainer.model.encoder.parameters()]))
        # Same start, same batches: only the term's steps can make the encoders differ.
        assert not torch.allclose(encoders[0], encoders[1]), model_cfg["kind"]


def _probe_accuracy(model, train_x, train_y, test_x, test_y) -> float:
    """Logistic regression on the encoder's standardised codes: how usable they are from few labels."""
    model.eval()
    with torch.no_grad():
        tr, te = model.encoder(train_x).numpy(), model.encoder(test_x).numpy()
    mean, std = tr.mean(0), tr.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((tr - mean) / std, train_y.numpy())
    return float(clf.score((te - mean) / std, test_y.numpy()))


@pytest.mark.slow
def test_contrastive_term_makes_codes_a_few_label_probe_classifies_better():
    torch.set_num_threads(1)
    ds = load_dataset("digits")
    idx = stratified_subset(ds.train.y, 50, 0)
    labelled = (to_float(ds.train.x[idx], CPU), ds.train.y[idx])
    test = (to_float(ds.test.x, CPU), ds.test.y)
    accs = {}
    for weight in (0.0, 1.0):
        cfg = load_run_config("conv_ae", [
            "data.dataset=digits", "model.fc=64", "model.latent_dim=16", "model.dropout=0",
            "budget.max_epochs=15", "budget.patience=0", "budget.batch_size=128",
            f"contrastive.weight={weight}"])
        data = prepare(cfg.data)
        model, _ = fit(cfg, to_float(data.train.x, CPU), to_float(data.val.x, CPU), CPU)
        accs[weight] = _probe_accuracy(model, *labelled, *test)
    # Measured 0.25 without the term, 0.51 with it (1 thread).
    assert accs[1.0] > accs[0.0] + 0.05, accs
