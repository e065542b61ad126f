"""Learning-rate schedules: their shape, their horizon, and the same schedule in every trainer."""

from __future__ import annotations

import math

import pytest
import torch

from aeopt.config import RunConfig
from aeopt.training.engine import Trainer
from aeopt.training.fused import FusedFolds
from aeopt.training.models import build_model
from aeopt.training.schedules import StepSchedule, lr_factor


def test_shapes():
    assert [lr_factor("constant", s, 10) for s in range(10)] == [1.0] * 10
    assert [lr_factor("constant", s, 10, warmup=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = [lr_factor("cosine", s, 100) for s in range(100)]
    assert cos[0] == 1.0 and cos == sorted(cos, reverse=True) and cos[-1] < 1e-3
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    one = [lr_factor("onecycle", s, 100, pct_start=0.3) for s in range(100)]
    peak = one.index(max(one))
    assert peak == 30 and one[0] == pytest.approx(1 / 25) and one[-1] == pytest.approx(1 / 25 / 1e4)
    assert one[:31] == sorted(one[:31]) and one[30:] == sorted(one[30:], reverse=True)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("linear", 0, 10)


def test_the_horizon_is_the_budget_not_the_run():
    # Stopping after 3 of 10 epochs gives the same factors for those 3 epochs as running all 10.
    short, full = StepSchedule("onecycle", 7, 10), StepSchedule("onecycle", 7, 10)
    first = [short.next() for _ in range(21)]
    assert first == [full.next() for _ in range(70)][:21]
    assert math.isclose(max(first), 1.0, rel_tol=0.05) or max(first) < 1.0


def _cfg(schedule: str, optim: str = "adamw") -> RunConfig:
    small = {"kind": "conv_ae", "dropout": 0.0, "c1": 4, "c2": 8, "c3": 8, "fc": 16}
    optim_cfg = {"name": optim, "lr": 1e-2, "schedule": schedule, "warmup_epochs": 1}
    budget = {"batch_size": 32, "max_epochs": 3}
    return RunConfig.model_validate({"model": small, "budget": budget, "optim": optim_cfg})


def test_trainer_follows_the_schedule_step_by_step():
    cfg = _cfg("cosine")
    trainer = Trainer(build_model(cfg), cfg, torch.device("cpu"), seed=0)
    x = torch.rand(100, 1, 28, 28)
    seen = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    for _ in range(3):
        trainer.train_epoch(x)
    expected = [1e-2 * lr_factor("cosine", s, 12, warmup=4) for s in range(12)]
    assert seen == pytest.approx(expected)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_fused_folds_follow_the_same_schedule_as_sequential_trainers(schedule):
    cfg = _cfg(schedule)
    sizes = (100, 97, 130)
    x = torch.rand(sum(sizes), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    bounds = torch.tensor((0, *sizes)).cumsum(0).tolist()
    folds = [torch.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    models, trainers = [], []
    for k in range(len(sizes)):
        torch.manual_seed(k)
        models.append(build_model(cfg))
        twin = build_model(cfg)
        twin.load_state_dict(models[-1].state_dict())
        trainers.append(Trainer(twin, cfg, torch.device("cpu"), seed=k))
    fused = FusedFolds(models, cfg, torch.device("cpu"), seeds=list(range(len(sizes))))
    for _ in range(3):
        expected = [t.train_epoch(x[f]) for t, f in zip(trainers, folds, strict=True)]
        assert fused.train_epoch(x, folds) == pytest.approx(expected, rel=2e-4)
