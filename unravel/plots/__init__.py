"""Figures from unravel's tidy frames (seaborn) and drawings of the unraveled view (matplotlib).

Plotting never computes science: every function takes a frame or graph that an analysis made,
and returns the matplotlib Axes it drew on. It does not check that a frame came from unravel
beyond the columns it needs.
"""

from .axes import save
from .graph import draw_graph, draw_paths, path_length_distribution
from .lesion import deletion_errors, error_vs_k, lesion_effects
from .paths import gradient_by_length, length_heatmap
from .spectra import spectrum_distribution, unit_spectra
from .training import by_epoch, over_training, training_curves

__all__ = ["path_length_distribution", "deletion_errors", "error_vs_k", "gradient_by_length",
           "length_heatmap", "by_epoch", "unit_spectra", "spectrum_distribution",
           "over_training", "lesion_effects", "training_curves", "draw_paths", "draw_graph", "save"]
