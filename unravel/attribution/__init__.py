"""Which path lengths carry the gradient: the exact decomposition, Veit et al.'s sampling
estimator, and norm preservation.

- :func:`path_length_gradients` -- the gradient split by path length, exactly
  (``method="exact"``, :mod:`~unravel.attribution.exact`) or by the paper's sampling estimator
  (``method="sample"``, :mod:`~unravel.attribution.sample`), as a :class:`PathLengthGradients`;
- :func:`dataset_path_length_gradients` -- the same over a whole dataset, batch by batch,
  shared between ``torchrun`` ranks (:mod:`~unravel.attribution.dataset`);
- :func:`path_magnitudes` -- Veit et al.'s magnitude by path length as the paper measured it
  (sampled single paths on several batches), :mod:`~unravel.attribution.magnitude`;
- :func:`norm_ratios` -- the gradient's norm across each unit.

Two quantities, named in each result's ``quantity``: ``"net"`` (exact: the norm of the sum of a
length's path gradients, which can cancel) and ``"magnitude"`` (sampled: Veit's number of paths
x mean single-path norm, which cannot).

All of them record one forward pass through :func:`unravel.intervene`, so inside a lesion they
measure the lesioned network. Tracking over training is :class:`unravel.tracking.PathLengthTracker`.
"""

from .dataset import dataset_path_length_gradients
from .exact import path_length_gradients
from .magnitude import path_magnitudes
from .norms import norm_ratios
from .result import QUANTITIES, PathLengthGradients

__all__ = ["path_length_gradients", "dataset_path_length_gradients", "path_magnitudes", "PathLengthGradients",
           "QUANTITIES", "norm_ratios"]

