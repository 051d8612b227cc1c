"""Declarative adapters for timm blocks: a block is a sequence of units, each unit a residual
branch written as the block's own attributes applied in order. Private; the tables that use it
are :mod:`unravel.adapters._timm._vit`, :mod:`~unravel.adapters._timm._conv` and
:mod:`~unravel.adapters._timm._mixed`.

A branch is a list of *steps*, applied to ``x`` in order:

- ``"name"``: the block's attribute ``name`` (dotted for a submodule's): a module is called on
  ``x``, a tensor or number (a layer scale ``gamma``) multiplies it, ``None`` is skipped (timm
  leaves optional layers ``None``);
- ``("name", "arg", ...)``: the same module, also given these arguments of the block's forward
  by name (``("attn", "size")`` calls ``attn(x, size=size)``);
- a callable ``f(m, x, **args)``, for anything else (reshapes, windowing, channel slices).

The block's forward arguments after ``x`` are bound by the block class's own signature, so a
unit receives what the caller passed (masks, sizes, position embeddings). This module does not
check that a spec describes its block; ``tests/test_adapters_timm_more.py`` and
``benchmarks/coverage.py`` do, by comparing routed outputs with the blocks' own.

Examples
--------
>>> from torch import nn
>>> class Block(nn.Module):  # x + mlp(norm(x))
...     def __init__(self):
...         super().__init__()
...         self.norm, self.mlp = nn.LayerNorm(4), nn.Linear(4, 4)
...     def forward(self, x):
...         return x + self.mlp(self.norm(x))
>>> adapter = Spec(Unit(["norm", "mlp"]))
>>> [p.label for p in adapter.parts(Block())]
[None]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...units.parts import UnitParts, is_identity
from .. import Adapter, original_class
from ._base import _post

__all__ = ["Unit", "Spec", "run", "identity_like"]


def identity_like(module) -> bool:
    """``None``, ``nn.Identity`` or an empty ``nn.Sequential`` (timm's identity shortcuts)."""
    return is_identity(module) or (type(module) is nn.Sequential and len(module) == 0)


def run(m: nn.Module, steps: Sequence, x, args: dict | None = None):
    """Apply ``steps`` (see the module docstring) of block ``m`` to ``x``."""
    args = args or {}
    for step in steps:
        if callable(step) and not isinstance(step, (str, tuple)):
            x = step(m, x, **args)
            continue
        name, keys = (step[0], step[1:]) if isinstance(step, tuple) else (step, ())
        v = m
        for part in name.split("."):
            v = getattr(v, part)
        if v is None:
            continue
        if torch.is_tensor(v) or isinstance(v, (int, float)):
            x = v * x
        else:
            x = v(x, **{k: args[k] for k in keys if k in args})
    return x


class Unit:
    """One unit of a block, ``post(shortcut(x) + branch(x))``.

    Parameters
    ----------
    branch : sequence of steps
        The residual branch.
    shortcut : str, callable ``f(m, x)`` or None
        An attribute (the identity where it is ``None``, ``nn.Identity`` or an empty
        ``nn.Sequential``) or a function; ``None`` is the identity.
    post : str, callable ``f(m, y)`` or None
        What follows the sum.
    label : str, optional
        The unit's name inside a block with several units.
    args : sequence of str
        The block's forward arguments this unit's steps read.
    before : sequence of steps
        Code the block runs before this unit (between units): not part of any unit.
    when : callable ``f(m) -> bool``, optional
        Whether the block has this unit (its skip is used); without it, ``otherwise`` runs.
    otherwise : sequence of steps
        What the block computes in this unit's place when ``when`` is false.
    shortcut_when : callable ``f(m) -> bool``, optional
        Where it is false, the shortcut is the identity (a block projecting only at a stage change).
    projection : bool, optional
        Overrides "the shortcut is not the identity".
    """

    def __init__(self, branch: Sequence, *, shortcut=None, post=None, label: str | None = None, args=(),
                 before=(), when: Callable | None = None, otherwise=(), shortcut_when: Callable | None = None,
                 projection: bool | None = None):
        self.branch, self.shortcut, self.post, self.label = [s for s in branch if s is not None], shortcut, post, label
        self.shortcut_when = shortcut_when
        self.args, self.before, self.when, self.otherwise = tuple(args), list(before), when, list(otherwise)
        self.projection = projection

    def active(self, m) -> bool:
        return self.when is None or bool(self.when(m))

    def parts(self, m, label) -> UnitParts:
        branch = self.branch

        def residual(x, **args):
            return run(m, branch, x, args)

        shortcut, projection = self.shortcut, self.projection
        if self.shortcut_when is not None and not self.shortcut_when(m):
            shortcut = None
        if isinstance(shortcut, str):
            module = getattr(m, shortcut)
            shortcut = None if identity_like(module) else module
        elif shortcut is not None:
            fn = shortcut
            shortcut = lambda x: fn(m, x)  # noqa: E731
        post = self.post
        if isinstance(post, str):
            post = _post(getattr(m, post))
        elif post is not None:
            fn_post = post
            post = lambda y: fn_post(m, y)  # noqa: E731
        return UnitParts(residual=residual, shortcut=shortcut, post=post, label=label, projection=projection)


_SIGNATURES: dict[type, inspect.Signature] = {}


def bind(m: nn.Module, x, args, kwargs) -> dict:
    """The block's forward arguments after the first, by name, defaults filled in."""
    cls = original_class(m)
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls.forward)
    bound = sig.bind(m, x, *args, **kwargs)
    bound.apply_defaults()
    names = list(sig.parameters)[2:]
    return {k: bound.arguments[k] for k in names if k in bound.arguments}


class Spec(Adapter):
    """A block made of :class:`Unit` specs, routed in order.

    Parameters
    ----------
    *units : Unit
    after : callable ``f(m, x, args) -> output``, optional
        Code after the last unit, and the block's return value (a tuple, for blocks returning
        sizes alongside).

    Units are labelled where the spec has several (``"attention"``, ``"mlp"``).
    """

    def __init__(self, *units: Unit, after: Callable | None = None):
        self.units, self.after = units, after

    def parts(self, m):
        several = len(self.units) > 1
        return [u.parts(m, u.label if several else None) for u in self.units if u.active(m)]

    def route(self, m, call_unit, x, *args, **kwargs):
        bound = bind(m, x, args, kwargs)
        if not any(u.active(m) for u in self.units):
            return original_class(m).forward(m, x, *args, **kwargs)
        position = 0
        for u in self.units:
            x = run(m, u.before, x, bound)
            if u.active(m):
                x = call_unit(position, x, **{k: bound[k] for k in u.args if k in bound})
                position += 1
            else:
                x = run(m, u.otherwise, x, bound)
        return x if self.after is None else self.after(m, x, bound)


def two(attn: Sequence, mlp: Sequence, *, args=(), labels=("attention", "mlp"), **kw) -> Spec:
    """The commonest transformer block: ``x + attn_branch(x)``, then ``x + mlp_branch(x)``;
    ``args`` go to the attention branch."""
    return Spec(Unit(attn, label=labels[0], args=args), Unit(mlp, label=labels[1]), **kw)
