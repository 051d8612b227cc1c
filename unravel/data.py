"""Datasets that work offline: MNIST-1D, scikit-learn's digits, CIFAR-10 from local files, synthetic.

Every loader returns a :class:`DataSplit` (train and test ``TensorDataset`` s, classes, input
shape) with a split that depends only on its seed. Nothing here downloads: CIFAR-10 is read from
the standard python-pickle batch files in a local folder.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DataSplit", "mnist1d", "digits", "cifar10", "synthetic", "load", "DATASETS"]

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
        raise ValueError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1.")
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
        raise ValueError(f"num_samples={num_samples!r}: must be an integer >= 20 (two per class).")
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
            raise ValueError(f"{path} is not a CIFAR-10 python batch file ({e}).") from None
    keys = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in keys or "labels" not in keys:
        raise ValueError(f"{path} has no 'data'/'labels' entries: not a CIFAR-10 python batch file.")
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
        raise ValueError(f"num_samples={num_samples}, num_classes={num_classes}: need num_classes >= 2 "
                         "and at least two samples per class.")
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes,) + input_shape).astype(np.float32)
    y = np.arange(num_samples) % num_classes
    x = means[y] + noise * rng.normal(size=(num_samples,) + input_shape).astype(np.float32)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed)
    return DataSplit("synthetic", _tensors(xtr, ytr), _tensors(xte, yte), num_classes, input_shape)


DATASETS = {"mnist1d": mnist1d, "digits": digits, "cifar10": cifar10, "synthetic": synthetic}


def load(name: str, **kwargs) -> DataSplit:
    """A dataset by name: one of :data:`DATASETS`.

    Examples
    --------
    >>> import unravel
    >>> unravel.data.load("digits").name
    'digits'
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    return DATASETS[name](**kwargs)
