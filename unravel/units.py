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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ResidualUnit",
    "UnitParts",
    "Adapter",
    "UnsupportedModelError",
    "find_units",
    "register_adapter",
    "unregister_adapter",
    "supported_blocks",
    "unit_table",
]

UNIT_KINDS = ("residual", "plain", "dense")


class UnsupportedModelError(TypeError):
    """Raised when a model holds no residual unit that any adapter recognises."""


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
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"UnitParts kind={self.kind!r} is not one of {UNIT_KINDS}.")
        if not callable(self.residual):
            raise TypeError(f"UnitParts residual must be callable, got {type(self.residual).__name__}.")


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

    __slots__ = ("index", "name", "module", "parts", "position")

    def __init__(self, index: int, name: str, module: nn.Module, parts: UnitParts, position: int = 0):
        self.index = index
        self.name = name
        self.module = module
        self.parts = parts
        self.position = position  # index of this unit among its module's units

    @property
    def projection(self) -> bool:
        p = self.parts
        return bool(p.shortcut is not None) if p.projection is None else bool(p.projection)

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
        """The unit's output, equal to what the module computes for it."""
        if self.parts.forward is not None:
            return self.parts.forward(x, **kwargs)
        if self.kind == "plain":
            return self.post(self.residual(x, **kwargs))
        return self.post(self.shortcut(x) + self.residual(x, **kwargs))

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        """The unit with its residual branch deleted: ``post(shortcut(x))``."""
        return self.post(self.shortcut(x))

    __call__ = forward

    def __repr__(self) -> str:
        flags = [self.kind] + (["projection"] if self.projection else [])
        return f"ResidualUnit({self.index}, {self.name!r}, {type(self.module).__name__}, {', '.join(flags)})"


class Adapter:
    """Describes the units of one block class. Subclass it, or register a plain function.

    ``parts(module)`` returns the block's units (a :class:`UnitParts` or a list of them).
    ``route(module, call_unit, *args, **kwargs)`` reruns the block's forward through its units,
    ``call_unit(position, x, **unit_kwargs)`` computing one of them; lesions and attribution use it
    to change or record single units. The default routes a one-input block through its units in
    order, which fits every block whose forward is ``x -> unit_m(...unit_1(x))``.
    """

    def parts(self, module: nn.Module) -> list[UnitParts]:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define parts(module) -> list of UnitParts.")

    def route(self, module: nn.Module, call_unit: Callable[..., torch.Tensor], x, *args, **kwargs):
        if args or kwargs:
            raise TypeError(
                f"{type(module).__name__} was called with extra arguments; its adapter routes "
                "single-input blocks only. Give the adapter a route() method to pass them on."
            )
        for position in range(len(self.parts(module))):
            x = call_unit(position, x)
        return x


class _FunctionAdapter(Adapter):
    def __init__(self, fn: Callable[[nn.Module], UnitParts | Sequence[UnitParts]]):
        self.fn = fn

    def parts(self, module):
        out = self.fn(module)
        out = [out] if isinstance(out, UnitParts) else list(out)
        for p in out:
            if not isinstance(p, UnitParts):
                raise TypeError(
                    f"the adapter for {type(module).__name__} returned {type(p).__name__}; "
                    "an adapter returns UnitParts or a list of UnitParts."
                )
        return out


# ---------------------------------------------------------------------------------------------
# Built-in adapters. torchvision and torch.nn blocks are matched by qualified class name, so that
# nothing here imports torchvision.


def _project_block(m):
    # unravel.models blocks store their parts under these names; post/shortcut may be None.
    return m.unit_parts()


def _tv_basic(m):
    def residual(x):
        return m.bn2(m.conv2(m.relu(m.bn1(m.conv1(x)))))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


def _tv_bottleneck(m):
    def residual(x):
        out = m.relu(m.bn1(m.conv1(x)))
        out = m.relu(m.bn2(m.conv2(out)))
        return m.bn3(m.conv3(out))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


class _TransformerEncoderLayerAdapter(Adapter):
    """Two units per ``nn.TransformerEncoderLayer``: self-attention, then feed-forward.

    ``norm_first=True`` (pre-LN): the LayerNorm sits inside the residual branch, post is the
    identity. ``norm_first=False`` (post-LN): post is the LayerNorm after the sum.
    """

    def parts(self, m):
        if m.norm_first:
            attention = UnitParts(
                residual=lambda x, **kw: m._sa_block(m.norm1(x), kw.get("attn_mask"),
                                                     kw.get("key_padding_mask"), kw.get("is_causal", False)),
                label="attention")
            # **_ : a feed-forward unit moved to an attention position ignores the masks
            feedforward = UnitParts(residual=lambda x, **_: m._ff_block(m.norm2(x)), label="feedforward")
        else:
            attention = UnitParts(
                residual=lambda x, **kw: m._sa_block(x, kw.get("attn_mask"), kw.get("key_padding_mask"),
                                                     kw.get("is_causal", False)),
                post=m.norm1, label="attention")
            feedforward = UnitParts(residual=lambda x, **_: m._ff_block(x), post=m.norm2, label="feedforward")
        return [attention, feedforward]

    def route(self, m, call_unit, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        # The same mask canonicalisation as TransformerEncoderLayer.forward; the fused fast path is
        # not taken, so routed outputs equal the layer's slow-path forward.
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(src_mask), other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None,
                                     other_name="", target_type=src.dtype, check_other=False)
        x = call_unit(0, src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return call_unit(1, x)


_BUILTIN: dict[str, Adapter] = {
    "unravel.models._blocks.ResidualBlock": _FunctionAdapter(_project_block),
    "torchvision.models.resnet.BasicBlock": _FunctionAdapter(_tv_basic),
    "torchvision.models.resnet.Bottleneck": _FunctionAdapter(_tv_bottleneck),
    "torch.nn.modules.transformer.TransformerEncoderLayer": _TransformerEncoderLayerAdapter(),
}
_REGISTERED: dict[type, Adapter] = {}


def register_adapter(block_class: type, adapter: Adapter | Callable[[nn.Module], Any]) -> None:
    """Teach :func:`find_units` a block class of your own.

    Parameters
    ----------
    block_class : type
        A subclass of ``torch.nn.Module``. Subclasses of it are matched too.
    adapter : Adapter or callable
        ``adapter(module)`` returns a :class:`UnitParts` (or a list of them, for a block holding
        several units in sequence). An :class:`Adapter` subclass can also say how the block's
        forward passes extra arguments to its units.

    Raises
    ------
    TypeError
        If ``block_class`` is not a Module subclass or ``adapter`` is not callable.

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
    >>> x = torch.randn(2, 4)
    >>> u = unravel.find_units(net)[0]
    >>> torch.equal(u.forward(x), net[0](x))
    True
    >>> unravel.unregister_adapter(MyBlock)
    """
    if not (isinstance(block_class, type) and issubclass(block_class, nn.Module)):
        raise TypeError(f"block_class must be a torch.nn.Module subclass, got {block_class!r}.")
    if isinstance(adapter, Adapter):
        _REGISTERED[block_class] = adapter
    elif callable(adapter):
        _REGISTERED[block_class] = _FunctionAdapter(adapter)
    else:
        raise TypeError(f"adapter must be an Adapter or a callable module -> UnitParts, got {adapter!r}.")


def unregister_adapter(block_class: type) -> None:
    """Forget an adapter given to :func:`register_adapter` (a no-op when there is none)."""
    _REGISTERED.pop(block_class, None)


def supported_blocks() -> list[str]:
    """Names of the block classes :func:`find_units` recognises, registered ones included.

    Examples
    --------
    >>> import unravel
    >>> "torchvision.models.resnet.BasicBlock" in unravel.supported_blocks()
    True
    """
    return list(_BUILTIN) + [f"{c.__module__}.{c.__qualname__}" for c in _REGISTERED]


def _adapter_for(module: nn.Module) -> Adapter | None:
    for cls in type(module).__mro__:
        if cls in _REGISTERED:
            return _REGISTERED[cls]
        adapter = _BUILTIN.get(f"{cls.__module__}.{cls.__qualname__}")
        if adapter is not None:
            return adapter
    return None


def _unsupported(model: nn.Module) -> UnsupportedModelError:
    supported = "\n".join(f"  - {name}" for name in supported_blocks())
    return UnsupportedModelError(
        f"found no residual unit in {type(model).__name__}. Supported block types:\n{supported}\n"
        "For a block class of your own, register an adapter, for example:\n"
        "  unravel.register_adapter(MyBlock, lambda m: unravel.UnitParts(\n"
        "      residual=m.branch, shortcut=m.downsample, post=torch.relu))"
    )


def find_units(model: nn.Module, example_inputs: Any = None) -> list[ResidualUnit]:
    """The residual units of ``model``, in forward order.

    Parameters
    ----------
    model : torch.nn.Module
        Any model holding supported blocks (:func:`supported_blocks`) at any depth.
    example_inputs : tensor or tuple of tensors, optional
        Without it, forward order is the order in which blocks are registered, which is the order
        of every model built from ``nn.Sequential`` and ``nn.ModuleList``. With it, one forward
        pass (in eval mode, without gradients) records the order in which blocks are called; the
        model's modes are restored and nothing else is touched.

    Returns
    -------
    list of ResidualUnit

    Raises
    ------
    UnsupportedModelError
        If the model holds no recognised block; the message lists the supported types and shows
        how to register an adapter.

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
        raise TypeError(f"find_units expects a torch.nn.Module, got {type(model).__name__}.")
    found: list[tuple[str, nn.Module, Adapter]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        adapter = _adapter_for(module)
        if adapter is not None:
            found.append((name, module, adapter))
            inside.append(name)
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
    return units


def _order_by_calls(model, found, example_inputs):
    order: dict[int, int] = {}
    handles = []
    for i, (_, module, _) in enumerate(found):
        def hook(_m, _args, i=i):
            order.setdefault(i, len(order))
        handles.append(module.register_forward_pre_hook(hook))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    # blocks never called keep their registration order, after the called ones
    ranked = sorted(range(len(found)), key=lambda i: (0, order[i]) if i in order else (1, i))
    return [found[i] for i in ranked]


def host_modules(units: Iterable[ResidualUnit]) -> dict[nn.Module, list[ResidualUnit]]:
    """Group units by the module holding them (private helper for lesions and attribution)."""
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in units:
        hosts.setdefault(u.module, []).append(u)
    return hosts


def adapter_of(module: nn.Module) -> Adapter:
    adapter = _adapter_for(module)
    if adapter is None:  # pragma: no cover - units always come from find_units
        raise _unsupported(module)
    return adapter


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
