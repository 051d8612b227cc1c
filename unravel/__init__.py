"""unravel: the unraveled-ensemble analysis of residual networks.

A residual network of n units is a collection of 2^n paths (Veit et al., NeurIPS 2016). unravel
finds the units of a model, counts and draws its paths, deletes and reorders units, and splits
the gradient exactly by path length.
"""

from . import adapters, attribution, data, errors, graph, interventions, lesion, models, plots
from . import jacobian, lm, losses, procrustes, prune, study, sweeps, tracking, train, units, verify
from .adapters import Adapter, register_adapter, supported_blocks, unregister_adapter
from .errors import UnravelError, UnsupportedModelError
from .graph import UnraveledGraph, unravel
from .interventions import Intervention, active_interventions, intervene
from .jacobian import jacobian_spectra
from .units import ResidualUnit, UnitParts, find_units, unit_table
from .verify import verify_units

__version__ = "0.1.0"

__all__ = [
    "find_units", "verify_units", "unit_table", "ResidualUnit", "UnitParts",
    "Adapter", "register_adapter", "unregister_adapter", "supported_blocks",
    "intervene", "Intervention", "active_interventions",
    "unravel", "UnraveledGraph",
    "jacobian_spectra",
    "UnravelError", "UnsupportedModelError",
    "units", "verify", "graph", "adapters", "interventions", "lesion", "sweeps", "attribution", "jacobian",
    "tracking", "train", "data", "models", "plots", "study", "procrustes", "prune", "errors", "lm", "losses",
]
