"""A registered model: :class:`ModelEntry` (its builder, the sizing that fits it to data, and the
defaults the command line uses). The registry (:mod:`unravel.models.registry`) holds them; this
module checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes
    ----------
    name : str
    builder : callable
        Returns an ``nn.Module`` from keyword arguments.
    sizing : callable
        Input shape -> the keyword arguments that fit it (``num_classes`` is added apart).
    depth : int or None
        The depth the command line builds when ``--depth`` is not given (None: the builder's).
    width : str or None
        The keyword that ``--width`` sets (``growth`` for DenseNets; None: no such keyword).
    """

    name: str
    builder: Callable[..., nn.Module]
    sizing: Callable[[tuple], dict]
    depth: int | None = None
    width: str | None = "width"
