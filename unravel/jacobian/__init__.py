"""Jacobian spectra of residual units: the singular values of each unit's input-output Jacobian
(:func:`jacobian_spectra`), exactly or by Lanczos bidiagonalisation, and their summaries and
tracking over training (:mod:`~unravel.jacobian.spectra`).

One module per job: :mod:`~unravel.jacobian.record` (what reached each unit),
:mod:`~unravel.jacobian.operator` (a unit's Jacobian as a linear operator),
:mod:`~unravel.jacobian.lanczos` (the exact and Lanczos methods), :mod:`~unravel.jacobian.api`
(:func:`jacobian_spectra`), :mod:`~unravel.jacobian.spectra` (summaries, BatchNorm
recalibration, a training callback), :mod:`~unravel.jacobian.norms` (norm preservation as
Zaeemzadeh et al. measure it: extreme singular values, the share within ``[1 - delta, 1 + delta]``,
gradient-norm ratios).
"""

from . import spectra
from .api import jacobian_spectra
from .norms import BAND_COLUMNS, RATIO_COLUMNS, band_summary, gradient_norm_ratios, measure_norm_preservation
from .spectra import SUMMARY_COLUMNS, SpectraTracker, measure_spectra, recalibrated, spectrum_summary

__all__ = ["jacobian_spectra", "spectrum_summary", "recalibrated", "measure_spectra", "SpectraTracker",
           "SUMMARY_COLUMNS", "spectra", "band_summary", "measure_norm_preservation", "gradient_norm_ratios",
           "BAND_COLUMNS", "RATIO_COLUMNS"]
