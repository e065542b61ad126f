"""Which data the quickstart picks: the digits only when no Fashion-MNIST files are anywhere aeopt
looks; a corrupt file, or a --data-dir without the data, is one line and no study."""

from __future__ import annotations

from pathlib import Path

import pytest

import aeopt.training.data as data
from aeopt.cli import main
from aeopt.errors import DataNotFoundError
from aeopt.search.quickstart import pick_dataset
from tests.unit.training.test_data import FASHION_FIRST, _arrays, _write_idx


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path: Path):
    data.load_dataset.cache_clear()
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-here")
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)
    yield
    data.load_dataset.cache_clear()


def _corrupt_fashion(root: Path) -> Path:
    folder = root / "FashionMNIST" / "raw"
    _write_idx(folder, _arrays(first=FASHION_FIRST), gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])  # a cut-off download
    return path


def test_no_files_anywhere_picks_the_digits() -> None:
    assert pick_dataset(None) == "digits"


def test_fashion_mnist_when_it_is_there(tmp_path: Path) -> None:
    _write_idx(tmp_path / "FashionMNIST" / "raw", _arrays(first=FASHION_FIRST), gz=False)
    assert pick_dataset(str(tmp_path)) == "fashion_mnist"


def test_a_corrupt_file_is_the_error_not_the_digits(tmp_path: Path) -> None:
    # It said "Fashion-MNIST is not on this machine" and ran the study on the digits.
    path = _corrupt_fashion(tmp_path / "data")
    with pytest.raises(DataNotFoundError, match="re-download") as info:
        pick_dataset(str(tmp_path / "data"))
    assert str(path) in str(info.value)


def test_a_corrupt_file_in_the_cache_is_the_error_too() -> None:
    _corrupt_fashion(data.cache_dir())
    try:
        with pytest.raises(DataNotFoundError, match="re-download"):
            pick_dataset(None)
    finally:
        for f in (data.cache_dir() / "FashionMNIST" / "raw").iterdir():
            f.unlink()


def test_a_data_dir_without_the_data_is_the_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=f"not found in --data-dir {empty}"):
        pick_dataset(str(empty))


def test_the_command_says_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capfd) -> None:
    path = _corrupt_fashion(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["quickstart", "--data-dir", str(tmp_path / "data"), "--device", "cpu"]) == 2
    err = capfd.readouterr().err
    assert err.splitlines()[-1].startswith(f"error: {path}: "), err
    assert "Traceback" not in err and "digits" not in err
    # No study, no output folder, and no new empty database: the data is picked before the storage opens.
    assert not (work / "quickstart").exists() and not (work / "studies").exists()
