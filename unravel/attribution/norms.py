"""Norm preservation: how the gradient's norm changes across each unit (Zaeemzadeh et al. 2021).

One backward pass through the recorded local graphs, unit by unit; inside a lesion, the lesioned
network's. It measures the ratio of norms of one batch's gradient, not the singular values of the
units' Jacobians.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._utils import check_choice
from ..adapters.wrappers import as_module
from ..units import find_units
from ._record import MODES, analysis_mode, builtin_loss, prepare, record

__all__ = ["norm_ratios"]


def norm_ratios(model: nn.Module, inputs, targets=None, *, loss: Callable | str | None = None, mode: str = "eval"):
    """Per unit, ``||dL/dx_l|| / ||dL/dx_{l+1}||``: the norm-preservation measure [1]_.

    Returns a tidy frame: unit (position in the order the units ran), index (that unit's index in
    :func:`unravel.find_units`), name (the unit that ran there), projection, kind,
    deleted (inside a lesion: the unit's residual branch was removed), grad_in (``||dL/dx_l||``), grad_out
    (``||dL/dx_{l+1}||``), ratio. Ratios near 1 mean the backward signal keeps its norm.
    ``loss`` as in :func:`path_length_gradients` (a callable, or ``"next_token"``).

    Examples
    --------
    >>> import torch, unravel
    >>> frame = unravel.attribution.norm_ratios(unravel.models.resmlp(8, 3, width=8, depth=3), torch.randn(4, 8))
    >>> frame.columns.tolist()
    ['unit', 'index', 'name', 'projection', 'kind', 'deleted', 'grad_in', 'grad_out', 'ratio']

    References
    ----------
    .. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
       Become Extremely Deep?" IEEE TPAMI 43(11), 2021.
    """
    import pandas as pd

    model = as_module(model)  # an nnsight wrapper: the model inside
    check_choice("mode", mode, MODES)
    loss, targets = builtin_loss(loss, inputs, targets)
    inputs, loss_fn = prepare(model, inputs, targets, loss)
    units = find_units(model)
    with analysis_mode(model, mode):
        records, _, L = record(model, units, inputs, targets, loss_fn)
        # backpropagate once through the recorded local graphs, unit by unit
        g, = torch.autograd.grad(L, records[-1].y_out, retain_graph=True)
        rows = []
        for l in range(len(units) - 1, -1, -1):
            rec = records[l]
            gz = g if rec.y is rec.zl else torch.autograd.grad(rec.y, rec.zl, g, retain_graph=True)[0]
            gx, = torch.autograd.grad(rec.z, rec.x, gz, retain_graph=True)
            u = rec.unit
            rows.append(dict(unit=l, index=u.index, name=u.name, projection=u.projection, kind=u.kind, deleted=u.deleted,
                             grad_in=float(gx.norm()), grad_out=float(g.norm())))
            g = gx
            if l > 0:
                prev = records[l - 1]
                if rec.x_in is not prev.y_out:
                    g, = torch.autograd.grad(rec.x_in, prev.y_out, g, retain_graph=True)
    frame = pd.DataFrame(rows[::-1])
    frame["ratio"] = frame.grad_in / frame.grad_out
    return frame

