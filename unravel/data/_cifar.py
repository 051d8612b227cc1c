"""CIFAR-10 from the standard python-pickle batch files in a local folder (nothing is
downloaded). The pickles are read with an unpickler that builds only arrays, so a file cannot run
code; it does not check the files' checksums.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import ArgumentError
from .split import DataSplit, _tensors

__all__ = ["cifar10"]

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

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
