"""Residual units: the places where a network adds a residual branch to a shortcut.

Finds the units of a model, in forward order, through adapters (one per block class) that read a
module and never change it. It does not check that a registered adapter describes its block
faithfully: ``tests`` do that for the built-in ones by comparing ``unit.forward`` with the module.

A unit computes ``y = post(shortcut(x) + residual(x))`` [1]_. Three kinds exist:

``"residual"``
    the usual unit; ``shortcut`` is the identity or a projection.
``"plain"``
    a unit of a plain (shortcut-free) network, ``y = post(residual(x))``. Its ``shortcut`` is not
    part of the forward: it is the bypass used when the unit is deleted (the identity, or a
    parameter-free subsample-and-pad where the shape changes), so that lesions on plain and
    residual nets compare like with like, as Veit et al. delete layers of VGG [1]_.
``"dense"``
    a DenseNet layer, ``y = concat(x, h(x))``; written as a unit, ``shortcut`` pads ``x`` with
    zero channels and ``residual`` puts ``h(x)`` after zero channels, so ``shortcut + residual``
    is the concatenation.

References
----------
.. [1] A. Veit, M. Wilber, S. Belongie. "Residual Networks Behave Like Ensembles of Relatively
   Shallow Networks." NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .adapters import Adapter, adapters, match, register_adapter, supported_blocks, unregister_adapter
from ._utils import as_tuple, eval_mode
from .errors import ArgumentError, ArgumentTypeError, UnsupportedModelError

__all__ = [
    "ResidualUnit",
    "UnitParts",
    "find_units",
    "unit_table",
]

# re-exported here for code written against earlier versions: Adapter, adapters,
# register_adapter, unregister_adapter, supported_blocks (see unravel.adapters), and
# UnsupportedModelError (see unravel.errors)
_REEXPORTS = (Adapter, adapters, register_adapter, unregister_adapter, supported_blocks, UnsupportedModelError)

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


def _inplace(fn) -> bool:
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
        if s is x and _inplace(self.parts.post):
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


def find_units(model: nn.Module, example_inputs: Any = None, *, verify: bool = False) -> list[ResidualUnit]:
    """The residual units of ``model``, in forward order.

    Parameters
    ----------
    model : torch.nn.Module
        Any model holding supported blocks (:func:`supported_blocks`) at any depth.
    example_inputs : tensor, tuple of tensors, or dict of keyword inputs, optional
        Without it, forward order is the order in which blocks are registered, which is the order
        of every model built from ``nn.Sequential`` and ``nn.ModuleList``. With it, one forward
        pass (in eval mode, without gradients) records the order in which blocks are called; the
        model's modes are restored and nothing else is touched.
    verify : bool
        With ``example_inputs``: also check that routing every block through its units
        reproduces the model's output (:func:`unravel.verify_units`), naming the block class
        that fails.

    Returns
    -------
    list of ResidualUnit

    Raises
    ------
    UnsupportedModelError
        If the model holds no recognised block (the message lists the supported types and shows
        how to register an adapter), or a block whose class derives from a supported one but
        overrides ``forward`` (the message names the class that needs an adapter).

    Notes
    -----
    A recognised block is one or more units; blocks nested inside it are not searched, since its
    residual branch is one branch however it is built. The model is never changed.

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.resnet_cifar(20))
    >>> len(units), units[0].name, sum(u.projection for u in units)
    (9, 'stage1.0', 2)
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"find_units expects a torch.nn.Module, got {type(model).__name__}.")
    found: list[tuple[str, nn.Module, Adapter]] = []
    inside: list[str] = []
    refused: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        adapter, why = match(module)
        if why is not None:
            refused.append(f"{name or '(the model)'}: {why}")
        if adapter is not None:
            found.append((name, module, adapter))
            inside.append(name)
    if refused:
        # a block that looks supported but is not would silently become "code between units"
        raise UnsupportedModelError("found blocks whose class needs an adapter of its own:\n  - "
                                    + "\n  - ".join(refused))
    if not found:
        raise _unsupported(model)
    if example_inputs is not None:
        found = _order_by_calls(model, found, example_inputs)

    units: list[ResidualUnit] = []
    for name, module, adapter in found:
        parts = adapter.parts(module)
        for position, p in enumerate(parts):
            unit_name = name if p.label is None else f"{name}/{p.label}" if name else p.label
            units.append(ResidualUnit(len(units), unit_name, module, p, position))
    if not units:
        kinds = sorted({type(m).__name__ for _, m, _ in found})
        raise UnsupportedModelError(f"the blocks of {type(model).__name__} that unravel recognises ({', '.join(kinds)}) "
                                    "hold no residual unit here (none of them uses its skip connection).")
    if verify:
        if example_inputs is None:
            raise ArgumentError("find_units(verify=True) needs example_inputs to run the model on.")
        from .verify import verify_units

        verify_units(model, example_inputs, units=units)
    return units


def _order_by_calls(model, found, example_inputs):
    order: dict[int, int] = {}
    handles = []
    for i, (_, module, _) in enumerate(found):
        def hook(_m, _args, i=i):
            order.setdefault(i, len(order))
        handles.append(module.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_inputs, dict):  # keyword inputs (input_ids=..., attention_mask=...)
                model(**example_inputs)
            else:
                model(*as_tuple(example_inputs))
    finally:
        for h in handles:
            h.remove()
    # blocks never called keep their registration order, after the called ones
    ranked = sorted(range(len(found)), key=lambda i: (0, order[i]) if i in order else (1, i))
    return [found[i] for i in ranked]


def _unsupported(model: nn.Module) -> UnsupportedModelError:
    supported = "\n".join(f"  - {name}" for name in supported_blocks())
    return UnsupportedModelError(
        f"found no residual unit in {type(model).__name__}. Supported block types:\n{supported}\n"
        "For a block class of your own, register an adapter, for example:\n"
        "  unravel.register_adapter(MyBlock, lambda m: unravel.UnitParts(\n"
        "      residual=m.branch, shortcut=m.downsample, post=torch.relu))")


def host_modules(units: Iterable[ResidualUnit]) -> dict[nn.Module, list[ResidualUnit]]:
    """Group units by the module holding them (private helper for lesions and attribution)."""
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in units:
        hosts.setdefault(u.module, []).append(u)
    return hosts


def unit_table(model_or_units):
    """One row per unit: index, name, block type, kind, projection and parameter count.

    Examples
    --------
    >>> import unravel
    >>> unravel.unit_table(unravel.models.resnet_cifar(8)).columns.tolist()
    ['index', 'name', 'block', 'kind', 'projection', 'parameters']
    """
    import pandas as pd

    units = find_units(model_or_units) if isinstance(model_or_units, nn.Module) else list(model_or_units)
    counted: set[nn.Module] = set()
    rows = []
    for u in units:
        # a block holding several units is counted once, on its first unit
        params = 0 if u.module in counted else sum(p.numel() for p in u.module.parameters())
        counted.add(u.module)
        rows.append(dict(index=u.index, name=u.name, block=type(u.module).__name__, kind=u.kind,
                         projection=u.projection, parameters=params))
    return pd.DataFrame(rows, columns=["index", "name", "block", "kind", "projection", "parameters"])
