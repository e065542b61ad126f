"""A run folder given for a checkpoint (`--checkpoint runs/best`) means the checkpoint it holds, for every
command that reads one, as `aeopt report --checkpoint` has always taken it."""

from __future__ import annotations

from aeopt.cli import main
from aeopt.config import RunConfig
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.models import build_model

TINY = {"model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4},
        "data": {"dataset": "digits"}, "budget": {"max_epochs": 1}}


def test_finetune_takes_a_run_folder(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.model_validate(TINY)
    save_checkpoint(tmp_path / "runs" / "best" / "checkpoint.pt", build_model(cfg), cfg)

    # No --out: the default is named after the run folder (runs/finetune-best), as it is after
    # runs/best/checkpoint.pt, not after the folder above it (runs/finetune-runs).
    code = main(["finetune", "--checkpoint", "runs/best", "--set", "finetune.max_epochs=1",
                 "--device", "cpu"])

    err = capfd.readouterr().err
    assert code == 0, err
    assert (tmp_path / "runs" / "finetune-best" / "metrics.json").is_file()


def test_a_folder_without_a_checkpoint_says_so(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()

    assert main(["finetune", "--checkpoint", "runs", "--device", "cpu"]) == 2

    err = capfd.readouterr().err
    assert err == "error: runs is a folder without checkpoint.pt; pass the checkpoint file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
