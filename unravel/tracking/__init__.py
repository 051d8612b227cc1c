"""Tracking over training: :class:`~unravel.train.Callback` s that record the exact path-length
histogram (:class:`PathLengthTracker`) and the errors of subnetworks (:class:`SubnetworkTracker`)
at chosen steps, with the step schedule (:func:`log_spaced_steps`) and parameter groups
(:func:`parameter_groups`) they use.

- :mod:`~unravel.tracking.schedule` -- which steps to record at;
- :mod:`~unravel.tracking.histograms` -- path-length histograms, per parameter group;
- :mod:`~unravel.tracking.subnetworks` -- subnetworks' errors with recalibrated BatchNorm.

Each histogram is :func:`unravel.attribution.path_length_gradients` on a fixed probe batch; it does
not check that the probe is representative of the training data.
"""

from .histograms import GROUPS, PathLengthTracker, parameter_groups
from .schedule import log_spaced_steps
from .subnetworks import SubnetworkTracker

__all__ = ["PathLengthTracker", "SubnetworkTracker", "log_spaced_steps", "parameter_groups", "GROUPS"]
