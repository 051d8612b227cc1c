"""Recording what reached each unit (its input and the keyword arguments its block passed) in
one forward pass through :func:`unravel.intervene`, stopping once every requested unit ran. It
does not check that a unit acts on each example separately (:mod:`~unravel.jacobian.operator`
does).
"""

from __future__ import annotations

import torch

from ..errors import ArgumentError
from ..interventions import intervene

__all__: list = []


class _Stop(Exception):
    """Raised inside the recording pass once every requested unit has run (skips the rest)."""


class _Recorded:
    """What reached one unit: its input and the keyword arguments its block passed; and its
    output's shape and dtype (the output itself is computed again when needed, so that only the
    inputs of the measured units are kept)."""

    __slots__ = ("position", "unit", "x", "kw", "out_shape", "out_dtype")

    def __init__(self, position, unit, x, kw, y):
        self.position, self.unit, self.x, self.kw = position, unit, x, kw
        self.out_shape, self.out_dtype = tuple(y.shape), y.dtype

    def output(self) -> torch.Tensor:
        with torch.no_grad():
            return self.unit.forward(self.x, **self.kw)


def _record(model, units, inputs) -> dict[int, _Recorded]:
    wanted = {u.index for u in units}
    seen: dict[int, _Recorded] = {}

    def compute(unit, x, position, **kw):
        y = unit.forward(x, **kw)
        p = position.index
        if p in wanted:
            if p in seen:
                raise ArgumentError(f"unit {p} ({position.name}) ran twice in one forward pass; its Jacobian "
                                    "spectrum is not defined by one input (no weight sharing).")
            # a copy: code between units may change a unit's input in place later
            seen[p] = _Recorded(position, unit, x.detach().clone(), kw, y)
            if len(seen) == len(wanted):
                raise _Stop
        return y

    with torch.no_grad(), intervene(model, compute=compute):
        try:
            if isinstance(inputs, dict):
                model(**inputs)
            else:
                model(*inputs)
        except _Stop:
            pass
    missing = [f"{u.index} ({u.name})" for u in units if u.index not in seen]
    if missing:
        raise ArgumentError(f"units {', '.join(missing)} did not run in the forward pass on these inputs; "
                            "cannot measure their Jacobians.")
    return seen
