"""What --help says: the choices an option takes, its default when it has one, what leaving it out does,
and examples that run where a user is (not only inside the checkout)."""

from __future__ import annotations

from aeopt import cli


def _help(path: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # rich reads it: nothing wraps at the terminal's edge
    capsys.readouterr()
    assert cli.main([*path, "--help"]) == 0
    return " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_finetune_mode_shows_its_choices(capsys, monkeypatch):
    out = _help(["finetune"], capsys, monkeypatch)
    assert "--mode full|frozen" in out and "<str>" not in out.split("--mode")[1][:40], out


def test_root_example_runs_outside_the_checkout(capsys, monkeypatch):
    out = _help([], capsys, monkeypatch)
    assert "`aeopt train conv_ae --data-dir DIR`" in out and "configs/conv_ae.yaml" not in out, out


def test_worker_and_launch_say_what_no_target_means(capsys, monkeypatch):
    for command in ("worker", "launch"):
        out = _help([command], capsys, monkeypatch)
        assert "Left out: no target, the" in out and "until Ctrl-C or --timeout" in out, (command, out)


def test_default_outputs_are_stated(capsys, monkeypatch):
    assert "Default: runs/finetune-NAME (NAME: the config file's name, else the checkpoint's run folder's)" \
        in _help(["finetune"], capsys, monkeypatch)
    assert "Default: runs/baseline-cnn." in _help(["baseline", "cnn"], capsys, monkeypatch)


def test_shipped_names_in_help_are_the_shipped_files(capsys, monkeypatch):
    from aeopt.config.presets import RUN_CONFIG, STUDY_SPEC, preset_names

    assert "aae_critic" in preset_names(RUN_CONFIG)  # the one a typed list missed
    assert f"({', '.join(preset_names(RUN_CONFIG))};" in _help(["train"], capsys, monkeypatch)
    assert f"({', '.join(preset_names(STUDY_SPEC))};" in _help(["study", "create"], capsys, monkeypatch)
