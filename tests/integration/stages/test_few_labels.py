"""Few labels: label draws from the training split only, pseudo-labels, the folder `aeopt compare` reads."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from aeopt.config import FinetuneRun
from aeopt.errors import AeoptError
from aeopt.stages import few_labels
from aeopt.stages.compare import compare_rows, format_table
from aeopt.stages.few_labels import (
    PseudoLabels,
    confident_pseudo_labels,
    label_budget,
    read_label_draws,
    write_label_draws,
)
from aeopt.training.consistency import ConsistencySettings
from aeopt.training.data import load_dataset, prepare, to_float
from aeopt.training.engine import fit
from aeopt.training.label_spreading import SpreadSettings

CPU = torch.device("cpu")


def _cfg() -> FinetuneRun:
    return FinetuneRun.model_validate({
        "model": {"kind": "aae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "disc_hidden": 16},
        "data": {"dataset": "digits"}, "budget": {"max_epochs": 2, "batch_size": 64},
        "finetune": {"max_epochs": 6, "probe_epochs": 1, "min_steps_per_epoch": 10, "patience": 0}})


def test_pseudo_labels_are_the_most_confident_per_predicted_class():
    class Fixed(torch.nn.Module):  # logits given per image: image i's logits are row i
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits[x[:, 0, 0, 0].long()]

    logits = torch.tensor([[5.0, 0, 0], [1.0, 0, 0], [0, 3.0, 0], [0, 9.0, 0], [0, 0, 0.1], [4.0, 0, 0]])
    x = torch.arange(6).float().view(6, 1, 1, 1)
    idx, guessed = confident_pseudo_labels(Fixed(logits), x, per_class=2, n_classes=3)
    assert idx.tolist() == [0, 2, 3, 4, 5] and guessed.tolist() == [0, 1, 1, 2, 0]


def test_spreading_takes_the_first_fine_tunes_place_and_teaches_the_pseudo_label_round(monkeypatch):
    # A spy on the real test scoring: which classifiers were scored, and what each scored.
    # Comparing accuracies alone could tie (a few hundred test images).
    scored = []
    evaluate = few_labels.evaluate_on_test

    def scoring(models, *args, **kwargs):
        result = evaluate(models, *args, **kwargs)
        scored.append(result.accuracy)
        return result

    monkeypatch.setattr(few_labels, "evaluate_on_test", scoring)
    # The AAE trained on digits' pixels: its codes cluster well enough for 40 labels to spread.
    cfg = _cfg()
    data = prepare(cfg.data)
    ae, _ = fit(cfg, to_float(data.train.x, CPU), to_float(data.val.x, CPU), CPU)
    state = {k: v.clone() for k, v in ae.state_dict().items()}
    settings = SpreadSettings(neighbours=10)
    [alone] = label_budget({"aae": (cfg, state)}, [40], 2, pseudo=PseudoLabels(rounds=0), device=CPU,
                           spreading=settings)
    for d in alone.draws:
        # No classifier trained: the spread is the first and the last, scored once.
        assert d.test_acc == d.test_acc_labelled_only and d.test_acc > 0.3  # chance: 0.1
        assert len(d.pseudo_label_acc) == 1 and d.pseudo_label_acc[0] > 0.3  # the graph's agreement
        assert 0.0 <= d.val_acc <= 1.0
    assert scored == []  # the spread votes onto the test split; no classifier exists to score
    [taught] = label_budget({"aae": (cfg, state)}, [40], 1, pseudo=PseudoLabels(rounds=1, per_class=30),
                            device=CPU, spreading=settings)
    [d] = taught.draws
    # The same spread first (same draw, same graph), then a classifier trained on its labels.
    assert d.test_acc_labelled_only == alone.draws[0].test_acc
    assert scored == [d.test_acc] and 0.0 <= d.test_acc <= 1.0  # that classifier, scored once
    with pytest.raises(AeoptError, match="pseudo-label round"):
        label_budget({"aae": (cfg, state)}, [40], 1, pseudo=PseudoLabels(rounds=0), device=CPU,
                     spreading=settings, consistency=ConsistencySettings(steps=5))


def test_label_budget_draws_differ_pretrained_and_random_write_a_comparable_folder(tmp_path, monkeypatch):
    # A spy on the real fine-tune: the autoencoder state each classifier started from. (Two
    # encoders' accuracies could tie, so they cannot show that the pretrained state was used.)
    started_from = []
    finetune_once = few_labels.finetune_once

    def finetune(setup, *args, **kwargs):
        started_from.append(setup.ae_state)
        return finetune_once(setup, *args, **kwargs)

    monkeypatch.setattr(few_labels, "finetune_once", finetune)
    cfg = _cfg()
    data = prepare(cfg.data)
    ae, _ = fit(cfg, to_float(data.train.x, CPU), to_float(data.val.x, CPU), CPU)
    state = {k: v.clone() for k, v in ae.state_dict().items()}
    encoders = {"aae": (cfg, state), "random": (cfg, None)}
    results = label_budget(encoders, [40], 2, pseudo=PseudoLabels(rounds=1, per_class=20), device=CPU)
    assert [(r.encoder, r.labels, len(r.draws)) for r in results] == [("aae", 40, 2), ("random", 40, 2)]
    for r in results:
        for d in r.draws:
            assert 0.0 <= d.test_acc <= 1.0 and 0.0 <= d.test_acc_labelled_only <= 1.0
            # 20 per predicted class, scored against the true labels (a digits classifier beats chance).
            assert len(d.pseudo_label_acc) == 1 and 0.0 <= d.pseudo_label_acc[0] <= 1.0
    assert max(d.test_acc for r in results for d in r.draws) > 0.3  # they learned (chance: 0.1)
    # Two draws are two label sets: their classifiers are not the same (accuracies differ somewhere).
    assert any(len({d.test_acc_labelled_only for d in r.draws}) == 2 for r in results)
    # Per encoder, 2 draws x (a fine-tune, a pseudo-label round): the aae's from its trained state.
    assert len(started_from) == 8
    assert all(s is state for s in started_from[:4]) and all(s is None for s in started_from[4:])
    write_label_draws(tmp_path / "few", results, {"epochs": 2})
    summary = read_label_draws(tmp_path / "few")
    assert [s["encoder"] for s in summary] == ["aae", "random"]
    rows = compare_rows([tmp_path / "few"])
    assert [(r["model"], r["labels"]) for r in rows] == [("aae (label draws)", 40),
                                                         ("random (label draws)", 40)]
    assert rows[0]["test_acc"] == pytest.approx(summary[0]["test_acc_mean"])
    table = format_table(rows)
    assert f"{summary[0]['test_acc_mean']:.4f} +- {summary[0]['test_acc_std']:.4f}" in table


def test_consistency_runs_after_the_fine_tune_and_its_classifier_is_the_one_scored(tmp_path, caplog,
                                                                                   monkeypatch):
    caplog.set_level(logging.INFO, logger="aeopt")
    # Spies on the real functions: which classifier each test scoring saw (its weights then), and
    # which one consistency training returned. Accuracies alone can tie (181 of 359 both, once).
    scored, trained = [], []
    evaluate, fit_consistency = few_labels.evaluate_on_test, few_labels.fit_consistency

    def scoring(models, *args, **kwargs):
        scored.append((models[0], {k: v.clone() for k, v in models[0].state_dict().items()}))
        return evaluate(models, *args, **kwargs)

    def consistency_fit(*args, **kwargs):
        model, fit = fit_consistency(*args, **kwargs)
        trained.append(model)
        return model, fit

    monkeypatch.setattr(few_labels, "evaluate_on_test", scoring)
    monkeypatch.setattr(few_labels, "fit_consistency", consistency_fit)
    cfg = _cfg()
    data = prepare(cfg.data)
    ae, _ = fit(cfg, to_float(data.train.x, CPU), to_float(data.val.x, CPU), CPU)
    state = {k: v.clone() for k, v in ae.state_dict().items()}
    fixmatch = ConsistencySettings(steps=40, eval_every=20, labelled_batch=16, ratio=2, threshold=0.5)
    [result] = label_budget({"aae": (cfg, state)}, [40], 1, pseudo=PseudoLabels(rounds=0), device=CPU,
                            consistency=fixmatch)
    [draw] = result.draws
    assert [row["step"] for row in draw.consistency] == [20, 40]
    # its progress: a line per check off a terminal (a bar on one)
    assert "40 labels + consistency, draw 0 2/2 step=40" in caplog.text
    assert draw.val_acc == draw.consistency[-1]["val_acc"]  # select "last"
    # Scored twice: the fine-tuned classifier, then the one consistency training returned, 40 steps on.
    assert len(scored) == 2 and len(trained) == 1 and scored[1][0] is trained[0]
    assert any(not torch.equal(scored[0][1][k], scored[1][1][k]) for k in scored[0][1])
    assert 0.0 <= draw.test_acc <= 1.0 and 0.0 <= draw.test_acc_labelled_only <= 1.0
    write_label_draws(tmp_path / "few", [result], {})
    assert read_label_draws(tmp_path / "few")[0]["per_draw"][0]["consistency"][-1]["step"] == 40


def test_the_drawn_labels_come_from_the_training_split():
    from aeopt.stages.classifier_run import labelled_split

    cfg = _cfg()
    ds = load_dataset("digits")
    for draw in (0, 1):
        got = labelled_split(cfg.data.model_copy(update={"split_seed": draw}), 40)
        train_rows = {bytes(r) for r in ds.train.x.flatten(1).numpy()}
        assert all(bytes(r) in train_rows for r in torch.cat([got.train.x, got.val.x]).flatten(1).numpy())
        assert len(got.train) + len(got.val) == 40 and len(got.test) == len(ds.test)


def test_cli_few_labels_then_compare(tmp_path):
    from tests.conftest import REPO, run_cli

    env = {"OMP_NUM_THREADS": "1"}
    r = run_cli("train", str(REPO / "configs" / "aae.yaml"), "--set", "data.dataset=digits", "--set",
                "budget.max_epochs=1", "--device", "cpu", "--out", str(tmp_path / "aae"), cwd=tmp_path,
                env=env)
    assert r.returncode == 0, r.stderr
    ckpt = str(tmp_path / "aae" / "checkpoint.pt")
    r = run_cli("baseline", "few-labels", "-e", f"aae={ckpt}", "--random-like", ckpt, "--budgets", "40",
                "--draws", "2", "--pseudo-per-class", "10", "--set", "finetune.max_epochs=2", "--set",
                "finetune.probe_epochs=1", "--device", "cpu", "-o", str(tmp_path / "few"), cwd=tmp_path,
                env=env)
    assert r.returncode == 0, r.stderr
    assert "aae (label draws)" in r.stdout and "random (label draws)" in r.stdout
    r = run_cli("compare", str(tmp_path / "few"), "--json", cwd=tmp_path, env=env)
    rows = json.loads(r.stdout)
    assert [(row["model"], row["labels"], row["draws"]) for row in rows] == [
        ("aae (label draws)", 40, 2), ("random (label draws)", 40, 2)]
    assert all(0 <= row["test_acc"] <= 1 and row["test_std"] >= 0 for row in rows)
    r = run_cli("baseline", "few-labels", "-e", "aae", "-o", str(tmp_path / "bad"), cwd=tmp_path, env=env)
    assert r.returncode != 0 and "NAME=CHECKPOINT" in r.stderr
    r = run_cli("baseline", "few-labels", "-o", str(tmp_path / "bad"), cwd=tmp_path, env=env)
    assert r.returncode != 0 and "--random-like" in r.stderr and not (tmp_path / "bad").exists()
    # Random initialisation alone: a baseline run of its own.
    r = run_cli("baseline", "few-labels", "--random-like", ckpt, "--budgets", "40", "--draws", "1",
                "--pseudo-rounds", "0", "--set", "finetune.max_epochs=2", "--set", "finetune.probe_epochs=1",
                "--device", "cpu", "-o", str(tmp_path / "random"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert [s["encoder"] for s in read_label_draws(tmp_path / "random")] == ["random"]
    r = run_cli("baseline", "few-labels", "-e", f"aae={ckpt}", "--consistency", "10", "--consistency-opt",
                "thresh=0.9", "-o", str(tmp_path / "bad"), cwd=tmp_path, env=env)
    assert r.returncode != 0 and "consistency option 'thresh=0.9'" in r.stderr


def test_a_categorical_aae_takes_the_semi_supervised_path_without_pseudo_labels(tmp_path):
    cfg = FinetuneRun.model_validate({
        **_cfg().model_dump(exclude={"model"}),
        "model": {"kind": "aae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "disc_hidden": 16,
                  "categories": 10, "ssl_steps": 100}})
    data = prepare(cfg.data)
    ae, _ = fit(cfg, to_float(data.train.x, CPU), to_float(data.val.x, CPU), CPU)
    state = {k: v.clone() for k, v in ae.state_dict().items()}
    [result] = label_budget({"ssl": (cfg, state)}, [60], 1, pseudo=PseudoLabels(rounds=1), device=CPU)
    [draw] = result.draws
    # Its own path: the category head scored once, no pseudo-label round even though one was asked for.
    assert draw.pseudo_label_acc == [] and draw.test_acc == draw.test_acc_labelled_only
    assert 0.0 <= draw.test_acc <= 1.0  # that it learns: tests/unit/training/test_aae_ssl.py
    write_label_draws(tmp_path / "few", [result], {})
    assert [r["model"] for r in compare_rows([tmp_path / "few"])] == ["ssl (label draws)"]


def test_a_budget_the_data_cannot_hold_fails_before_any_draw_trains(monkeypatch):
    trained = []
    monkeypatch.setattr(few_labels, "one_draw", lambda *a, **k: trained.append(k))
    with pytest.raises(AeoptError, match="--budgets = 100000: the training split has only"):
        label_budget({"random": (_cfg(), None)}, [40, 100_000], 1, pseudo=PseudoLabels(rounds=0), device=CPU)
    assert trained == []


def test_label_draws_record_the_test_set_they_were_scored_on(tmp_path):
    [result] = label_budget({"random": (_cfg(), None)}, [40], 1, pseudo=PseudoLabels(rounds=0), device=CPU)
    write_label_draws(tmp_path / "few", [result], {})
    [summary] = read_label_draws(tmp_path / "few")
    test = prepare(_cfg().data).test
    assert summary["dataset"] == "digits" and summary["n_test"] == len(test)
    assert summary["test_set"] == test.digest()
    [row] = compare_rows([tmp_path / "few"])
    assert row["dataset"] == "digits" and row["n_test"] == len(test) and row["test_set"] == test.digest()


def test_a_fresh_semi_supervised_aae_starts_from_its_draws_weights_whatever_ran_before(monkeypatch):
    # A spy on the real semi-supervised fit: the weights it starts from. Earlier draws and encoders
    # move torch's global generator; a draw's fresh model must not depend on them.
    started = []
    fit_semi_supervised = few_labels.fit_semi_supervised

    def spy(model, *args, **kwargs):
        started.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return fit_semi_supervised(model, *args, **kwargs)

    monkeypatch.setattr(few_labels, "fit_semi_supervised", spy)
    cfg = FinetuneRun.model_validate({
        **_cfg().model_dump(exclude={"model"}),
        "model": {"kind": "aae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "disc_hidden": 16,
                  "categories": 10, "ssl_steps": 5}})
    for before in (1, 2):
        torch.manual_seed(before)
        label_budget({"random": (cfg, None)}, [60], 1, pseudo=PseudoLabels(rounds=0), device=CPU)
    assert len(started) == 2 and torch.equal(started[0], started[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gpu_suite.sh runs it)")
@pytest.mark.parametrize("spreading", [None, SpreadSettings(neighbours=10)], ids=["fine-tune", "spread"])
def test_pseudo_label_rounds_run_on_cuda(spreading):
    # Both teachers score on the host (the classifier's probabilities, sklearn's spread); their
    # guesses join labels that live on the GPU.
    cfg = _cfg()
    [result] = label_budget({"random": (cfg, None)}, [40], 1, pseudo=PseudoLabels(rounds=1, per_class=20),
                            device=torch.device("cuda"), spreading=spreading)
    [d] = result.draws
    assert 0.0 <= d.test_acc <= 1.0 and len(d.pseudo_label_acc) == 1


def test_cli_train_with_the_contrastive_term_then_few_labels_uses_its_encoder(tmp_path):
    from tests.conftest import REPO, run_cli

    env = {"OMP_NUM_THREADS": "1"}
    args = ["train", str(REPO / "configs" / "conv_ae.yaml"), "--set", "data.dataset=digits", "--set",
            "budget.max_epochs=1", "--device", "cpu"]
    r = run_cli(*args, "--set", "contrastive.weight=-1", "--out", str(tmp_path / "bad"), cwd=tmp_path,
                env=env)
    assert r.returncode != 0 and "contrastive.weight" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*args, "--set", "contrastive.crop=1", "--out", str(tmp_path / "bad"), cwd=tmp_path, env=env)
    assert r.returncode != 0 and "contrastive.crop" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*args, "--set", "contrastive.weight=1", "--set", "contrastive.projection=16", "--set",
                "contrastive.crop=0.3", "--out", str(tmp_path / "ae"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "ae" / "checkpoint.pt"
    from aeopt.training.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(ckpt)
    assert cfg.contrastive.weight == 1 and cfg.contrastive.projection == 16 and cfg.contrastive.crop == 0.3
    assert not any("head" in k for k in model.state_dict())  # the projection head was dropped
    r = run_cli("baseline", "few-labels", "-e", f"simclr={ckpt}", "--budgets", "40", "--draws", "1",
                "--pseudo-rounds", "0", "--set", "finetune.max_epochs=2", "--set", "finetune.probe_epochs=1",
                "--device", "cpu", "-o", str(tmp_path / "few"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "few" / "label_draws.json").read_text())["info"]
    assert "contrastive term: weight 1" in info["encoders"]["simclr"] and info["spreading"] is None
    r = run_cli("baseline", "few-labels", "-e", f"simclr={ckpt}", "--budgets", "40", "--draws", "1",
                "--pseudo-rounds", "0", "--spread", "--spread-neighbours", "10", "--device", "cpu",
                "-o", str(tmp_path / "spread"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "spread" / "label_draws.json").read_text())["info"]
    assert info["spreading"]["neighbours"] == 10 and "simclr (label draws)" in r.stdout
    r = run_cli("baseline", "few-labels", "-e", f"simclr={ckpt}", "--pseudo-rounds", "0", "--spread",
                "--consistency", "10", "-o", str(tmp_path / "bad"), cwd=tmp_path, env=env)
    assert r.returncode != 0 and "--pseudo-rounds 1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("compare", str(tmp_path / "few"), "--json", cwd=tmp_path, env=env)
    assert [row["model"] for row in json.loads(r.stdout)] == ["simclr (label draws)"]
