"""Which path lengths carry the gradient: the exact decomposition, Veit et al.'s sampling
estimator, and norm preservation.

- :func:`path_length_gradients` -- the gradient split by path length, exactly
  (``method="exact"``, :mod:`~unravel.attribution.exact`) or by the paper's sampling estimator
  (``method="sample"``, :mod:`~unravel.attribution.sample`), as a :class:`PathLengthGradients`;
- :func:`dataset_path_length_gradients` -- the same over a whole dataset, batch by batch,
  shared between ``torchrun`` ranks (:mod:`~unravel.attribution.dataset`);
- :func:`norm_ratios` -- the gradient's norm across each unit.

All of them record one forward pass through :func:`unravel.intervene`, so inside a lesion they
measure the lesioned network. Tracking over training is :class:`unravel.tracking.PathLengthTracker`.
"""

from .dataset import dataset_path_length_gradients
from .exact import path_length_gradients
from .norms import norm_ratios
from .result import PathLengthGradients

__all__ = ["path_length_gradients", "dataset_path_length_gradients", "PathLengthGradients", "norm_ratios"]

