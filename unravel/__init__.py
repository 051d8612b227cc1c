"""unravel: the unraveled-ensemble analysis of residual networks.

A residual network of n units is a collection of 2^n paths (Veit et al., NeurIPS 2016). unravel
finds the units of a model, counts and draws its paths, deletes and reorders units, and splits
the gradient exactly by path length.
"""

from . import attribution, data, lesion, models, plots, train
from .graph import UnraveledGraph, unravel
from .units import (
    Adapter,
    ResidualUnit,
    UnitParts,
    UnsupportedModelError,
    find_units,
    register_adapter,
    supported_blocks,
    unit_table,
    unregister_adapter,
)

__version__ = "0.1.0"

__all__ = [
    "find_units", "register_adapter", "unregister_adapter", "supported_blocks", "unit_table",
    "ResidualUnit", "UnitParts", "Adapter", "UnsupportedModelError", "models", "data", "train", "plots", "lesion", "attribution", "unravel", "UnraveledGraph",
]
