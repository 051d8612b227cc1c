"""Interventions: run a model with some residual units deleted, moved, or computed by a function
of yours, and exactly as before on exit. Lesions, sweeps, attribution and the tracker are all
built on :func:`intervene`.

While an intervention is active, every block holding units runs through its adapter's ``route``,
one unit at a time. Interventions on one model compose by one rule: **an inner computation sees
the network that the outer lesions produced** -- a ``compute`` function receives, at each
position, the unit that the active placements put there, as a deleted view
(:meth:`~unravel.ResidualUnit.as_deleted`) when an active deletion removed it. Deletions name
units, not positions: a deleted unit stays deleted wherever a reorder moves it. Two ``compute``
functions cannot both be active on one model (the outer would silently see nothing); entering the
second raises :class:`~unravel.errors.InterventionError`. This module does not check that
adapters describe their blocks (``find_units(model, example_inputs=...)`` does).

How a block is routed: for the duration, the block's class is swapped for a generated subclass
whose ``forward`` routes (the module's ``__dict__``, parameters, buffers and flags are never
touched, except that a block wrapped by accelerate's device hook or by nnsight is made to call the
routed forward, :mod:`unravel.adapters.wrappers`); on exit the class, and the wrapper, are put back. A ``copy.deepcopy`` or a pickle of a model taken inside
an intervention holds the original classes, so the copy computes the unchanged network. Host
state lives in a weak dictionary behind a lock, so two threads entering interventions on one
model cannot leave a block routed.
"""

from __future__ import annotations

import contextlib
import copyreg
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .adapters import adapter_for, original_class
from .adapters.wrappers import as_module, rebind_body
from .errors import ArgumentError, ArgumentTypeError, InterventionError
from .units import ResidualUnit, find_units, host_modules, resolve_units

__all__ = ["intervene", "Intervention", "active_interventions"]


class Intervention:
    """What one :func:`intervene` context changes: deleted units, a placement, a computation.

    Parameters
    ----------
    deleted : iterable of ResidualUnit
        Units whose residual branch is removed (they compute ``post(shortcut(x))``).
    placement : mapping of ResidualUnit -> ResidualUnit
        Position (named by the unit found there) -> the unit that runs there instead.
    compute : callable, optional
        ``compute(unit, x, position=position_unit, **unit_kwargs) -> output``: replaces the
        computation of every unit. ``unit`` is what the lesions put at this position (a deleted
        view where deleted); ``position`` is the unit :func:`unravel.find_units` reports there.

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resmlp(4, 2, width=4, depth=3)
    >>> units = unravel.find_units(net)
    >>> Intervention(deleted=[units[1]])
    Intervention(deleted=['blocks.1'], placement={}, compute=None)
    """

    def __init__(self, deleted=(), placement: Mapping | None = None, compute: Callable | None = None):
        self.deleted = frozenset(u.key for u in deleted)
        self._deleted_names = [u.name for u in deleted]
        self.placement = {p.key: q for p, q in (placement or {}).items()}
        self._placement_names = {p.name: q.name for p, q in (placement or {}).items()}
        if compute is not None and not callable(compute):
            raise ArgumentTypeError(f"compute must be callable, got {type(compute).__name__}.")
        self.compute = compute

    def __repr__(self):
        name = getattr(self.compute, "__qualname__", None) if self.compute is not None else None
        return (f"Intervention(deleted={self._deleted_names}, placement={self._placement_names}, "
                f"compute={name})")


class _Host:
    """The routing of one block while interventions are active on it."""

    def __init__(self, module: nn.Module, units: list[ResidualUnit]):
        self.module = module
        self.units = {u.position: u for u in units}
        self.adapter = adapter_for(module)
        self.layers: list[Intervention] = []
        self.cls = type(module)

    def forward(self, *args, **kwargs):
        return self.adapter.route(self.module, self._call_unit, *args, **kwargs)

    def _call_unit(self, position, x, **kwargs):
        here = unit = self.units[position]
        layers = tuple(self.layers)
        # placements compose from the innermost intervention outwards (an inner reorder acts on
        # the network that the outer ones produced); deletions follow the unit they name
        for layer in reversed(layers):
            unit = layer.placement.get(unit.key, unit)
        if any(unit.key in layer.deleted for layer in layers):
            unit = unit.as_deleted()
        for layer in reversed(layers):
            if layer.compute is not None:
                return layer.compute(unit, x, position=here, **kwargs)
        try:
            return unit.forward(x, **kwargs)
        except RuntimeError as e:
            if unit.key == here.key:
                raise
            raise ArgumentError(f"unit {unit.index} ({unit.name}) cannot run at position {here.index} "
                                f"({here.name}), whose input has shape {tuple(x.shape)}: "
                                f"{str(e).splitlines()[0]}") from None


_HOSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ROUTED_CLASSES: dict[type, type] = {}
_LOCK = threading.RLock()


def _new_module(cls: type):
    """Reconstruct an object of ``cls`` without calling ``__init__`` (copies and pickles of a
    routed block are made as its original class)."""
    return cls.__new__(cls)


def _routed_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward routes through the block's host, and which copies,
    deep-copies and pickles as ``cls`` (so nothing routed outlives its context)."""
    routed = _ROUTED_CLASSES.get(cls)
    if routed is not None:
        return routed

    def forward(self, *args, **kwargs):
        host = _HOSTS.get(self)
        if host is None:  # a module whose class was swapped back mid-call
            return cls.forward(self, *args, **kwargs)
        return host.forward(*args, **kwargs)

    def __reduce_ex__(self, protocol):
        rv = cls.__reduce_ex__(self, protocol)
        if isinstance(rv, tuple) and rv and rv[0] in (copyreg.__newobj__, copyreg.__newobj_ex__,
                                                      copyreg._reconstructor):
            # rebuild as the original class (pickle insists that __newobj__ gets type(self))
            rv = (_new_module, (cls,)) + tuple(rv[2:])
        return rv

    routed = type(cls.__name__, (cls,), {"forward": forward, "__reduce_ex__": __reduce_ex__,
                                         "_unravel_original": cls, "__module__": cls.__module__,
                                         "__qualname__": cls.__qualname__})
    _ROUTED_CLASSES[cls] = routed
    return routed


def _enter(module: nn.Module, units: list[ResidualUnit], layer: Intervention) -> _Host:
    with _LOCK:
        host = _HOSTS.get(module)
        if host is None:
            host = _Host(module, units)
            module.__class__ = routed = _routed_class(original_class(module))
            # a device hook or nnsight's wrapper calls the class's own forward: make it call the routed one
            host.restore = rebind_body(module, routed.forward, host.cls)
            _HOSTS[module] = host
        if layer.compute is not None and any(other.compute is not None for other in host.layers):
            raise InterventionError(
                "a computing intervention (attribution, a lesion sweep, unit_shapes, or compute=...) is "
                f"already active on {type(module).__name__}; another cannot run inside it, since the outer "
                "one would not see it. Run it outside, or on a copy.deepcopy of the model.")
        host.layers.append(layer)
        return host


def _leave(host: _Host, layer: Intervention) -> None:
    with _LOCK:
        # remove this layer (not merely the last): exits are LIFO, but be safe
        for i in range(len(host.layers) - 1, -1, -1):
            if host.layers[i] is layer:
                del host.layers[i]
                break
        if not host.layers:
            host.restore()
            host.module.__class__ = host.cls
            _HOSTS.pop(host.module, None)


@contextlib.contextmanager
def _route(units: list[ResidualUnit], layer: Intervention) -> Iterator[None]:
    hosts: list[_Host] = []
    try:
        for module, us in host_modules(units).items():
            hosts.append(_enter(module, us, layer))
        yield
    finally:
        for host in hosts:
            _leave(host, layer)


def _resolve(units, spec, what):
    try:
        return resolve_units(units, spec)
    except ArgumentError as e:
        raise ArgumentError(f"{what}: {e}") from None


def _one(units, spec, what):
    """The one unit ``spec`` names (an index, a name or a ResidualUnit; not a list of them)."""
    if isinstance(spec, (list, tuple, set, frozenset, dict)) or spec is None or (torch.is_tensor(spec) and spec.dim()):
        raise ArgumentError(f"{what}: {spec!r} is not one unit; give one unit index, name or ResidualUnit.")
    return _resolve(units, spec, what)[0]


@contextlib.contextmanager
def intervene(model: nn.Module, *, delete: Any = (), place: Mapping | None = None,
              compute: Callable | None = None) -> Iterator[nn.Module]:
    """Run ``model`` with units deleted, moved, or computed by ``compute`` while inside.

    Parameters
    ----------
    model : nn.Module
    delete : int, str, ResidualUnit or iterable of them
        Units whose residual branch is removed: ``post(shortcut(x))`` runs in their place.
    place : mapping, optional
        Position -> unit that runs there (each named by index, name or ResidualUnit). No checks
        of shapes or shortcuts: :func:`unravel.lesion.reorder` is the checked form.
    compute : callable, optional
        ``compute(unit, x, position=position_unit, **unit_kwargs)`` computes every unit: ``unit``
        is what the active lesions put at this position (a deleted view,
        ``unit.deleted == True``, where one removed it), ``position`` the unit found there.

    Yields
    ------
    nn.Module
        The model itself.

    Raises
    ------
    ArgumentError
        For units that are not the model's.
    InterventionError
        When ``compute`` is given while another computing intervention is active on the model.

    Notes
    -----
    Interventions nest; an inner ``compute`` sees the network the outer lesions produced (see the
    module docstring). On exit, also through an exception, the model is exactly as before: same
    classes, modules, ``state_dict`` bits and flags.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(4, 2, width=4, depth=3).eval()
    >>> seen = []
    >>> def record(unit, x, position, **kw):
    ...     seen.append((position.name, unit.deleted))
    ...     return unit.forward(x, **kw)
    >>> with unravel.intervene(net, delete=[1]), unravel.intervene(net, compute=record):
    ...     _ = net(torch.randn(2, 4))
    >>> seen
    [('blocks.0', False), ('blocks.1', True), ('blocks.2', False)]
    """
    if not isinstance(as_module(model), nn.Module):
        raise ArgumentTypeError(f"intervene() takes a torch.nn.Module, got {type(model).__name__}.")
    units = find_units(as_module(model))
    deleted = _resolve(units, delete, "delete") if delete is not None else []
    placement = {}
    if place is not None:
        if not isinstance(place, Mapping):
            raise ArgumentTypeError(f"place must be a mapping position -> unit, got {type(place).__name__}.")
        for p, q in place.items():
            placement[_one(units, p, "place (a position)")] = _one(units, q, f"place[{p!r}] (the unit run there)")
    with _route(units, Intervention(deleted, placement, compute)):
        yield model


def active_interventions(model_or_units) -> int:
    """How many interventions are active on the blocks of a model (or of a list of its units).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resmlp(4, 2, width=4, depth=2)
    >>> with unravel.lesion.delete(net, 0):
    ...     unravel.active_interventions(net)
    1
    >>> unravel.active_interventions(net)
    0
    """
    units = find_units(model_or_units) if isinstance(model_or_units, nn.Module) else list(model_or_units)
    with _LOCK:
        return max((len(_HOSTS[m].layers) for m in host_modules(units) if m in _HOSTS), default=0)
