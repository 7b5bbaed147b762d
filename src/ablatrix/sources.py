"""Datasets named by where they are: `npz:<file>`, `folder:<path>` (one sub-folder of images per
class) and `torchvision:<Class>`, registered under their names when a grid names them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data import DATASETS, DatasetInfo, Labelled, register_dataset, stratified_mask
from .errors import AblatrixError
from .registry import Registry

TEST_FRACTION = 0.2  # where the data has no test part of its own: a fixed stratified 20%
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SOURCES: Registry[Callable[[Path, dict[str, str]], tuple[Labelled, tuple[str, ...]]]] = Registry("data source")
_READ: dict[str, tuple[Path, str]] = {}  # each registered "npz:"/"folder:" name: where it was read, its hash


def parse_source(name: str) -> tuple[str, str, dict[str, str]] | None:
    """"folder:imgs?size=32x32" -> ("folder", "imgs", {"size": "32x32"}); None for a registered name."""
    kind, colon, rest = name.partition(":")
    if not colon or kind not in SOURCES:
        return None
    path, _, query = rest.partition("?")
    options = dict(item.partition("=")[::2] for item in query.split("&") if item)
    return kind, path, options


def content_hash(path: Path) -> str:
    """sha256 over a file's bytes, or over a folder's files (relative paths and bytes, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def register_source(name: str, path: Path) -> str:
    """Read dataset `name` ("npz:..." or "folder:...") from `path` and register it under that name
    (once per process); return its content hash. Bad data is an AblatrixError naming the problem."""
    kind, _, options = parse_source(name)
    if name in DATASETS and name in _READ:  # read once per process, like the data itself
        if _READ[name][0] != path:
            raise AblatrixError(f"dataset {name!r} names two places ({_READ[name][0]} and {path}): their runs "
                                "would mix; name them by paths that differ")
        return _READ[name][1]
    if not path.exists():
        raise AblatrixError(f"dataset {name!r}: {path} does not exist")
    labelled, classes = SOURCES.lookup(kind)(path, options)
    DATASETS[name] = DatasetInfo(name, tuple(labelled.x.shape[1:]), classes, lambda root: labelled,
                                 f"{kind} data at {path}", True, None)
    _READ[name] = path, content_hash(path)
    return _READ[name][1]


def _labelled(x: torch.Tensor, y: np.ndarray, is_test: np.ndarray | None) -> Labelled:
    if is_test is None:
        is_test = stratified_mask(y, TEST_FRACTION)
    return Labelled(x, torch.from_numpy(y.astype(np.int64)), torch.from_numpy(is_test))


def _images(name: str, array: np.ndarray) -> torch.Tensor:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1..4 -> float (N, C, H, W); bytes scaled to [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim != 4:
        raise AblatrixError(f"dataset {name!r}: images of shape {array.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    x = torch.from_numpy(np.ascontiguousarray(array)).float()
    return x.div_(255) if array.dtype == np.uint8 else x


@SOURCES.register("npz")
def npz_source(path: Path, options: dict[str, str]) -> tuple[Labelled, tuple[str, ...]]:
    """Arrays `x` and `y` (images and integer labels 0..K-1), optionally `x_test` and `y_test`
    (else a fixed stratified 20% is the test set) and `classes` (names; default "0".."K-1")."""
    name = f"npz:{path}"
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise AblatrixError(f"dataset {name!r}: not a NumPy .npz file ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing or ("x_test" in arrays) != ("y_test" in arrays):
        raise AblatrixError(f"dataset {name!r}: holds {', '.join(sorted(arrays))}; expected x and y "
                            "(and optionally x_test with y_test, classes)")
    parts = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
    for xk, yk in parts:
        if len(arrays[xk]) != len(arrays[yk]) or arrays[yk].ndim != 1:
            raise AblatrixError(f"dataset {name!r}: {xk} holds {len(arrays[xk])} images and {yk} "
                                f"{arrays[yk].shape} labels; expected one label per image")
    y = np.concatenate([arrays[yk] for _, yk in parts])
    if not np.issubdtype(y.dtype, np.integer):
        raise AblatrixError(f"dataset {name!r}: labels are {y.dtype}; expected integers 0..K-1")
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else tuple(
        str(c) for c in range(int(y.max()) + 1))
    if y.min() < 0 or y.max() >= len(classes):
        raise AblatrixError(f"dataset {name!r}: labels run from {y.min()} to {y.max()}; expected 0..{len(classes) - 1}")
    x = torch.cat([_images(name, arrays[xk]) for xk, _ in parts])
    is_test = np.arange(len(y)) >= len(arrays["y"]) if len(parts) == 2 else None
    return _labelled(x, y, is_test), classes


def _size(name: str, options: dict[str, str]) -> tuple[int, int] | None:
    if "size" not in options:
        return None
    h, _, w = options["size"].partition("x")
    if not (h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise AblatrixError(f"dataset {name!r}: size={options['size']!r}; expected HxW, e.g. size=32x32")
    return int(h), int(w)


@SOURCES.register("folder")
def folder_source(path: Path, options: dict[str, str]) -> tuple[Labelled, tuple[str, ...]]:
    """One sub-folder per class (its name is the class), PNG or JPEG images in it, grey or colour
    (a mix is read as colour); `size=HxW` resizes every image, else all must share one size. A
    fixed stratified 20% is the test set."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with torchvision
    name = f"folder:{path}"
    size = _size(name, options)
    classes = tuple(sorted(p.name for p in path.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise AblatrixError(f"dataset {name!r}: {path} needs one sub-folder per class, at least two; found {len(classes)}")
    files, labels = [], []
    for index, cls in enumerate(classes):
        found = sorted(p for p in (path / cls).iterdir() if p.is_file())
        if not found:
            raise AblatrixError(f"dataset {name!r}: class folder {path / cls} is empty")
        files += found
        labels += [index] * len(found)
    images = []
    for file in files:
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise AblatrixError(f"dataset {name!r}: {file} is not a PNG or JPEG image")
        try:
            with Image.open(file) as image:
                image.load()
                images.append(image)
        except (UnidentifiedImageError, OSError) as exc:
            raise AblatrixError(f"dataset {name!r}: {file} cannot be read as an image ({exc})") from None
    mode = "L" if all(im.mode in ("1", "L", "I", "I;16", "F") for im in images) else "RGB"
    images = [im.convert(mode) for im in images]
    if size is not None:
        images = [im.resize(size[::-1], Image.Resampling.BILINEAR) for im in images]  # PIL takes (W, H)
    shapes = {im.size[::-1] for im in images}
    if len(shapes) > 1:
        raise AblatrixError(f"dataset {name!r}: images of {len(shapes)} sizes ({', '.join(f'{h}x{w}' for h, w in sorted(shapes)[:3])}, ...); "
                            f"add ?size=HxW to resize them, e.g. \"folder:{path}?size=32x32\"")
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
    return _labelled(x.float().div_(255), np.array(labels), None), classes


# torchvision's datasets by class name ("torchvision:KMNIST"): input shape and class count, known
# before their files are (a grid is checked before anything is fetched or read). Their files are
# read by torchvision from the data folder; `ablatrix fetch torchvision:NAME` downloads them.
TORCHVISION = {"KMNIST": ((1, 28, 28), 10), "USPS": ((1, 16, 16), 10), "SVHN": ((3, 32, 32), 10),
               "CIFAR100": ((3, 32, 32), 100), "STL10": ((3, 96, 96), 10)}
SPLIT_ARGUMENT = ("SVHN", "STL10")  # these take split="train" / "test", the others train=True / False


def _split(cls_name: str, train: bool) -> dict[str, Any]:
    return {"split": "train" if train else "test"} if cls_name in SPLIT_ARGUMENT else {"train": train}


def register_torchvision(name: str) -> None:
    """Register "torchvision:NAME" (once per process); its official test split is the test set."""
    cls_name = name.partition(":")[2]
    if cls_name not in TORCHVISION:
        raise AblatrixError(f"dataset {name!r}: choose from: {', '.join(f'torchvision:{n}' for n in TORCHVISION)}")
    if name in DATASETS:
        return
    import torchvision.datasets as tvd
    cls = getattr(tvd, cls_name)
    shape, count = TORCHVISION[cls_name]
    names = getattr(cls, "classes", None)  # a class attribute for some (KMNIST), read from the files for others
    classes = tuple(names) if isinstance(names, list) else tuple(str(i) for i in range(count))

    def part(root: Path, train: bool) -> tuple[torch.Tensor, np.ndarray]:
        try:
            data = cls(str(root), download=False, **_split(cls_name, train))
        except (RuntimeError, OSError) as exc:
            raise AblatrixError(f"dataset {name!r} not found in {root} ({exc}); run "
                                f"`ablatrix fetch {name} --data-dir {root}`") from None
        labels = data.targets if hasattr(data, "targets") else data.labels
        return _images(name, np.asarray(data.data)), np.asarray(labels, dtype=np.int64)

    def download(root: Path) -> None:
        for train in (True, False):
            cls(str(root), download=True, **_split(cls_name, train))

    @register_dataset(name, shape, classes, f"torchvision's {cls_name}, its official test split", download=download)
    def load(root: Path) -> Labelled:
        (x, y), (x_test, y_test) = part(root, True), part(root, False)
        return Labelled(torch.cat([x, x_test]), torch.from_numpy(np.concatenate([y, y_test])),
                        torch.arange(len(y) + len(y_test)) >= len(y))


def register_named(name: str, path: str) -> str:
    """Register a dataset named by kind ("npz:", "folder:" at `path`, or "torchvision:"); return the
    content hash that goes into its runs' ids ("" for torchvision's published sets)."""
    if name.startswith("torchvision:"):
        register_torchvision(name)
        return ""
    return register_source(name, Path(path))
