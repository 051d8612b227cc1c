"""Adapters: how :func:`unravel.find_units` reads the residual units of a block class.

An adapter reads a module and never changes it. Matching is exact: an adapter applies to its
block class, and to a subclass only when the subclass (and the instance) does not override
``forward`` -- a subclass with its own ``forward`` computes another function, so the base class's
description would be wrong (an instance ``forward`` that is accelerate's device hook or nnsight's
wrapper around the class's own is not an override: :mod:`unravel.adapters.wrappers`). Built-in adapters are named by qualified class name and loaded on
first use, so nothing here imports torchvision or other libraries. This module does not check
that an adapter describes its block faithfully; ``find_units(model, example_inputs=...)`` does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import nn

from ..errors import ArgumentTypeError, UnsupportedModelError
from .wrappers import wrapper_of

__all__ = ["Adapter", "Layout", "register_adapter", "unregister_adapter", "adapters", "supported_blocks", "ECOSYSTEMS"]


class Adapter:
    """Describes the units of one block class. Subclass it, or register a plain function.

    ``parts(module)`` returns the block's units (a :class:`~unravel.UnitParts` or a list of them).
    ``route(module, call_unit, *args, **kwargs)`` reruns the block's forward through its units,
    ``call_unit(position, x, **unit_kwargs)`` computing one of them; interventions use it to
    change or record single units. The default routes a one-input block through its units in
    order, which fits every block whose forward is ``x -> unit_m(...unit_1(x))``.

    Examples
    --------
    >>> import torch, unravel
    >>> from torch import nn
    >>> class Twice(nn.Module):  # two residual units in one block
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.f, self.g = nn.Linear(3, 3), nn.Linear(3, 3)
    ...     def forward(self, x):
    ...         x = x + self.f(x)
    ...         return x + self.g(x)
    >>> class TwiceAdapter(unravel.Adapter):
    ...     def parts(self, m):
    ...         return [unravel.UnitParts(residual=m.f, label="f"), unravel.UnitParts(residual=m.g, label="g")]
    >>> with unravel.adapters({Twice: TwiceAdapter()}):
    ...     [u.name for u in unravel.find_units(nn.Sequential(Twice()))]
    ['0/f', '0/g']
    """

    def parts(self, module: nn.Module) -> list:  # pragma: no cover - interface
        raise ArgumentTypeError(f"{type(self).__name__} must define parts(module) -> list of UnitParts.")

    def zero_plan(self, module: nn.Module, positions, what: str) -> dict | None:
        """Which submodules to replace so that the units at ``positions`` of ``module`` add
        nothing, for removing part of a block (:func:`unravel.prune.remove`): attribute path ->
        the arguments of a :class:`~unravel.prune.ZeroBranch` (``outputs``, ``index``, ``data``,
        ``passthrough``, ``layer_idx``). Raises :class:`~unravel.errors.UnsupportedModelError`
        naming ``what`` where that cannot be done. None (the default): this adapter cannot say;
        the one that reads a ``transformers`` layer from its forward can."""
        return None

    def route(self, module: nn.Module, call_unit: Callable, x, *args, **kwargs):
        if args or kwargs:
            raise ArgumentTypeError(
                f"{type(module).__name__} was called with extra arguments; its adapter routes "
                "single-input blocks only. Give the adapter a route() method to pass them on.")
        for position in range(len(self.parts(module))):
            x = call_unit(position, x)
        return x


class FunctionAdapter(Adapter):
    """An adapter made of a function ``module -> UnitParts | list of UnitParts``."""

    def __init__(self, fn: Callable[[nn.Module], Any]):
        self.fn = fn

    def parts(self, module):
        from ..units.parts import UnitParts

        out = self.fn(module)
        out = [out] if isinstance(out, UnitParts) else list(out)
        for p in out:
            if not isinstance(p, UnitParts):
                raise ArgumentTypeError(f"the adapter for {type(module).__name__} returned {type(p).__name__}; "
                                        "an adapter returns UnitParts or a list of UnitParts.")
        return out


class Layout:
    """An adapter for every class of one library that shares a layout of attribute names (most
    transformers decoder layers hold ``input_layernorm``, ``self_attn``,
    ``post_attention_layernorm`` and ``mlp``), matched without importing the library.

    Parameters
    ----------
    name : str
        What the layout is, for messages and :func:`supported_blocks`.
    adapter : Adapter
    module_prefix : str
        The class's module must start with this (``"transformers.models."``).
    attributes : sequence of str
        Attributes every matching module has.
    predicate : callable, optional
        ``predicate(module) -> bool``, a further condition.

    Examples
    --------
    >>> from torch import nn
    >>> layout = Layout("any linear", Adapter(), module_prefix="torch.nn.", attributes=("weight", "bias"))
    >>> layout.matches(nn.Linear(2, 2)), layout.matches(nn.ReLU())
    (True, False)
    """

    def __init__(self, name: str, adapter: Adapter, *, module_prefix: str, attributes=(), predicate=None):
        self.name, self.adapter, self.module_prefix = name, adapter, module_prefix
        self.attributes, self.predicate = tuple(attributes), predicate

    def matches(self, module: nn.Module) -> bool:
        cls = original_class(module)
        return (cls.__module__.startswith(self.module_prefix)
                and all(hasattr(module, a) for a in self.attributes)
                and (self.predicate is None or bool(self.predicate(module))))

    def __repr__(self):
        return f"Layout({self.name!r}, {self.module_prefix}*: {', '.join(self.attributes)})"


#: The packages and modules of unravel.adapters holding built-in adapters, one per ecosystem. Each defines
#: ``CLASSES`` (qualified class name -> Adapter) and may define ``LAYOUTS`` (a list of Layout);
#: none of them imports its library, so they are loaded on first use whatever is installed.
ECOSYSTEMS = ("_torch", "_torchvision", "_timm", "_transformers")
_TABLES: tuple[dict, list] | None = None
_REGISTERED: dict[type, Adapter] = {}
_LOCK = threading.RLock()


def _as_adapter(adapter) -> Adapter:
    if isinstance(adapter, Adapter):
        return adapter
    if callable(adapter):
        return FunctionAdapter(adapter)
    raise ArgumentTypeError(f"adapter must be an Adapter or a callable module -> UnitParts, got {adapter!r}.")


def _check_class(block_class):
    if not (isinstance(block_class, type) and issubclass(block_class, nn.Module)):
        raise ArgumentTypeError(f"block_class must be a torch.nn.Module subclass, got {block_class!r}.")


def register_adapter(block_class: type, adapter: Adapter | Callable[[nn.Module], Any]) -> None:
    """Teach :func:`unravel.find_units` a block class of your own, for the whole process.

    Parameters
    ----------
    block_class : type
        A subclass of ``torch.nn.Module``. Its subclasses are matched too, unless they override
        ``forward``.
    adapter : Adapter or callable
        ``adapter(module)`` returns a :class:`~unravel.UnitParts` (or a list of them, for a block
        holding several units in sequence). An :class:`Adapter` subclass can also say how the
        block's forward passes extra arguments to its units.

    Raises
    ------
    ArgumentTypeError
        If ``block_class`` is not a Module subclass or ``adapter`` is not callable.

    See Also
    --------
    adapters : the same, for the inside of a ``with`` block only.

    Examples
    --------
    >>> import torch, unravel
    >>> from torch import nn
    >>> class MyBlock(nn.Module):
    ...     def __init__(self, d):
    ...         super().__init__()
    ...         self.f = nn.Linear(d, d)
    ...     def forward(self, x):
    ...         return torch.relu(x + self.f(x))
    >>> unravel.register_adapter(MyBlock, lambda m: unravel.UnitParts(residual=m.f, post=torch.relu))
    >>> net = nn.Sequential(MyBlock(4), MyBlock(4))
    >>> [u.name for u in unravel.find_units(net)]
    ['0', '1']
    >>> unravel.unregister_adapter(MyBlock)
    """
    _check_class(block_class)
    adapter = _as_adapter(adapter)
    with _LOCK:
        _REGISTERED[block_class] = adapter


def unregister_adapter(block_class: type) -> None:
    """Forget an adapter given to :func:`register_adapter` (a no-op when there is none)."""
    with _LOCK:
        _REGISTERED.pop(block_class, None)


@contextlib.contextmanager
def adapters(mapping: Mapping[type, Adapter | Callable]) -> Iterator[None]:
    """Adapters for some block classes while inside; the registry is as before on exit.

    Parameters
    ----------
    mapping : mapping of block class -> Adapter or callable
        As for :func:`register_adapter`.

    Examples
    --------
    >>> import torch, unravel
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.f = nn.Linear(2, 2)
    ...     def forward(self, x):
    ...         return x + self.f(x)
    >>> with unravel.adapters({Block: lambda m: unravel.UnitParts(residual=m.f)}):
    ...     len(unravel.find_units(nn.Sequential(Block(), Block())))
    2
    >>> f"{Block.__module__}.{Block.__qualname__}" in unravel.supported_blocks()
    False
    """
    if not isinstance(mapping, Mapping):
        raise ArgumentTypeError(f"adapters() takes a mapping of block class -> adapter, got {type(mapping).__name__}.")
    new = {}
    for cls, adapter in mapping.items():
        _check_class(cls)
        new[cls] = _as_adapter(adapter)
    with _LOCK:
        saved = {cls: _REGISTERED.get(cls) for cls in new}
        _REGISTERED.update(new)
    try:
        yield
    finally:
        with _LOCK:
            for cls, old in saved.items():
                if old is None:
                    _REGISTERED.pop(cls, None)
                else:
                    _REGISTERED[cls] = old


def supported_blocks() -> list[str]:
    """Names of the block classes :func:`unravel.find_units` recognises, registered ones included.

    Examples
    --------
    >>> import unravel
    >>> "torchvision.models.resnet.BasicBlock" in unravel.supported_blocks()
    True
    """
    classes, layouts = _tables()
    with _LOCK:
        return (list(classes) + [f"{lay.module_prefix}* with {', '.join(lay.attributes)} ({lay.name})" for lay in layouts]
                + [_qualname(c) for c in _REGISTERED])


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def original_class(module: nn.Module) -> type:
    """The module's own class (a routed block's class is a stand-in while an intervention runs)."""
    cls = type(module)
    return getattr(cls, "_unravel_original", cls)


def _tables() -> tuple[dict[str, Adapter], list[Layout]]:
    global _TABLES
    with _LOCK:
        if _TABLES is None:
            classes: dict[str, Adapter] = {}
            layouts: list[Layout] = []
            for eco in ECOSYSTEMS:
                name = f"{__name__}.{eco}"
                if importlib.util.find_spec(name) is None:
                    continue
                mod = importlib.import_module(name)
                classes.update(getattr(mod, "CLASSES", {}))
                layouts.extend(getattr(mod, "LAYOUTS", []))
            _TABLES = (classes, layouts)
        return _TABLES


def _lookup(cls: type) -> Adapter | None:
    with _LOCK:
        adapter = _REGISTERED.get(cls)
    return adapter if adapter is not None else _tables()[0].get(_qualname(cls))


def match(module: nn.Module) -> tuple[Adapter | None, str | None]:
    """The adapter of ``module``, or ``(None, why)`` where a base class has one that does not apply
    (the subclass overrides ``forward``); ``(None, None)`` when no class in its MRO has one."""
    cls = original_class(module)
    overriding = None  # the first class (from the module's own) that defines forward itself
    if "forward" in module.__dict__ and wrapper_of(module, cls) is None:  # not accelerate's or nnsight's
        overriding = "the instance"
    for c in cls.__mro__:
        adapter = _lookup(c)
        if adapter is not None:
            if overriding is None:
                return adapter, None
            return None, (f"{_qualname(cls)} derives from {_qualname(c)}, which has an adapter, but "
                          f"{overriding} overrides forward(), so that adapter does not describe it. "
                          f"Register one: unravel.register_adapter({cls.__name__}, ...)")
        if overriding is None and "forward" in vars(c):
            overriding = _qualname(c)
    if overriding != "the instance":
        for layout in _tables()[1]:
            if layout.matches(module):
                return layout.adapter, None
    return None, None


def adapter_for(module: nn.Module) -> Adapter:
    """The adapter of a module known to hold units (private helper for interventions)."""
    adapter, why = match(module)
    if adapter is None:
        raise UnsupportedModelError(why or f"no adapter describes {_qualname(original_class(module))}.")
    return adapter




class _CallableModule(type(contextlib)):
    """``unravel.adapters`` is this package and, called, the scoped registration
    :func:`adapters` (``with unravel.adapters({MyBlock: adapter}): ...``)."""

    def __call__(self, mapping):
        return adapters(mapping)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
