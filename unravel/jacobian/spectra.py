"""Jacobian spectra over training: per-unit summaries and a :func:`unravel.train.fit` callback.

:func:`unravel.jacobian_spectra` gives every singular value of every unit's Jacobian;
:func:`spectrum_summary` turns them into one row per unit and example (how far the values lie from
1, their quantiles), :func:`measure_spectra` measures a model with its BatchNorm statistics set
from training data first, and :class:`SpectraTracker` does so at the start of training and after
every epoch. Nothing here checks that the probe examples or the calibration data are
representative.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .._utils import as_tuple, check_int, model_device
from ..errors import ArgumentError
from .api import jacobian_spectra
from ..train import Callback

__all__ = ["spectrum_summary", "recalibrated", "measure_spectra", "SpectraTracker", "SUMMARY_COLUMNS"]

#: The columns :func:`spectrum_summary` adds per unit and example (besides the unit's own).
SUMMARY_COLUMNS = ["n_values", "dev", "mean_log", "within", "q05", "q25", "q50", "q75", "q95", "min", "max"]


def spectrum_summary(spectra, band: float = 0.1, floor: float = 1e-4):
    """One row per unit and example: how the singular values of its Jacobian sit around 1.

    Parameters
    ----------
    spectra : DataFrame
        What :func:`unravel.jacobian_spectra` returns (columns ``unit``, ``name``, ``kind``,
        ``projection``, ``example``, ``singular_value``; any other column that is constant within
        a unit and example, an ``epoch`` say, is kept).
    band : float
        Half-width of the band ``|log sigma| <= band`` that ``within`` counts.
    floor : float
        Singular values below ``floor`` count as ``floor`` in ``dev`` and ``mean_log``: a unit
        that shrinks a direction 10,000-fold (the default) has lost it as surely as one that zeroes
        it, and float32 Jacobians cannot tell values much smaller from rounding noise. It keeps
        ``dev`` finite where more than half of the values are (numerically) zero, as in plain
        units behind a ReLU; such a ``dev`` near ``-log(floor)`` means "zero", not a size.

    Returns
    -------
    DataFrame
        The unit's columns, ``example``, and: ``n_values`` (how many singular values), ``dev`` (the
        median of ``|log sigma|``: 0 when the typical value is 1, 0.1 when it is off by about 10%),
        ``mean_log`` (the mean of ``log sigma``: below 0 the unit shrinks, above 0 it stretches),
        ``within`` (the share of values within the band), the quantiles ``q05`` to ``q95`` and
        ``min``, ``max`` of ``sigma`` (the quantiles without the floor).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.jacobian.spectra import spectrum_summary
    >>> f = pd.DataFrame({"unit": 0, "name": "u", "kind": "residual", "projection": False, "example": 0,
    ...                   "rank": range(4), "singular_value": [2.0, 1.05, 1.0, 0.5]})
    >>> row = spectrum_summary(f).iloc[0]
    >>> round(float(row.dev), 4), float(row.within), int(row.n_values)
    (0.371, 0.5, 4)
    """
    import pandas as pd

    required = ["unit", "example", "singular_value"]
    missing = [c for c in required if c not in spectra.columns]
    if missing:
        raise ArgumentError(f"spectrum_summary needs the frame of jacobian_spectra (columns {required}); "
                            f"missing {missing}.")
    if not band > 0:
        raise ArgumentError(f"band={band!r} must be a positive number (a half-width in log units).")
    if not 0 < floor < 1:
        raise ArgumentError(f"floor={floor!r} must lie in (0, 1): singular values below it count as it.")
    keys = [c for c in spectra.columns if c not in ("rank", "singular_value")]
    rows = []
    for key, g in spectra.groupby(keys, sort=False):
        s = g.singular_value.to_numpy(np.float64)
        log = np.log(np.maximum(s, floor))
        q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append((*key, len(s), float(np.median(np.abs(log))), float(np.mean(log)),
                     float(np.mean(np.abs(log) <= band)), *q.tolist(), float(s.min()), float(s.max())))
    return pd.DataFrame(rows, columns=keys + SUMMARY_COLUMNS)


def recalibrated(model: nn.Module, inputs, batch_size: int = 512) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are those of ``inputs``.

    Each BatchNorm layer's statistics are reset and averaged (with equal weight per batch of
    ``batch_size``) over a no-gradient pass of ``inputs`` (:func:`unravel.lesion.recalibrate_bn`:
    BatchNorm in train mode, every other module in eval mode): in eval mode the copy then
    normalises as training did at these weights, not with statistics left from earlier weights
    (or, before training, with the initial mean 0 and variance 1, where BatchNorm is the
    identity). ``model`` itself is not changed.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.preact_resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> x = 3 + 2 * torch.randn(256, 1, 16)
    >>> copy = unravel.jacobian.spectra.recalibrated(net, x)
    >>> first, first_copy = net.stage1[0].residual[0], copy.stage1[0].residual[0]  # the BN the stem feeds
    >>> float(first.running_mean.abs().max())  # the model's own: untouched
    0.0
    >>> torch.allclose(first_copy.running_mean, net.stem(x).mean((0, 2)), atol=1e-5)
    True
    """
    from ..lesion import recalibrate_bn

    batch_size = check_int("batch_size", batch_size, 1)
    if not torch.is_tensor(inputs) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ArgumentError("recalibrated needs a non-empty batch of inputs (a tensor).")
    copied = copy.deepcopy(model)
    recalibrate_bn(copied, (inputs,), batch_size=batch_size)  # one implementation of the recalibration
    return copied.eval()


def measure_spectra(model: nn.Module, inputs, *, calibration=None, units=None, band: float = 0.1,
                    return_spectra: bool = False, **kwargs):
    """:func:`spectrum_summary` of :func:`unravel.jacobian_spectra` at ``inputs``, on a copy of
    ``model`` recalibrated on ``calibration`` (:func:`recalibrated`; None: the model as it is).

    ``kwargs`` go to :func:`unravel.jacobian_spectra` (``chunk_size``, ``top``, ...). Returns the
    summary frame, or with ``return_spectra`` the pair ``(summary, every singular value)``.

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> net = unravel.models.preact_resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> x = torch.randn(64, 1, 16)
    >>> summary = unravel.jacobian.spectra.measure_spectra(net, x[:2], calibration=x, units=[0, 1])
    >>> summary[["unit", "example", "n_values"]].values.tolist()
    [[0, 0, 64], [0, 1, 64], [1, 0, 64], [1, 1, 64]]
    """
    net = model if calibration is None else recalibrated(model, calibration)
    full = jacobian_spectra(net, inputs, units=units, **kwargs)
    full.attrs = {}
    summary = spectrum_summary(full, band=band)
    return (summary, full) if return_spectra else summary


class SpectraTracker(Callback):
    """Per-unit Jacobian spectra when training begins and after every epoch (:func:`measure_spectra`).

    Parameters
    ----------
    inputs : tensor
        The probe examples whose spectra are measured.
    calibration : tensor, optional
        Training examples that set the BatchNorm statistics of the copy measured at each record
        (see :func:`recalibrated`); None measures the model with its own running statistics.
    units : optional
        The units to measure (as in :func:`unravel.jacobian_spectra`); default all.
    band : float
        As in :func:`spectrum_summary`.
    keep : bool
        Keep every singular value (``spectra()``), not only the summaries.
    **kwargs
        More keywords for :func:`unravel.jacobian_spectra`.

    Notes
    -----
    Measuring works on a copy, so training is not changed by it (the same weights, the same
    random numbers). Put it after callbacks that change the weights at the end of a step or when
    training begins (:class:`unravel.procrustes.ProcrustesCallback`), so that it sees their result.

    Examples
    --------
    >>> import torch, unravel
    >>> data = unravel.data.synthetic(80, input_shape=(1, 8), num_classes=2)
    >>> net = unravel.models.preact_resnet_cifar(8, width=2, num_classes=2, in_channels=1, dims=1)
    >>> x, _ = data.batch(2)
    >>> tracker = unravel.jacobian.spectra.SpectraTracker(x, calibration=x, units=[0])
    >>> _ = unravel.train.fit(net, data, epochs=2, batch_size=32, progress=False, callbacks=[tracker])
    >>> tracker.to_frame().groupby("epoch").size().tolist()  # 1 unit x 2 examples, at epochs 0, 1, 2
    [2, 2, 2]
    """

    def __init__(self, inputs, *, calibration=None, units=None, band: float = 0.1, keep: bool = False, **kwargs):
        if not torch.is_tensor(inputs) or inputs.dim() == 0 or inputs.shape[0] == 0:
            raise ArgumentError("SpectraTracker needs a non-empty batch of probe inputs (a tensor).")
        if calibration is not None and not torch.is_tensor(calibration):
            raise ArgumentError(f"calibration must be a tensor of training inputs or None; got "
                                f"{type(calibration).__name__}.")
        if not isinstance(keep, bool):
            raise ArgumentError(f"keep={keep!r} must be True or False.")
        self.inputs, self.calibration, self.units, self.band, self.keep = inputs, calibration, units, band, keep
        self.kwargs = kwargs
        self.epoch = 0
        self.records: list = []
        self.full: list = []

    def record(self, model: nn.Module, epoch: int) -> None:
        """Measure ``model`` now and store it as ``epoch``."""
        x = as_tuple(self.inputs)[0].to(model_device(model))
        calib = None if self.calibration is None else self.calibration.to(x.device)
        summary, full = measure_spectra(model, x, calibration=calib, units=self.units, band=self.band,
                                        return_spectra=True, **self.kwargs)
        self.records.append(summary.assign(epoch=epoch))
        if self.keep:
            self.full.append(full.assign(epoch=epoch))

    def on_train_begin(self, model):
        self.epoch = 0
        self.record(model, 0)

    def on_epoch_end(self, model, metrics):
        self.epoch = int(metrics.get("epoch", self.epoch + 1))
        self.record(model, self.epoch)

    def to_frame(self):
        """The summaries (:func:`spectrum_summary`) of every record, with an ``epoch`` column."""
        import pandas as pd

        return pd.concat(self.records, ignore_index=True) if self.records else pd.DataFrame()

    def spectra(self):
        """Every singular value of every record (with ``keep=True``), with an ``epoch`` column."""
        import pandas as pd

        if not self.keep:
            raise ArgumentError("SpectraTracker(keep=False) kept only the summaries; pass keep=True to keep "
                                "every singular value.")
        return pd.concat(self.full, ignore_index=True) if self.full else pd.DataFrame()
