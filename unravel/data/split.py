"""The split every dataset loader returns: :class:`DataSplit` (train and test tensors, classes,
input shape), and the seeded train/test split it is made with. It does not check that a
dataset's examples are independent of each other.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import ArgumentError

__all__ = ["DataSplit"]


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
    py_state = random.getstate()  # the first import of scikit-learn draws from Python's generator
    from sklearn.model_selection import train_test_split

    random.setstate(py_state)
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def _tensors(x, y):
    return TensorDataset(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
                         torch.as_tensor(np.asarray(y), dtype=torch.long))
