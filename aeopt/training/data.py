"""Datasets as whole uint8 tensors; stratified splits, subsets and folds; Gaussian noise.

Images are read once from the IDX files into one uint8 tensor per split and moved to the device
as float in one copy, so training never touches PIL or per-sample transforms.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from aeopt.errors import ConfigError, DataNotFoundError
from aeopt.switches import turned_on

log = logging.getLogger(__name__)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_TV_FOLDER = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, 1, 28, 28] and labels as int64 [N], on any device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: torch.Tensor) -> Split:
        idx = idx.to(self.y.device)
        return Split(self.x[idx], self.y[idx])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def digest(self) -> str:
        """A short fingerprint of the images and labels, in order: two runs scored on the same test set
        share it, whatever subset size or split seed drew it (`aeopt compare` checks)."""
        h = hashlib.blake2b(digest_size=8)
        for t in (self.x, self.y):
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list[str]
    source: str


class NoDataFilesError(DataNotFoundError):
    """No copy of the dataset where aeopt looks by itself (no --data-dir given), and none downloaded.

    Unlike a corrupt file or a --data-dir without the data, nothing the user pointed at is wrong:
    the quickstart falls back to digits on this error only."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aeopt" / "data"


# ----- IDX files ---------------------------------------------------------------------------------


def _read(path: Path, limit: int | None = None) -> bytes:
    """The file's (decompressed) bytes, or its first `limit` of them."""
    try:
        if path.suffix != ".gz":
            with path.open("rb") as f:
                return f.read() if limit is None else f.read(limit)
        if limit is None:
            return gzip.decompress(path.read_bytes())
        with gzip.open(path) as f:
            return f.read(limit)
    # gzip.BadGzipFile is an OSError; a cut-off .gz ends in EOFError; bytes damaged inside the
    # compressed stream (a bad download, a flipped bit on disk) surface as zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise DataNotFoundError(f"{path}: not a readable gzip file ({type(exc).__name__}); "
                                "re-download the dataset") from None


def _read_idx(path: Path) -> np.ndarray:
    raw = _read(path)
    magic = int.from_bytes(raw[0:4], "big")
    if len(raw) < 4 or magic >> 8 != 0x08:  # 0x08 = unsigned byte, the only type these datasets use
        raise DataNotFoundError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x}); "
                                "re-download the dataset")
    ndim = magic & 0xFF
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != offset + int(np.prod(shape)):
        raise DataNotFoundError(f"{path}: {len(raw) - offset} data bytes for shape {shape} (truncated?); "
                                "re-download the dataset")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    # The raw IDX file is preferred (no decompression); the official and Debian .gz work too.
    # MNIST's training images are also published as "train-images.idx3-ubyte".
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


# The first ten training labels of each official file. A flat folder (the user cache, a --data-dir
# holding the files themselves) does not say which dataset it holds, and both use the same file
# names: without this, MNIST there would be loaded and labelled Fashion-MNIST. Ten labels tell them
# apart without reading 60,000 images (the README of shared/data lists the official sequences).
_FINGERPRINTS = {"fashion_mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5), "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)}
_LABEL_HEAD = 8 + len(_FINGERPRINTS["mnist"])  # IDX1 header (magic, count), then one byte per label


def _complete(folder: Path) -> bool:
    return all(_find_file(folder, stem) for pair in _FILES.values() for stem in pair)


def _holds(folder: Path) -> str | None:
    """Which dataset a complete folder's training labels are: "fashion_mnist", "mnist" or None."""
    head = _read(_find_file(folder, _FILES["train"][1]), _LABEL_HEAD)
    return next((name for name, first in _FINGERPRINTS.items() if tuple(head[8:]) == first), None)


def _idx_folder(root: Path, name: str) -> Path | None:
    """The folder under `root` holding all four files of `name`: torchvision's layout (its folder
    name says the dataset), or `root` itself when its labels show it holds that dataset."""
    for folder in (root / _TV_FOLDER[name] / "raw", root / _TV_FOLDER[name]):
        if _complete(folder):
            return folder
    if _complete(root) and _holds(root) == name:
        return root
    return None


def _load_idx_dataset(name: str, folder: Path) -> Dataset:
    splits = {}
    for split, (images, labels) in _FILES.items():
        x = torch.from_numpy(_read_idx(_find_file(folder, images)).copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(_find_file(folder, labels)).astype(np.int64))
        if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != (1, 28, 28):
            raise DataNotFoundError(f"{folder}: {split} images {tuple(x.shape)} do not match "
                                    f"labels {tuple(y.shape)}")
        splits[split] = Split(x, y)
    classes = FASHION_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
    return Dataset(name, splits["train"], splits["test"], classes, str(folder))


def folder_problem(path: str | Path) -> str:
    """Why `path` cannot be a data folder (it does not exist, or is a file), with what to pass instead."""
    full = Path(path).expanduser().absolute()
    what = "not a folder" if full.exists() else "no such folder"
    return f"{what}; looked for {full}; pass the folder that holds FashionMNIST/raw (or MNIST/raw)"


def _explicit_root(data_dir: str | Path | None) -> tuple[Path, str] | None:
    """The folder the user named (--data-dir, else AEOPT_DATA_DIR) and how they named it, or None."""
    explicit = data_dir or os.environ.get("AEOPT_DATA_DIR")
    if not explicit:
        return None
    came_from = f"--data-dir {data_dir}" if data_dir else f"AEOPT_DATA_DIR={explicit}"
    if not Path(explicit).expanduser().is_dir():
        raise DataNotFoundError(f"{came_from}: {folder_problem(explicit)}")
    return Path(explicit).expanduser(), came_from


def _default_roots(name: str) -> list[tuple[str, Path]]:
    roots = [("user cache", cache_dir())]
    if name == "fashion_mnist":
        roots.append(("Debian dataset-fashion-mnist", DEBIAN_FASHION_DIR))
    return roots


def _not_in_explicit(name: str, root: Path, came_from: str) -> str:
    """One line: what the folder the user named holds instead of `name`, and what to pass."""
    raw = Path(_TV_FOLDER[name]) / "raw"
    if _complete(root):  # a flat folder of the four files, but not this dataset's
        held = _holds(root)
        if held is not None:
            return (f"{came_from} holds {held} (its training labels start "
                    f"{' '.join(map(str, _FINGERPRINTS[held][:5]))} ...), not {name}: use "
                    f"--set data.dataset={held}, or pass the folder that holds {raw}")
        return (f"{came_from}: the IDX files in {root.absolute()} are neither Fashion-MNIST nor MNIST (their "
                f"training labels do not start as the official files'); if they are {name}, put them in "
                f"{root.absolute() / raw}")
    stems = [stem for pair in _FILES.values() for stem in pair]
    missing = ""
    for folder in (root / raw, root / _TV_FOLDER[name], root):
        absent = [stem for stem in stems if _find_file(folder, stem) is None]
        if folder.is_dir() and len(absent) < len(stems):  # the folder they meant, incomplete
            missing = f"; {folder.absolute()} lacks {', '.join(absent)}"
            break
    other = "" if name != "fashion_mnist" else ", Debian's dataset-fashion-mnist"
    return (f"{name} not found in {came_from}: expected {(root / raw).absolute()} (or the folder itself) to "
            f"hold {', '.join(stems)} (.gz or not){missing}; pass the folder that holds {raw}, or leave out "
            f"--data-dir and AEOPT_DATA_DIR to use {cache_dir() / raw}{other} or a download; without "
            "files, --set data.dataset=digits runs on scikit-learn's digits")


def _download(name: str, looked: str) -> Dataset:
    # Imported here: torchvision adds about a second to every start-up, and only a download needs it.
    from torchvision import datasets  # noqa: PLC0415

    root = cache_dir()
    cls = datasets.FashionMNIST if name == "fashion_mnist" else datasets.MNIST
    log.info("downloading %s to %s", name, root)
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError / URLError / OSError offline
        why = f"{looked}; download failed: {type(exc).__name__}"
        raise NoDataFilesError(_not_found_message(name, why)) from None
    folder = _idx_folder(root, name)
    if folder is None:
        raise NoDataFilesError(_not_found_message(name, f"{looked}; download left no IDX files"))
    return _load_idx_dataset(name, folder)


def _not_found_message(name: str, why: str) -> str:
    debian = "install it with `apt-get install dataset-fashion-mnist`, " if name == "fashion_mnist" else ""
    raw = Path(_TV_FOLDER[name]) / "raw"
    return (
        f"{name} not found ({why}): {debian}pass --data-dir DIR (or set AEOPT_DATA_DIR) to a folder "
        f"holding {raw}/*-ubyte[.gz], or put the files in {cache_dir() / raw}; without files, "
        "--set data.dataset=digits runs on scikit-learn's digits"
    )


@lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Load a dataset as whole uint8 tensors (CPU). Cached per process."""
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return synthetic()
    if name not in _TV_FOLDER:
        raise DataNotFoundError(f"unknown dataset {name!r}; "
                                "use one of fashion_mnist, mnist, digits, synthetic")
    explicit = _explicit_root(data_dir)
    if explicit is not None:
        # Only the folder the user named: falling back to another copy of the data (the cache,
        # Debian's, a download) would silently train on something else than what they pointed at.
        root, came_from = explicit
        folder = _idx_folder(root, name)
        if folder is None:
            raise DataNotFoundError(_not_in_explicit(name, root, came_from))
        log.info("loading %s from %s (%s)", name, folder, came_from)
        return _load_idx_dataset(name, folder)
    tried = []
    for label, root in _default_roots(name):
        folder = _idx_folder(root, name) if root.is_dir() else None
        if folder is not None:
            log.info("loading %s from %s (%s)", name, folder, label)
            return _load_idx_dataset(name, folder)
        tried.append(str(root))
    looked = "looked in " + ", ".join(tried)
    if not download or turned_on("AEOPT_OFFLINE"):  # AEOPT_OFFLINE=0 (false, no, off) still downloads
        raise NoDataFilesError(_not_found_message(name, looked))
    return _download(name, looked)


# ----- bundled and synthetic data ----------------------------------------------------------------


def _digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, resized to 28x28: no download on any machine."""
    # Imported here, like StratifiedKFold below: scikit-learn costs most of a second at start-up.
    from sklearn.datasets import load_digits  # noqa: PLC0415

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    # 8x8 -> 20x20 then a 4-pixel border, like MNIST's centred 20x20 digits in a 28x28 frame.
    x = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = torch.nn.functional.pad(x, (4, 4, 4, 4))
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = stratified_split(y, 0.2, seed=12345)
    train, test = Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])
    return Dataset("digits", train, test, DIGIT_CLASSES, "sklearn.datasets.load_digits")


def synthetic(n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Dataset:
    """Deterministic 10-class images (a bar at a class-specific angle plus noise), for tests."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> Split:
        y = torch.arange(n) % 10
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
        angle = (y.float() * torch.pi / 10 + 0.1 * torch.randn(n, generator=g)).view(n, 1, 1)
        dist = (xx * torch.sin(angle) - yy * torch.cos(angle)).abs()
        radius = (xx**2 + yy**2).sqrt()
        img = torch.exp(-((dist / 0.15) ** 2)) * (radius < 0.8).float()
        img = img + 0.05 * torch.randn(n, 28, 28, generator=g)
        x = (img.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1)
        perm = torch.randperm(n, generator=g)
        return Split(x[perm], y[perm])

    return Dataset("synthetic", make(n_train), make(n_test), DIGIT_CLASSES, "synthetic")


# ----- splits ------------------------------------------------------------------------------------


def stratified_split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a deterministic stratified (1 - f, f) split: each class split in proportion."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    train, val = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            # Rounding alone gives a class of 2 no validation image at 0.2, and a class of 10 no
            # training image at 0.96: small subsets got an empty split (a division by zero in training,
            # val_acc 0.0 from no images). A class that can be split keeps one image on each side.
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train_idx, val_idx = torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
    if len(y) and not (len(train_idx) and len(val_idx)):  # only when no class has 2 images
        empty = "training" if not len(train_idx) else "validation"
        raise ConfigError(f"data.val_fraction = {val_fraction}: {len(y)} images, one per class, leave the "
                          f"{empty} split empty; raise data.train_subset to at least {2 * len(y)} "
                          "(2 images per class)")
    return train_idx, val_idx


def stratified_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of a deterministic stratified subset of exactly n (everything if n >= len(y)).

    Each class gets its proportional share; the rounding remainders go to the classes with the
    largest fractional parts, so `train_subset: 6000` gives 6000 images on unbalanced MNIST too.
    """
    if n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    classes, counts = torch.unique(y, return_counts=True)
    share = counts.double() * n / len(y)
    take = share.floor().long()
    remainder = n - int(take.sum())
    if remainder:
        # Ties broken by class order (stable sort), so the result is deterministic.
        order = torch.sort(share - take.double(), descending=True, stable=True).indices
        take[order[:remainder]] += 1
    keep = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)][:k])
    return torch.sort(torch.cat(keep)).values


def check_folds(y: torch.Tensor, k: int, *, field: str = "cv.folds", images: str = "the training images",
                fix: str = "lower cv.folds or raise data.train_subset") -> None:
    """ConfigError (one line: `field`, why, `fix`) unless every class of `y` has at least k members,
    which stratified k-fold needs: checked before any training, not when the folds are drawn."""
    counts = torch.unique(y.cpu(), return_counts=True)[1]
    smallest = int(counts.min()) if len(counts) else 0
    if smallest < k:
        raise ConfigError(f"{field} = {k}: the smallest class of {images} has only {smallest}; {fix}")


def stratified_folds(y: torch.Tensor, k: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """k stratified folds as (train indices, validation indices), fixed by seed."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415 (start-up time, see _digits)

    # scikit-learn's own refusal is a ValueError, a traceback in every trial of a study.
    check_folds(y, k)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    labels = y.cpu().numpy()
    return [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in skf.split(np.zeros(len(labels)), labels)]


@dataclass(frozen=True)
class Prepared:
    """The three splits of one run: train and validation from the training split, and test."""

    train: Split
    val: Split
    test: Split
    classes: list[str]
    source: str


def prepare(data_cfg, data_dir: str | None = None) -> Prepared:
    """The run's train / validation / test splits, as the report: a stratified 80/20 split of
    the (optionally subsetted) training split; the test split is kept apart for the end."""
    ds = load_dataset(data_cfg.dataset, data_dir)
    pool = training_pool(data_cfg, ds)
    tr, va = stratified_split(pool.y, data_cfg.val_fraction, data_cfg.split_seed)
    test = ds.test
    if data_cfg.test_subset:
        test = test.take(stratified_subset(test.y, data_cfg.test_subset, data_cfg.split_seed))
    return Prepared(pool.take(tr), pool.take(va), test, ds.classes, ds.source)


def training_pool(data_cfg, ds: Dataset | None = None, data_dir: str | None = None) -> Split:
    """The training split, or its stratified subset: the only data searches may look at."""
    ds = ds or load_dataset(data_cfg.dataset, data_dir)
    if data_cfg.train_subset:
        return ds.train.take(stratified_subset(ds.train.y, data_cfg.train_subset, data_cfg.split_seed))
    return ds.train


# ----- on-device helpers -------------------------------------------------------------------------


def to_float(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 images -> float in [0, 1] on the device, in one transfer."""
    return x.to(device, non_blocking=True).float().div_(255.0)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of the given std, clamped back to the valid pixel range [0, 1]."""
    if std <= 0:
        return x
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return (x + std * noise).clamp_(0.0, 1.0)
