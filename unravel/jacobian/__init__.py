"""Jacobian spectra of residual units: the singular values of each unit's input-output Jacobian
(:func:`jacobian_spectra`), exactly or by Lanczos bidiagonalisation, and their summaries and
tracking over training (:mod:`~unravel.jacobian.spectra`).

One module per job: :mod:`~unravel.jacobian.record` (what reached each unit),
:mod:`~unravel.jacobian.operator` (a unit's Jacobian as a linear operator),
:mod:`~unravel.jacobian.lanczos` (the exact and Lanczos methods), :mod:`~unravel.jacobian.api`
(:func:`jacobian_spectra`), :mod:`~unravel.jacobian.spectra` (summaries, BatchNorm
recalibration, a training callback).
"""

from . import spectra
from .api import jacobian_spectra
from .spectra import SUMMARY_COLUMNS, SpectraTracker, measure_spectra, recalibrated, spectrum_summary

__all__ = ["jacobian_spectra", "spectrum_summary", "recalibrated", "measure_spectra", "SpectraTracker",
           "SUMMARY_COLUMNS", "spectra"]
