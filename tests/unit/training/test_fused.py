"""Fused folds against the sequential path: the same per-fold losses, fold by fold, epoch by epoch."""

from __future__ import annotations

import pytest
import torch

from aeopt.config import RunConfig
from aeopt.training.engine import Trainer
from aeopt.training.fused import FusedFolds, StackedOptimizer
from aeopt.training.models import build_model

CPU = torch.device("cpu")


def _pair(model: dict, optim: str, sizes: tuple[int, ...], bs: int = 32):
    cfg = RunConfig.model_validate({"model": model, "budget": {"batch_size": bs, "max_epochs": 2},
                                    "optim": {"name": optim, "lr": 3e-3, "weight_decay": 1e-4}})
    models = []
    for k in range(len(sizes)):
        torch.manual_seed(k)
        models.append(build_model(cfg))
    sequential = []
    for k, m in enumerate(models):
        twin = build_model(cfg)
        twin.load_state_dict(m.state_dict())
        sequential.append(Trainer(twin, cfg, CPU, seed=k))
    fused = FusedFolds(models, cfg, CPU, seeds=list(range(len(sizes))))
    return cfg, sequential, fused


def _data(sizes: tuple[int, ...], n_val: int = 64):
    x = torch.rand(sum(sizes) + n_val, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    bounds = torch.tensor((0, *sizes)).cumsum(0).tolist()
    folds = [torch.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return x, folds, x[-n_val:]


# Unequal folds whose sizes straddle a batch boundary (97 < 3 * 32 < 100), so the tail path runs
# for every fold and one fold has an extra full batch the others lack.
SIZES = (100, 97, 130)


@pytest.mark.parametrize(("model", "optim"), [
    ({"kind": "conv_ae", "dropout": 0.0}, "adam"),
    ({"kind": "conv_ae", "dropout": 0.0, "batch_norm": True}, "adamw"),
    ({"kind": "denoising_ae", "dropout": 0.0, "noise_std": 0.3}, "sgd"),
    ({"kind": "vae", "hidden1": 64, "hidden2": 32}, "adam"),
])
def test_fused_folds_match_sequential_training_fold_by_fold(model, optim):
    torch.manual_seed(0)
    _, sequential, fused = _pair(model, optim, SIZES)
    x, folds, val = _data(SIZES)
    for _ in range(2):
        seq_train = [t.train_epoch(x[f]) for t, f in zip(sequential, folds, strict=True)]
        fused_train = fused.train_epoch(x, folds)
        # Float sums in another order (grouped convolutions; the sequential trainers' channels-last
        # layout and fused Adam on the CPU), amplified a little by Adam and batch norm; the VAE samples
        # its code (reparameterization) from the global RNG: in distribution only.
        tol = 5e-2 if model["kind"] == "vae" else 5e-4
        assert fused_train == pytest.approx(seq_train, rel=tol)
        seq_val = [t.evaluate(val) for t in sequential]
        fused_val = [fused.evaluate(i, val) for i in range(len(SIZES))]
        assert fused_val == pytest.approx(seq_val, rel=tol)
    # The folds really learned different things: the comparison above is not of identical numbers.
    assert len({round(v, 6) for v in fused_val}) == len(SIZES)


def test_fold_state_loads_into_a_plain_model():
    cfg, sequential, fused = _pair({"kind": "conv_ae", "dropout": 0.0, "batch_norm": True}, "adam", SIZES)
    x, folds, val = _data(SIZES)
    fused.train_epoch(x, folds)
    model = fused.load_into(build_model(cfg), 1)
    plain = Trainer(model, cfg, CPU, seed=0).evaluate(val)
    assert plain == pytest.approx(fused.evaluate(1, val), rel=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_stacked_optimizer_equals_torch_optim_and_masked_folds_stand_still(name):
    from aeopt.config import OptimConfig

    cfg = OptimConfig(name=name, lr=0.01, weight_decay=0.01, momentum=0.9)
    torch.manual_seed(0)
    start = torch.randn(3, 5)
    stacked = {"w": start.clone().requires_grad_(True)}
    opt = StackedOptimizer(stacked, cfg, 3)
    singles = [start[i].clone().requires_grad_(True) for i in range(3)]
    kwargs = {"lr": 0.01, "weight_decay": 0.01}
    torch_opts = [
        {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]([p], **kwargs) if name != "sgd"
        else torch.optim.SGD([p], momentum=0.9, nesterov=True, **kwargs) for p in singles
    ]
    active = torch.tensor([True, False, True])
    for step in range(4):
        grads = torch.randn(3, 5)
        stacked["w"].grad = grads.clone()
        mask = active if step == 2 else None  # fold 1 sits out the third step
        opt.step(mask)
        for i, (p, o) in enumerate(zip(singles, torch_opts, strict=True)):
            if mask is not None and not mask[i]:
                continue
            p.grad = grads[i].clone()
            o.step()
    for i, p in enumerate(singles):
        assert torch.allclose(stacked["w"][i], p.detach(), atol=1e-6), (name, i)


def test_cross_validate_fused_and_sequential_agree_and_fused_is_recorded():
    from aeopt.training.cv import cross_validate, use_fused
    from aeopt.training.data import Split

    small = {"kind": "conv_ae", "dropout": 0.0, "c1": 4, "c2": 8, "c3": 8, "fc": 16}
    cfg = RunConfig.model_validate({"model": small, "budget": {"batch_size": 64, "max_epochs": 2}})
    g = torch.Generator().manual_seed(1)
    pool = Split((torch.rand(300, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.arange(300) % 10)
    seq = cross_validate(cfg, pool, 3, 0, CPU, fused=False)
    fused = cross_validate(cfg, pool, 3, 0, CPU, fused=True)
    assert (seq.fused, fused.fused) == (False, True)
    assert fused.history == pytest.approx(seq.history, rel=2e-4)
    assert fused.best_epoch == seq.best_epoch
    # fold 0's model is restored to the best epoch on both paths
    for a, b in zip(seq.model.state_dict().values(), fused.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert use_fused(cfg, CPU) is False  # CPU default: sequential (measured faster there)
    assert use_fused(cfg, torch.device("cuda")) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gpu_suite.sh runs it)")
@pytest.mark.parametrize("model", [{"kind": "conv_ae", "dropout": 0.0, "batch_norm": True},
                                   {"kind": "vae", "hidden1": 64, "hidden2": 32}])
def test_fused_folds_on_cuda_match_the_cpu_sequential_path(model):
    cuda = torch.device("cuda")
    cfg, sequential, _ = _pair(model, "adam", SIZES)
    models = []
    for k in range(len(SIZES)):
        torch.manual_seed(k)
        models.append(build_model(cfg))
    fused = FusedFolds(models, cfg, cuda, seeds=list(range(len(SIZES))))
    x, folds, val = _data(SIZES)
    for t, f in zip(sequential, folds, strict=True):
        t.train_epoch(x[f])
    fused.train_epoch(x.to(cuda), folds)
    # Other random streams on the GPU (VAE sampling) and TF32 convolutions: close, not equal.
    tol = 5e-2 if model["kind"] == "vae" else 1e-2
    assert [fused.evaluate(i, val.to(cuda)) for i in range(len(SIZES))] == pytest.approx(
        [t.evaluate(val) for t in sequential], rel=tol)


def test_cuda_graphs_are_off_on_the_cpu():
    from aeopt.training.fused import use_graphs

    assert use_graphs(CPU) is False and use_graphs(CPU, True) is False
    cfg, _, fused = _pair({"kind": "conv_ae", "dropout": 0.0}, "adam", SIZES)
    assert fused.graphed is None


GRAPH_MODELS = [{"kind": "conv_ae", "dropout": 0.0, "batch_norm": True},
                {"kind": "denoising_ae", "dropout": 0.0, "noise_std": 0.3}]


def _eager_graphed_and_again(model: dict, device: torch.device, rel: float) -> None:
    """Three trials of one architecture, three epochs each: eager, then through a graph (the
    first captures it), then through the same graph again with the new trial's own weights.
    Per-fold losses and validation losses agree within `rel`; one capture in all."""
    import aeopt.training.fused as fused_module

    cfg = RunConfig.model_validate({"model": model, "budget": {"batch_size": 32, "max_epochs": 3},
                                    "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                                              "schedule": "cosine"}})
    x, folds, val = _data(SIZES)
    x, val = x.to(device), val.to(device)

    def run(graphs: bool) -> tuple[list[list[float]], list[float]]:
        models = []
        for k in range(len(SIZES)):
            torch.manual_seed(k)
            models.append(build_model(cfg))
        fused = FusedFolds(models, cfg, device, seeds=list(range(len(SIZES))), graphs=graphs)
        assert (fused.graphed is not None) == graphs
        # 3 epochs of 3 full steps each: warm-up, capture, then replays (and eager tails every epoch).
        losses = [fused.train_epoch(x, folds) for _ in range(3)]
        return losses, [fused.evaluate(i, val) for i in range(len(SIZES))]

    eager = run(False)
    before = fused_module.CAPTURES
    graphed = run(True)
    assert fused_module.CAPTURES == before + 1
    again = run(True)  # a second trial of the same architecture: the same graph, its own weights
    assert fused_module.CAPTURES == before + 1
    for result in (graphed, again):
        for got, want in zip(result[0], eager[0], strict=True):
            assert got == pytest.approx(want, rel=rel)
        assert result[1] == pytest.approx(eager[1], rel=rel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gpu_suite.sh runs it)")
@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_cuda_graphs_match_the_eager_fused_step_and_are_captured_once_per_architecture(model):
    _eager_graphed_and_again(model, torch.device("cuda"), rel=1e-3)


class ReplayedOnCPU:
    """A CUDA graph's contract, kept on the CPU: `capture` records the step without running it and
    returns outputs the graph owns; `replay` runs the recorded step on the tensors it captured and
    writes those outputs. CUDA graphs cannot run here; this checks what FusedFolds does around one
    (warm-up count, capture once, static inputs, replays, a cached graph reloaded for a new trial).
    Unlike a CUDA graph it runs the step's Python again at each replay, so it also reads the module's
    train / eval mode again: it caught a second trial replaying the first trial's module, left in eval
    mode by its last validation (harmless under CUDA, whose graph keeps the mode it was recorded in)."""

    made: list[ReplayedOnCPU] = []  # every graph made
    warmed = 0  # warm-up steps, over all graphs

    def __init__(self, device: torch.device):
        self.step = None
        self.out = torch.empty(0)
        self.replays = 0
        ReplayedOnCPU.made.append(self)

    @staticmethod
    def warm_up(device: torch.device, fn):
        ReplayedOnCPU.warmed += 1
        return fn()

    def capture(self, fn) -> torch.Tensor:
        self.step = fn
        return self.out

    def replay(self) -> None:
        self.replays += 1
        losses = self.step()
        self.out.resize_(losses.shape).copy_(losses)


@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_the_graph_path_trains_as_the_eager_one_with_a_stand_in_graph_on_the_cpu(model, monkeypatch):
    import aeopt.training.fused as fused_module

    monkeypatch.setattr(fused_module, "GRAPH", ReplayedOnCPU)
    monkeypatch.setattr(fused_module, "use_graphs", lambda device, graphs=None: bool(graphs))
    monkeypatch.setattr(fused_module, "_GRAPHED", type(fused_module._GRAPHED)())
    monkeypatch.setattr(ReplayedOnCPU, "made", [])
    monkeypatch.setattr(ReplayedOnCPU, "warmed", 0)
    _eager_graphed_and_again(model, CPU, rel=1e-6)
    # One graph for both graphed trials: 3 warm-up steps, the capture, then every full step replayed
    # (the second trial's too, from its first step); 9 full steps per trial.
    [graph] = ReplayedOnCPU.made
    assert ReplayedOnCPU.warmed == fused_module.WARMUP_STEPS == 3
    assert graph.replays == (9 - 3) + 9
