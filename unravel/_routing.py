"""Routing a model's blocks through their units, so that single units can be changed or recorded.

While a route is active, each block holding units gets an instance attribute ``forward`` that
reruns the block through its adapter's ``route``; leaving removes it again, so the model's
modules, parameters, buffers and flags are never touched. Private: lesions and attribution use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from .units import ResidualUnit, adapter_of, host_modules

_MISSING = object()


def unit_key(unit: ResidualUnit) -> tuple[int, int]:
    """Identity of a unit across separate ``find_units`` calls on the same model."""
    return id(unit.module), unit.position


class Layer:
    """One active lesion on a set of hosts. ``placement`` maps a unit key to the unit run in its
    place; ``deleted`` holds keys of units whose residual branch is removed; ``compute``, when
    set, replaces the whole computation of a resolved unit (used by the sweep engine and by
    attribution)."""

    def __init__(self, placement=None, deleted=(), compute: Callable | None = None):
        self.placement: dict = dict(placement or {})
        self.deleted = frozenset(deleted)
        self.compute = compute


class _Host:
    def __init__(self, module, units: list[ResidualUnit]):
        self.module = module
        self.units = {u.position: u for u in units}
        self.adapter = adapter_of(module)
        self.layers: list[Layer] = []
        self.saved = module.__dict__.get("forward", _MISSING)
        module.forward = self.forward

    def forward(self, *args, **kwargs):
        return self.adapter.route(self.module, self._call_unit, *args, **kwargs)

    def _call_unit(self, position, x, **kwargs):
        here = unit = self.units[position]
        # placements compose from the innermost lesion outwards (inner reorders act on the
        # network that the outer ones produced)
        for layer in reversed(self.layers):
            unit = layer.placement.get(unit_key(unit), unit)
        for layer in reversed(self.layers):
            if layer.compute is not None:
                return layer.compute(unit, x, position_unit=here, **kwargs)
        key = unit_key(unit)
        try:
            if any(key in layer.deleted for layer in self.layers):
                return unit.bypass(x)
            return unit.forward(x, **kwargs)
        except RuntimeError as e:
            if unit is here:
                raise
            raise ValueError(f"unit {unit.index} ({unit.name}) cannot run at position {here.index} "
                             f"({here.name}), whose input has shape {tuple(x.shape)}: "
                             f"{str(e).splitlines()[0]}") from None

    def remove(self):
        if self.saved is _MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self.saved


_HOSTS: dict[int, _Host] = {}


def active_layers(units: Sequence[ResidualUnit]) -> int:
    """How many lesions are active on the hosts of ``units``."""
    return sum(len(_HOSTS[id(m)].layers) for m in host_modules(units) if id(m) in _HOSTS)


@contextlib.contextmanager
def route(units: Sequence[ResidualUnit], layer: Layer):
    """Activate ``layer`` on every block holding ``units`` (all the model's units) while inside."""
    hosts = []
    try:
        for module, us in host_modules(units).items():
            host = _HOSTS.get(id(module))
            if host is None:
                host = _HOSTS[id(module)] = _Host(module, us)
            host.layers.append(layer)
            hosts.append(host)
        yield
    finally:
        for host in hosts:
            # remove this layer (not merely the last): exits are LIFO, but be safe
            for i in range(len(host.layers) - 1, -1, -1):
                if host.layers[i] is layer:
                    del host.layers[i]
                    break
            if not host.layers:
                host.remove()
                _HOSTS.pop(id(host.module), None)
