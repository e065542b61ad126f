"""Data: IDX files in every layout aeopt promises, the not-found message, splits, subsets, folds, noise."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import aeopt.training.data as data
from aeopt.config import DataConfig
from aeopt.errors import ConfigError
from aeopt.training.data import (
    DataNotFoundError,
    Split,
    add_noise,
    load_dataset,
    prepare,
    stratified_folds,
    stratified_split,
    stratified_subset,
    synthetic,
    to_float,
    training_pool,
)

# ----- IDX files written here, byte by byte ------------------------------------------------------

STEMS = {
    "train-images-idx3-ubyte": "train_x",
    "train-labels-idx1-ubyte": "train_y",
    "t10k-images-idx3-ubyte": "test_x",
    "t10k-labels-idx1-ubyte": "test_y",
}


def _idx_bytes(array: np.ndarray) -> bytes:
    # IDX: two zero bytes, type 0x08 (unsigned byte), number of dimensions, then big-endian sizes.
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# The official files' first training labels: how aeopt tells what a flat folder holds.
FASHION_FIRST, MNIST_FIRST = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def _arrays(n_train: int = 30, n_test: int = 20, first: list[int] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    train_y = np.arange(n_train) % 10
    if first is not None:
        train_y[: len(first)] = first
    return {
        "train_x": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_y": train_y.astype(np.uint8),
        "test_x": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def _write_idx(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool, rename=lambda s: s) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, key in STEMS.items():
        raw = _idx_bytes(arrays[key])
        name = rename(stem)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def _check(ds, arrays: dict[str, np.ndarray]) -> None:
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape == (len(arrays["train_y"]), 1, 28, 28)
    assert np.array_equal(ds.train.x[:, 0].numpy(), arrays["train_x"])
    assert np.array_equal(ds.train.y.numpy(), arrays["train_y"])
    assert ds.train.y.dtype == torch.int64
    assert np.array_equal(ds.test.x[:, 0].numpy(), arrays["test_x"])
    assert np.array_equal(ds.test.y.numpy(), arrays["test_y"])


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path: Path):
    # load_dataset caches per process; and a machine with Debian's package must not leak into these tests.
    load_dataset.cache_clear()
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-here")
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)
    yield
    load_dataset.cache_clear()


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_reads_torchvision_layout(tmp_path: Path, gz: bool) -> None:
    arrays = _arrays()
    _write_idx(tmp_path / "FashionMNIST" / "raw", arrays, gz=gz)
    ds = load_dataset("fashion_mnist", str(tmp_path))
    _check(ds, arrays)
    assert ds.classes[9] == "Ankle boot"
    assert ds.source == str(tmp_path / "FashionMNIST" / "raw")


def test_prefers_raw_over_gz(tmp_path: Path) -> None:
    folder = tmp_path / "FashionMNIST" / "raw"
    good, other = _arrays(), _arrays(n_train=40)
    _write_idx(folder, good, gz=False)
    _write_idx(folder, other, gz=True)
    _check(load_dataset("fashion_mnist", str(tmp_path)), good)


def test_reads_flat_debian_style_folder_by_default(tmp_path: Path, monkeypatch) -> None:
    # Debian's dataset-fashion-mnist puts the four .gz files straight into one folder.
    arrays = _arrays(first=FASHION_FIRST)
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    _write_idx(debian, arrays, gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", debian)
    ds = load_dataset("fashion_mnist")
    _check(ds, arrays)
    assert ds.source == str(debian)


def test_data_dir_from_environment_and_mnist_dot_names(tmp_path: Path, monkeypatch) -> None:
    # MNIST's site also names its files "train-images.idx3-ubyte".
    arrays = _arrays()
    _write_idx(tmp_path / "MNIST", arrays, gz=True, rename=lambda s: s.replace("-idx", ".idx"))
    monkeypatch.setenv("AEOPT_DATA_DIR", str(tmp_path))
    ds = load_dataset("mnist")
    _check(ds, arrays)
    assert ds.classes == [str(i) for i in range(10)]


def test_user_cache_is_searched(tmp_path: Path) -> None:
    arrays = _arrays()
    _write_idx(data.cache_dir() / "FashionMNIST" / "raw", arrays, gz=False)
    try:
        _check(load_dataset("fashion_mnist"), arrays)
    finally:
        for f in (data.cache_dir() / "FashionMNIST" / "raw").iterdir():
            f.unlink()


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_flat_folder_is_taken_only_for_the_dataset_it_holds(gz: bool) -> None:
    # MNIST straight in the user cache used to load as "fashion_mnist", with Fashion's class names.
    arrays = _arrays(first=MNIST_FIRST)
    _write_idx(data.cache_dir(), arrays, gz=gz)
    try:
        with pytest.raises(DataNotFoundError) as info:
            load_dataset("fashion_mnist")
        # The message says where the files go: the subfolder, which names the dataset.
        assert str(data.cache_dir() / "FashionMNIST" / "raw") in str(info.value)
        ds = load_dataset("mnist")
        _check(ds, arrays)
        assert ds.name == "mnist" and ds.source == str(data.cache_dir())
    finally:
        for f in data.cache_dir().iterdir():
            if f.is_file():
                f.unlink()


def test_flat_folder_of_unknown_images_is_not_taken_for_either(tmp_path: Path, monkeypatch) -> None:
    flat = tmp_path / "flat"
    _write_idx(flat, _arrays(), gz=False)  # labels 0 1 2 ...: neither dataset's
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", flat)
    with pytest.raises(DataNotFoundError, match="not found"):
        load_dataset("fashion_mnist")


def test_not_found_names_every_fix(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion_mnist", str(empty))
    message = str(info.value)
    assert "\n" not in message
    for fix in ("--data-dir", "AEOPT_DATA_DIR", "dataset-fashion-mnist", "digits", str(empty)):
        assert fix in message, fix
    assert not any(empty.iterdir()), "a failed lookup must not write into the data folder"


@pytest.mark.parametrize("from_env", [False, True], ids=["option", "environment"])
def test_a_named_folder_without_the_data_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch,
                                                                     from_env: bool) -> None:
    # A typo like `--data-dir ../shared` (for ../shared/data) used to train on the cache's copy instead.
    arrays = _arrays(first=FASHION_FIRST)
    debian = tmp_path / "debian"
    _write_idx(debian, arrays, gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", debian)
    assert load_dataset("fashion_mnist").source == str(debian)  # found when nothing is named
    load_dataset.cache_clear()
    shared = tmp_path / "shared"
    _write_idx(shared / "data" / "FashionMNIST" / "raw", arrays, gz=False)
    if from_env:
        monkeypatch.setenv("AEOPT_DATA_DIR", str(shared))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion_mnist", None if from_env else str(shared))
    message = str(info.value)
    assert "\n" not in message
    assert ("AEOPT_DATA_DIR=" if from_env else "--data-dir ") + str(shared) in message
    assert str(shared / "FashionMNIST" / "raw") in message and "train-labels-idx1-ubyte" in message


def test_a_named_flat_folder_of_the_other_dataset_says_which_it_holds(tmp_path: Path) -> None:
    _write_idx(tmp_path, _arrays(first=MNIST_FIRST), gz=True)
    with pytest.raises(DataNotFoundError, match=r"holds mnist .*--set data\.dataset=mnist"):
        load_dataset("fashion_mnist", str(tmp_path))
    _write_idx(tmp_path, _arrays(), gz=True)  # labels 0 1 2 ...: neither
    with pytest.raises(DataNotFoundError, match="neither Fashion-MNIST nor MNIST"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_incomplete_folder_is_not_used(tmp_path: Path) -> None:
    arrays = _arrays()
    _write_idx(tmp_path / "FashionMNIST" / "raw", arrays, gz=False)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match="not found") as info:
        load_dataset("fashion_mnist", str(tmp_path))
    assert "lacks t10k-labels-idx1-ubyte" in str(info.value)


def test_not_an_idx_file(tmp_path: Path) -> None:
    arrays = _arrays()
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx(folder, arrays, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataNotFoundError, match="IDX"):
        load_dataset("fashion_mnist", str(tmp_path))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_truncated_file(tmp_path: Path, gz: bool) -> None:
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx(folder, _arrays(), gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    data_bytes = (folder / name).read_bytes()
    (folder / name).write_bytes(data_bytes[: len(data_bytes) - 100])
    with pytest.raises(DataNotFoundError, match="re-download") as info:
        load_dataset("fashion_mnist", str(tmp_path))
    assert name in str(info.value)


def test_corrupt_deflate_data_in_a_gz_is_one_line(tmp_path: Path) -> None:
    # A header and trailer that look right around damaged compressed bytes: zlib, not gzip, notices.
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx(folder, _arrays(), gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[10:40] = b"\xff" * 30  # just past the 10-byte gzip header: the first deflate block
    path.write_bytes(bytes(raw))
    with pytest.raises(DataNotFoundError, match="re-download") as info:
        load_dataset("fashion_mnist", str(tmp_path))
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_mismatched_images_and_labels(tmp_path: Path) -> None:
    arrays = _arrays()
    arrays["train_y"] = arrays["train_y"][:-1]
    _write_idx(tmp_path / "FashionMNIST" / "raw", arrays, gz=True)
    with pytest.raises(DataNotFoundError, match="do not match"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataNotFoundError, match="digits"):
        load_dataset("cifar10")


# ----- bundled and synthetic data ----------------------------------------------------------------


def test_digits_are_28x28_uint8_with_ten_classes() -> None:
    ds = load_dataset("digits")
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.train.x.dtype == torch.uint8
    assert len(ds.train) + len(ds.test) == 1797  # scikit-learn's bundled set
    assert set(ds.train.y.tolist()) == set(range(10)) == set(ds.test.y.tolist())
    # Centred like MNIST: the 4-pixel border is empty.
    assert ds.train.x[..., :4, :].sum() == 0 and ds.train.x[..., :, -4:].sum() == 0


def test_synthetic_is_deterministic_and_seeded() -> None:
    a, b, c = synthetic(), synthetic(), synthetic(seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert torch.bincount(a.train.y).tolist() == [200] * 10


# ----- splits, subsets, folds --------------------------------------------------------------------


def _unbalanced_labels() -> torch.Tensor:
    counts = [50, 80, 123, 7, 64, 99, 31, 200, 45, 12]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]


def test_stratified_split_is_disjoint_complete_stratified_and_deterministic() -> None:
    y = _unbalanced_labels()
    tr, va = stratified_split(y, 0.2, seed=0)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert sorted(tr.tolist() + va.tolist()) == list(range(len(y)))
    for c in range(10):
        n_c = int((y == c).sum())
        assert int((y[va] == c).sum()) == round(n_c * 0.2)
    tr2, va2 = stratified_split(y, 0.2, seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = stratified_split(y, 0.2, seed=1)
    assert not torch.equal(va, va3)


@pytest.mark.parametrize("per_class, fraction, n_val", [(2, 0.2, 1), (3, 0.1, 1), (10, 0.96, 9), (2, 0.9, 1)])
def test_stratified_split_keeps_an_image_on_each_side_of_every_class(per_class: int, fraction: float,
                                                                     n_val: int) -> None:
    # Rounding alone gave a class of 2 no validation image at 0.2 (train_subset 20 on the digits: a
    # ZeroDivisionError in training) and a class of 10 no training image at 0.96.
    y = torch.arange(10 * per_class) % 10
    tr, va = stratified_split(y, fraction, seed=0)
    assert torch.bincount(y[va], minlength=10).tolist() == [n_val] * 10
    assert torch.bincount(y[tr], minlength=10).tolist() == [per_class - n_val] * 10


def test_a_split_that_stays_empty_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"leave the validation split empty; raise data\.train_subset to at "
                                          r"least 20 \(2 images per class\)"):
        stratified_split(torch.arange(10), 0.2, seed=0)
    with pytest.raises(ConfigError, match="leave the training split empty"):
        stratified_split(torch.arange(10), 0.9, seed=0)


def test_prepare_on_a_small_subset_has_both_splits() -> None:
    p = prepare(DataConfig(dataset="digits", train_subset=20))
    assert (len(p.train), len(p.val)) == (10, 10)


@pytest.mark.parametrize("n", [20, 73, 300, 700])
def test_stratified_subset_has_exact_size_and_proportions(n: int) -> None:
    y = _unbalanced_labels()
    keep = stratified_subset(y, n, seed=0)
    assert len(keep) == n == len(set(keep.tolist()))
    assert torch.equal(keep, stratified_subset(y, n, seed=0))
    counts = torch.bincount(y, minlength=10).double()
    got = torch.bincount(y[keep], minlength=10).double()
    # Each class within one image of its proportional share.
    assert ((got - counts * n / len(y)).abs() < 1.0 + 1e-9).all()


def test_stratified_subset_of_everything() -> None:
    y = _unbalanced_labels()
    assert torch.equal(stratified_subset(y, len(y) + 5, seed=0), torch.arange(len(y)))


def test_stratified_folds_partition_the_pool() -> None:
    y = _unbalanced_labels()
    folds = stratified_folds(y, 5, seed=0)
    assert len(folds) == 5
    all_val = torch.cat([va for _, va in folds]).tolist()
    assert sorted(all_val) == list(range(len(y)))  # every image validates exactly once
    for tr, va in folds:
        assert not set(tr.tolist()) & set(va.tolist())
        assert len(tr) + len(va) == len(y)
        for c in range(10):
            n_c = int((y == c).sum())
            assert abs(int((y[va] == c).sum()) - n_c / 5) <= 1
    again = stratified_folds(y, 5, seed=0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert not torch.equal(folds[0][1], stratified_folds(y, 5, seed=1)[0][1])


def test_more_folds_than_the_smallest_class_is_one_line_config_error() -> None:
    # The digits with train_subset 40 have 4 of some class: scikit-learn's ValueError was a traceback
    # in every trial of a study.
    y = training_pool(DataConfig(dataset="digits", train_subset=40)).y
    assert int(torch.bincount(y).min()) == 4
    with pytest.raises(ConfigError) as info:
        stratified_folds(y, 5, seed=0)
    assert str(info.value) == ("cv.folds = 5: the smallest class of the training images has only 4; "
                               "lower cv.folds or raise data.train_subset")
    assert len(stratified_folds(y, 4, seed=0)) == 4


def test_prepare_splits_train_80_20_and_keeps_test_apart() -> None:
    cfg = DataConfig(dataset="synthetic", train_subset=1000, test_subset=100)
    p = prepare(cfg)
    assert (len(p.train), len(p.val), len(p.test)) == (800, 200, 100)
    assert torch.bincount(p.val.y).tolist() == [20] * 10
    assert torch.bincount(p.test.y).tolist() == [10] * 10
    # Train and validation come from the training split only, and do not overlap.
    pool = training_pool(cfg)
    rows = {tuple(r) for r in pool.x.flatten(1).tolist()}
    assert all(tuple(r) in rows for r in p.val.x.flatten(1).tolist())
    train_rows = {tuple(r) for r in p.train.x.flatten(1).tolist()}
    assert not train_rows & {tuple(r) for r in p.val.x.flatten(1).tolist()}
    # Same config, same split.
    again = prepare(cfg)
    assert torch.equal(again.val.x, p.val.x) and torch.equal(again.test.x, p.test.x)
    full = prepare(DataConfig(dataset="synthetic"))
    assert (len(full.train), len(full.val), len(full.test)) == (1600, 400, 500)


def test_to_float_and_noise() -> None:
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    f = to_float(x, "cpu")
    assert f.dtype == torch.float32 and torch.allclose(f, torch.tensor([[0.0, 128 / 255, 1.0]]))
    img = torch.rand(2000, 1, 28, 28)
    assert add_noise(img, 0.0) is img
    noisy = add_noise(img.clone(), 0.3, torch.Generator().manual_seed(0))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert 0.05 < (noisy - img).abs().mean() < 0.3
    again = add_noise(img.clone(), 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


# ----- the real files ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_fashion_mnist(real_data_dir: Path) -> None:
    ds = load_dataset("fashion_mnist", str(real_data_dir))
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)
    assert torch.bincount(ds.train.y).tolist() == [6000] * 10
    assert ds.train.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert ds.test.y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # The pixel mean of the training split (pixels / 255) is the known 0.2860.
    assert ds.train.x.float().mean().item() / 255 == pytest.approx(0.2860, abs=5e-4)


@pytest.mark.realdata
def test_real_mnist_from_gz_only(real_data_dir: Path) -> None:
    if not (real_data_dir / "MNIST" / "raw").is_dir():
        pytest.skip("no MNIST beside the real Fashion-MNIST")
    ds = load_dataset("mnist", str(real_data_dir))
    assert torch.bincount(ds.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ds.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    keep = stratified_subset(ds.train.y, 6000, seed=0)
    assert len(keep) == 6000


@pytest.mark.realdata
@pytest.mark.parametrize("folder, name, other", [("FashionMNIST", "fashion_mnist", "mnist"),
                                                 ("MNIST", "mnist", "fashion_mnist")])
def test_real_files_flat_are_told_apart(real_data_dir: Path, tmp_path: Path, folder: str, name: str,
                                        other: str, monkeypatch) -> None:
    # The fingerprint against the official bytes: Fashion-MNIST raw and .gz, MNIST .gz only.
    raw = real_data_dir / folder / "raw"
    if not raw.is_dir():
        pytest.skip(f"no {folder}/raw beside the real Fashion-MNIST")
    for kind in ("raw", "gz"):
        files = [f for f in raw.iterdir() if (f.suffix == ".gz") == (kind == "gz")]
        if len(files) < 4:
            continue  # MNIST ships .gz only
        flat = tmp_path / kind
        flat.mkdir()
        for f in files:
            (flat / f.name).symlink_to(f)
        assert data._idx_folder(flat, name) == flat
        assert data._idx_folder(flat, other) is None


def test_a_splits_digest_follows_its_images_labels_and_their_order():
    g = torch.Generator().manual_seed(0)
    a = Split(torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=g),
              torch.randint(0, 10, (50,), generator=g))
    assert a.digest() == Split(a.x.clone(), a.y.clone()).digest() and len(a.digest()) == 16
    assert a.take(torch.arange(49, -1, -1)).digest() != a.digest()  # the same images in another order
    other = Split(a.x.clone(), a.y.clone())
    other.x[3, 0, 5, 5] ^= 1  # one pixel
    assert other.digest() != a.digest()
    relabelled = Split(a.x, (a.y + 1) % 10)
    assert relabelled.digest() != a.digest()
