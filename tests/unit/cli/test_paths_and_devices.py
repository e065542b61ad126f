"""Inputs that name places: study names (they become log folders), --data-dir and devices. Each mistake
is one line that says where the value came from, before anything is written or started."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from aeopt.cli import main
from aeopt.errors import AeoptError, DataNotFoundError, StudyError
from aeopt.search.launch import check_devices, log_folder, missing_cuda
from aeopt.search.studies import check_study_name, path_safe
from aeopt.training.data import load_dataset

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "conv_ae.yaml"
ODD_NAMES = ["../../x", "/tmp/x", "..", ".", "a/../../b", "a b", "x\\..\\y", "~root", "-rf", ".hidden", "",
             "é", "a" * 300, "$(touch x)", "a\nb"]


@pytest.mark.parametrize("name", ["conv_ae", "quickstart", "Conv-AE.v2", "0", "a" * 200])
def test_good_study_names(name):
    assert check_study_name(name) == name
    assert path_safe(name) == name  # an allowed name is its own folder name


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_study_names_are_refused_with_the_rule(name):
    with pytest.raises(StudyError) as err:
        check_study_name(name)
    assert str(err.value) == (f"study name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                              "letter or digit, at most 200 characters")


@pytest.mark.parametrize("name", ODD_NAMES)
def test_every_study_name_gives_a_log_folder_inside_logs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = log_folder(name)
    logs = (tmp_path / "logs").resolve()
    assert (tmp_path / folder).resolve().parent == logs, folder
    assert folder.parent == Path("logs") and folder.name not in ("", ".", "..")
    assert len(folder.name) <= 200


def test_study_create_refuses_a_path_as_name_and_writes_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s"}))
    for name in ("../../x", "/tmp/x"):
        assert main(["study", "create", str(spec), "-n", name]) == 2
        err = capfd.readouterr().err
        assert err == (f"error: study name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                       "letter or digit, at most 200 characters\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no studies/aeopt.db


# ----- --data-dir / AEOPT_DATA_DIR -----------------------------------------------------------------


@pytest.mark.parametrize("command", [["train", str(CONFIG)], ["quickstart"], ["worker", "--study", "s"],
                                     ["launch", "--study", "s"], ["finetune", str(CONFIG)]])
def test_a_missing_data_dir_is_one_line_naming_the_option(command, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no" / "such"
    assert main([*command, "--data-dir", str(missing)]) == 2
    assert capfd.readouterr().err == (f"error: --data-dir {missing}: no such folder; pass the folder that "
                                      "holds FashionMNIST/raw (or MNIST/raw)\n")
    monkeypatch.setenv("AEOPT_DATA_DIR", str(missing))
    assert main(command) == 2
    assert capfd.readouterr().err.startswith(f"error: AEOPT_DATA_DIR={missing}: no such folder;")
    assert not any(tmp_path.iterdir())


def test_a_file_as_data_dir_says_so(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(CONFIG), "--data-dir", str(CONFIG)]) == 2
    assert capfd.readouterr().err.startswith(f"error: --data-dir {CONFIG}: not a folder;")


def test_the_library_refuses_a_missing_data_dir_too(tmp_path, monkeypatch):
    # Before, it silently fell back to the user cache or Debian's copy: another dataset than asked for.
    missing = tmp_path / "nope"
    with pytest.raises(DataNotFoundError, match=rf"^--data-dir {missing}: no such folder;"):
        load_dataset("fashion_mnist", str(missing))
    monkeypatch.setenv("AEOPT_DATA_DIR", str(missing))
    with pytest.raises(DataNotFoundError, match=rf"^AEOPT_DATA_DIR={missing}: no such folder;"):
        load_dataset("mnist")


# ----- devices -------------------------------------------------------------------------------------

ABSENT = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on every machine


def test_a_cuda_device_this_machine_lacks_is_named():
    problem = missing_cuda(["cpu", ABSENT])
    count = torch.cuda.device_count()
    if count:
        assert problem == f"{ABSENT} is not on this machine (it has cuda:0 to cuda:{count - 1})"
    else:
        assert problem == "this machine has no CUDA device; use cpu"
        assert missing_cuda(["cuda"]) == problem
    assert missing_cuda(["cpu", "cpu"]) is None
    with pytest.raises(AeoptError, match=rf"^--devices cpu,{ABSENT}: "):
        check_devices(["cpu", ABSENT], f"cpu,{ABSENT}")


@pytest.mark.parametrize("device,message", [
    ("gpu", "--device gpu: not a device; use cpu, cuda or cuda:N"),
    ("cuda:x", "--device cuda:x: not a device; use cpu, cuda or cuda:N"),
    (ABSENT, f"--device {ABSENT}: "),
])
def test_device_option_is_checked_before_any_work(device, message, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    for command in (["train", str(CONFIG)], ["worker", "--study", "s"]):
        assert main([*command, "--device", device]) == 2
        err = capfd.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    monkeypatch.setenv("AEOPT_DEVICE", device)
    assert main(["train", str(CONFIG)]) == 2
    assert capfd.readouterr().err.startswith(f"error: AEOPT_DEVICE={device}: ")
    assert not any(tmp_path.iterdir())
