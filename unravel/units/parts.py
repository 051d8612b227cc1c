"""The parts of a residual unit: :class:`UnitParts` (what an adapter reads from a block) and
:class:`ResidualUnit` (one unit of a model), and naming units (:func:`resolve_units`).

The bottom floor of the package: adapters build on it, and it imports no adapter. It does not
find units (:func:`unravel.find_units` does) nor check that parts describe their block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["UNIT_KINDS", "UnitParts", "ResidualUnit", "is_identity", "inplace", "host_modules", "resolve_units",
           "swappable"]

UNIT_KINDS = ("residual", "plain", "dense")


@dataclasses.dataclass(frozen=True)
class UnitParts:
    """What an adapter says about one unit of a block.

    Parameters
    ----------
    residual : callable
        The residual branch, ``x -> residual(x)``. It may take keyword arguments that the block's
        forward passes on (attention masks, for instance).
    shortcut : callable or None
        The shortcut; ``None`` is the identity.
    post : callable or None
        What is applied after the sum; ``None`` is the identity.
    projection : bool or None
        Whether the shortcut is not the identity. Defaults to ``shortcut is not None``.
    kind : {"residual", "plain", "dense"}
        See the module docstring.
    label : str or None
        The unit's name inside its block, for blocks that hold several units (a transformer layer
        holds ``"attention"`` and ``"feedforward"``). The unit's name is then ``"<module>/<label>"``.
    forward : callable or None
        The module's own computation of the unit where it is cheaper than the sum (a DenseNet
        layer concatenates); it must equal ``post(shortcut(x) + residual(x))``.
    """

    residual: Callable[..., torch.Tensor]
    shortcut: Callable[[torch.Tensor], torch.Tensor] | None = None
    post: Callable[[torch.Tensor], torch.Tensor] | None = None
    projection: bool | None = None
    kind: str = "residual"
    label: str | None = None
    forward: Callable[..., torch.Tensor] | None = None

    def __post_init__(self):
        if self.shortcut is not None and is_identity(self.shortcut):
            object.__setattr__(self, "shortcut", None)  # an nn.Identity shortcut is the identity
        if self.kind not in UNIT_KINDS:
            raise ArgumentError(f"UnitParts kind={self.kind!r} is not one of {UNIT_KINDS}.")
        if not callable(self.residual):
            raise ArgumentTypeError(f"UnitParts residual must be callable, got {type(self.residual).__name__}.")


def is_identity(module) -> bool:
    """Whether ``module`` is ``None`` or an ``nn.Identity`` (a subclass overriding ``forward`` is
    not): adapters and :class:`UnitParts` treat both as the identity."""
    return module is None or (isinstance(module, nn.Identity) and type(module).forward is nn.Identity.forward)


def inplace(fn) -> bool:
    """Whether ``fn`` is a module that writes into its input (a ``ReLU(inplace=True)`` inside):
    the shortcut's output must then be copied before ``post`` runs.

    Examples
    --------
    >>> import torch
    >>> from unravel.units import inplace
    >>> inplace(torch.nn.ReLU(inplace=True)), inplace(torch.relu)
    (True, False)
    """
    return isinstance(fn, nn.Module) and any(getattr(m, "inplace", False) for m in fn.modules())


class ResidualUnit:
    """One residual unit of a model: ``y = post(shortcut(x) + residual(x))``.

    Made by :func:`find_units`; it reads the model and holds no state of its own.

    Attributes
    ----------
    index : int
        Position in forward order, from 0.
    name : str
        Qualified module name (``"layer1.0"``), with ``"/label"`` for blocks holding several
        units (``"layers.0/attention"``).
    module : torch.nn.Module
        The block the unit lives in.
    projection : bool
        True when the shortcut is not the identity.
    kind : str
        ``"residual"``, ``"plain"`` or ``"dense"`` (see :mod:`unravel.units`).

    Examples
    --------
    >>> import torch, unravel
    >>> unit = unravel.find_units(unravel.models.resmlp(4, 3, width=8, depth=2))[1]
    >>> unit.index, unit.name, unit.projection
    (1, 'blocks.1', False)
    >>> x = torch.randn(5, 8)
    >>> torch.equal(unit.forward(x), unit.module(x))
    True
    """

    __slots__ = ("index", "name", "module", "parts", "position", "deleted")

    def __init__(self, index: int, name: str, module: nn.Module, parts: UnitParts, position: int = 0,
                 deleted: bool = False):
        self.index = index
        self.name = name
        self.module = module
        self.parts = parts
        self.position = position  # index of this unit among its module's units
        self.deleted = deleted  # a view of the unit inside a deletion (see as_deleted)

    @property
    def key(self) -> tuple[int, int]:
        """The unit's identity across separate ``find_units`` calls on one model."""
        return id(self.module), self.position

    @property
    def projection(self) -> bool:
        """Whether the shortcut is not the identity (``None`` and ``nn.Identity`` are)."""
        p = self.parts
        if p.projection is not None:
            return bool(p.projection)
        return p.shortcut is not None  # an nn.Identity shortcut became None in UnitParts

    @property
    def kind(self) -> str:
        return self.parts.kind

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut branch (for a plain unit: the bypass used when it is deleted)."""
        return x if self.parts.shortcut is None else self.parts.shortcut(x)

    def residual(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The residual branch."""
        return self.parts.residual(x, **kwargs)

    def post(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the sum (identity for pre-activation units)."""
        return y if self.parts.post is None else self.parts.post(y)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The unit's output, equal to what the module computes for it (its bypass when this is
        the view of a deleted unit)."""
        if self.deleted:
            return self.bypass(x)
        if self.parts.forward is not None:
            return self.parts.forward(x, **kwargs)
        if self.kind == "plain":
            return self.post(self.residual(x, **kwargs))
        return self.post(self.shortcut(x) + self.residual(x, **kwargs))

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        """The unit with its residual branch deleted: ``post(shortcut(x))``. An in-place ``post``
        (``nn.ReLU(inplace=True)``) after an identity shortcut runs on a copy, so the unit's input
        is never overwritten."""
        s = self.shortcut(x)
        if s is x and inplace(self.parts.post):
            s = s.clone()
        return self.post(s)

    def as_deleted(self) -> "ResidualUnit":
        """The same unit as an intervention's computation sees it inside a deletion: ``forward``
        is the bypass and ``deleted`` is True (paths through its residual branch do not exist)."""
        return ResidualUnit(self.index, self.name, self.module, self.parts, self.position, deleted=True)

    __call__ = forward

    def __repr__(self) -> str:
        flags = [self.kind] + (["projection"] if self.projection else []) + (["deleted"] if self.deleted else [])
        return f"ResidualUnit({self.index}, {self.name!r}, {type(self.module).__name__}, {', '.join(flags)})"


def host_modules(units: Iterable[ResidualUnit]) -> dict[nn.Module, list[ResidualUnit]]:
    """Group units by the module (block) holding them, in order: what interventions route.

    Examples
    --------
    >>> import unravel
    >>> from unravel.units import host_modules
    >>> len(host_modules(unravel.find_units(unravel.models.resnet_cifar(8))))
    3
    """
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in units:
        hosts.setdefault(u.module, []).append(u)
    return hosts


def _describe(units: Sequence[ResidualUnit]) -> str:
    names = [u.name for u in units]
    shown = names if len(names) <= 12 else names[:6] + ["..."] + names[-3:]
    return f"{len(units)} units (indices 0..{len(units) - 1}; names {', '.join(shown)})"


def resolve_units(units: Sequence[ResidualUnit], spec: Any) -> list[ResidualUnit]:
    """The units named by ``spec``: an index, a name, a ResidualUnit, or an iterable of them.

    Duplicates are dropped (the order of first appearance is kept).

    Raises
    ------
    ArgumentError
        For an index out of range, an unknown name, a unit of another model, a bool, or anything
        else; the message lists the valid range and names.

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.resmlp(4, 2, width=4, depth=3))
    >>> [u.index for u in resolve_units(units, [2, "blocks.0", 2])]
    [2, 0]
    """
    if isinstance(spec, (int, str, ResidualUnit, np.integer)) or (torch.is_tensor(spec) and spec.dim() == 0):
        spec = [spec]
    try:
        spec = list(spec)
    except TypeError:
        raise ArgumentError(f"cannot name units with {type(spec).__name__} {spec!r}; give unit indices, names "
                            "or ResidualUnits.") from None
    by_name = {u.name: u for u in units}
    by_key = {u.key: u for u in units}
    out: dict[tuple, ResidualUnit] = {}
    for s in spec:
        if (torch.is_tensor(s) and s.dim() == 0 and not s.is_floating_point() and not s.is_complex()
                and s.dtype != torch.bool) or isinstance(s, np.integer):
            s = int(s)
        if isinstance(s, bool):
            raise ArgumentError(f"unit {s!r} is a bool; give unit indices, names or ResidualUnits.")
        if isinstance(s, int):
            if not 0 <= s < len(units):
                raise ArgumentError(f"unit index {s} is out of range: the model has {_describe(units)}.")
            u = units[s]
        elif isinstance(s, str):
            if s not in by_name:
                raise ArgumentError(f"no unit named {s!r}: the model has {_describe(units)}.")
            u = by_name[s]
        elif isinstance(s, ResidualUnit):
            if s.key not in by_key:
                raise ArgumentError(f"{s!r} is not a unit of this model, which has {_describe(units)}.")
            u = by_key[s.key]
        else:
            raise ArgumentError(f"cannot name a unit with {type(s).__name__} {s!r}; give unit indices, names "
                             "or ResidualUnits.")
        out.setdefault(u.key, u)
    return list(out.values())


def swappable(u: ResidualUnit) -> str | None:
    """Why ``u`` may not change places with another unit, or None: only a residual unit with an
    identity shortcut may (Veit et al. reorder such blocks).

    Examples
    --------
    >>> import unravel
    >>> from unravel.units import swappable
    >>> units = unravel.find_units(unravel.models.resnet_cifar(8))
    >>> swappable(units[0]), swappable(units[1])
    (None, 'it has a projection shortcut')
    """
    if u.kind != "residual":
        return f"it is a {u.kind} unit (no identity shortcut)"
    if u.projection:
        return "it has a projection shortcut"
    return None
