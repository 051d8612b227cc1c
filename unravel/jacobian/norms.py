"""Norm preservation as Zaeemzadeh, Rahnavard & Shah measure it: per unit the smallest and the
largest singular value of its input-output Jacobian and the share of its singular values within
``[1 - delta, 1 + delta]`` (:func:`band_summary`, :func:`measure_norm_preservation`), and the
ratio of the gradient's norm at a unit's input to its norm at the unit's output on a batch
(:func:`gradient_norm_ratios`). A unit is norm-preserving (their Definition) when every singular
value lies in ``[1 - delta, 1 + delta]``; then the backward pass keeps the gradient's norm within
that factor. Nothing here checks that the probe examples are representative.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import as_tuple, eval_mode
from ..errors import ArgumentError, ArgumentTypeError
from ..interventions import intervene
from ..units import find_units
from .api import jacobian_spectra
from .spectra import recalibrated

__all__ = ["band_summary", "measure_norm_preservation", "gradient_norm_ratios", "BAND_COLUMNS", "RATIO_COLUMNS"]

#: The columns :func:`band_summary` adds per unit and example.
BAND_COLUMNS = ["n_values", "s_min", "s_max", "within_band"]
#: The columns :func:`gradient_norm_ratios` gives per unit and example.
RATIO_COLUMNS = ["unit", "name", "kind", "projection", "example", "grad_in", "grad_out", "ratio"]


def _delta(delta):
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise ArgumentError(f"delta={delta!r} must lie in (0, 1): the band is [1 - delta, 1 + delta].")
    return float(delta)


def band_summary(spectra, delta: float = 0.1):
    """One row per unit and example: the extreme singular values of its Jacobian and the share
    within ``[1 - delta, 1 + delta]``.

    Parameters
    ----------
    spectra : DataFrame
        What :func:`unravel.jacobian_spectra` returns, every singular value (``method="exact"``;
        with ``top``/``bottom`` only, ``within_band`` is the share of those measured).
    delta : float
        The band's half-width, in (0, 1).

    Returns
    -------
    DataFrame
        The unit's columns (``unit``, ``name``, ``kind``, ``projection`` and any other column
        constant within a unit and example), ``example``, and ``n_values``, ``s_min``, ``s_max``,
        ``within_band`` (the share of the singular values in the band: 1 for a norm-preserving
        unit, where ``1 - delta <= s_min`` and ``s_max <= 1 + delta``).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.jacobian import band_summary
    >>> f = pd.DataFrame({"unit": 0, "name": "u", "kind": "residual", "projection": False, "example": 0,
    ...                   "rank": range(4), "singular_value": [1.2, 1.05, 1.0, 0.5]})
    >>> band_summary(f, delta=0.1)[["s_min", "s_max", "within_band"]].values.tolist()
    [[0.5, 1.2, 0.5]]
    """
    import pandas as pd

    delta = _delta(delta)
    missing = [c for c in ("unit", "example", "singular_value") if c not in spectra.columns]
    if missing:
        raise ArgumentError(f"band_summary needs the frame of jacobian_spectra; missing columns {missing}.")
    keys = [c for c in spectra.columns if c not in ("rank", "singular_value")]
    rows = []
    for key, g in spectra.groupby(keys, sort=False):
        s = g.singular_value.to_numpy(np.float64)
        inside = (s >= 1 - delta) & (s <= 1 + delta)
        rows.append((*key, len(s), float(s.min()), float(s.max()), float(inside.mean())))
    return pd.DataFrame(rows, columns=keys + BAND_COLUMNS)


def measure_norm_preservation(model: nn.Module, inputs, *, delta: float = 0.1, calibration=None, units=None,
                              return_spectra: bool = False, **kwargs):
    """:func:`band_summary` of every singular value of each unit's Jacobian at ``inputs``
    (:func:`unravel.jacobian_spectra`, exact), on a copy of ``model`` recalibrated on
    ``calibration`` (:func:`~unravel.jacobian.spectra.recalibrated`; None: the model as it is).

    ``kwargs`` go to :func:`unravel.jacobian_spectra` (``chunk_size``, ``batch_size``, ...).
    Returns the summary, or with ``return_spectra`` the pair ``(summary, every singular value)``
    (which :func:`~unravel.jacobian.spectra.spectrum_summary` also reads).

    Examples
    --------
    >>> import torch, unravel
    >>> from torch import nn
    >>> net = unravel.models.resmlp(4, 2, width=4, depth=2).eval()
    >>> for block in net.blocks:  # zero residual branches: every unit is the identity
    ...     _ = nn.init.zeros_(block.residual[-1].weight), nn.init.zeros_(block.residual[-1].bias)
    >>> s = unravel.jacobian.measure_norm_preservation(net, torch.randn(3, 4))
    >>> s[["s_min", "s_max", "within_band"]].drop_duplicates().values.tolist()
    [[1.0, 1.0, 1.0]]
    """
    delta = _delta(delta)
    net = model if calibration is None else recalibrated(model, calibration)
    full = jacobian_spectra(net, inputs, units=units, method="exact", **kwargs)
    full.attrs = {}
    summary = band_summary(full, delta)
    return (summary, full) if return_spectra else summary


def _cross_entropy_sum(outputs, targets):
    return F.cross_entropy(outputs, targets, reduction="sum")


def gradient_norm_ratios(model: nn.Module, inputs, targets, *, loss=None, units=None):
    """Per unit and example, ``||dL/dx_in|| / ||dL/dx_out||``: how the unit scales the gradient
    of the loss on its way back (1: norm-preserving), on one batch.

    ``x_in`` is the unit's input and ``x_out`` its output in one eval-mode forward pass of
    ``model`` (BatchNorm with its running statistics, so each example's gradients are its own;
    every ``training`` flag is restored, parameters' ``.grad`` are not touched). ``dL/dx_in`` is
    the gradient through the unit, ``J^T dL/dx_out`` with ``J`` the unit's Jacobian at that
    example (in a chain of units, the whole gradient at ``x_in``), so the ratio lies between the
    smallest and the largest singular value of ``J``.

    Parameters
    ----------
    model : nn.Module
        Any model :func:`unravel.find_units` supports.
    inputs : tensor or tuple of tensors
        One batch (the first dimension of each unit's input is its batch dimension).
    targets : tensor
        What ``loss`` compares the model's outputs with.
    loss : callable, optional
        ``loss(outputs, targets) -> scalar``; default the cross-entropy summed over the batch
        (each example's gradients then do not depend on the batch size; the ratios never do).
    units : optional
        The units to report (indices, names or units); default all.

    Returns
    -------
    DataFrame
        One row per unit and example: ``unit``, ``name``, ``kind``, ``projection``, ``example``,
        ``grad_in`` and ``grad_out`` (the norms, each example's slice of the gradient flattened)
        and ``ratio``. The ratio over the whole batch is ``sqrt(sum grad_in^2) / sqrt(sum grad_out^2)``.

    Examples
    --------
    >>> import torch, unravel
    >>> from torch import nn
    >>> net = unravel.models.resmlp(4, 3, width=4, depth=2)
    >>> for block in net.blocks:  # zero residual branches: every unit passes the gradient unchanged
    ...     _ = nn.init.zeros_(block.residual[-1].weight), nn.init.zeros_(block.residual[-1].bias)
    >>> r = unravel.jacobian.gradient_norm_ratios(net, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> r.ratio.round(6).unique().tolist()
    [1.0]
    """
    import pandas as pd

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"gradient_norm_ratios expects a torch.nn.Module, got {type(model).__name__}.")
    inputs = as_tuple(inputs)
    if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].dim() == 0 or inputs[0].shape[0] == 0:
        raise ArgumentError("inputs must be a non-empty batch (a tensor or a tuple of tensors).")
    if not torch.is_tensor(targets) or targets.shape[:1] != inputs[0].shape[:1]:
        raise ArgumentError(f"targets must be a tensor with one entry per example ({inputs[0].shape[0]}).")
    loss = _cross_entropy_sum if loss is None else loss
    if not callable(loss):
        raise ArgumentTypeError(f"loss must be callable (outputs, targets) -> scalar, got {type(loss).__name__}.")
    all_units = find_units(model)
    if units is None:
        chosen = list(all_units)
    else:
        from ..units import resolve_units

        chosen = sorted(resolve_units(all_units, units), key=lambda u: u.index)
    wanted = {u.index for u in chosen}
    seen: dict = {}

    def compute(unit, x, position, **kw):
        if position.index not in wanted:
            return unit.forward(x, **kw)
        if position.index in seen:
            raise ArgumentError(f"unit {position.index} ({position.name}) ran twice in one forward pass: its "
                                "input and output are not one pair of tensors.")
        x_in = x.detach().clone().requires_grad_(True)
        # the rest of the network reads x: the gradient reaches x_in only through this unit
        y = unit.forward(x_in + (x - x.detach()), **kw)
        seen[position.index] = (x_in, y)
        return y.clone()  # later in-place changes do not touch y

    with eval_mode(model), torch.enable_grad():
        leaves = tuple(t.detach().requires_grad_(t.is_floating_point()) if torch.is_tensor(t) else t for t in inputs)
        with intervene(model, compute=compute):
            value = loss(model(*leaves), targets)
        missing = [f"{u.index} ({u.name})" for u in chosen if u.index not in seen]
        if missing:
            raise ArgumentError(f"units {', '.join(missing)} did not run in the forward pass on these inputs.")
        if not torch.is_tensor(value) or value.numel() != 1:
            raise ArgumentError("loss must return a scalar tensor.")
        tensors = [t for u in chosen for t in seen[u.index]]
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
    rows = []
    for i, u in enumerate(chosen):
        g_in, g_out = grads[2 * i], grads[2 * i + 1]
        x_in, y = seen[u.index]
        g_in = torch.zeros_like(x_in) if g_in is None else g_in
        g_out = torch.zeros_like(y) if g_out is None else g_out
        n_in = g_in.detach().flatten(1).double().norm(dim=1).cpu().numpy()
        n_out = g_out.detach().flatten(1).double().norm(dim=1).cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = n_in / n_out
        for e in range(len(n_in)):
            rows.append((u.index, u.name, u.kind, u.projection, e, float(n_in[e]), float(n_out[e]), float(ratio[e])))
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)
