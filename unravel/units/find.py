"""Finding the residual units of a model, in forward order, through the adapters (one per block
class, or per layout) that read a module and never change it.

It does not check that a registered adapter describes its block faithfully
(:func:`unravel.verify_units` does, and ``tests`` do for the built-in adapters).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._utils import as_tuple, eval_mode
from ..adapters import Adapter, match, supported_blocks
from ..adapters.wrappers import as_module
from ..errors import ArgumentTypeError, UnsupportedModelError
from .parts import ResidualUnit

__all__ = ["find_units", "unit_table"]


def find_units(model: nn.Module, example_inputs: Any = None) -> list[ResidualUnit]:
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
    residual branch is one branch however it is built. The model is never changed. To also check
    that routing every block through its units reproduces the model's output, call
    :func:`unravel.verify_units` (which finds the units, checks them and returns them).

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.resnet_cifar(20))
    >>> len(units), units[0].name, sum(u.projection for u in units)
    (9, 'stage1.0', 2)
    """
    model = as_module(model)  # an nnsight wrapper: the model inside
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
    _refuse_shared(model, found)
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
    return units


def _refuse_shared(model: nn.Module, found) -> None:
    """Refuse a block registered in two places (``nn.Sequential(b, b)``): it would run twice, as two
    units with one set of weights, but a unit is one place in the chain. One rule for every
    analysis (find_units, unravel(), lesions, attribution): refused, never counted as one unit."""
    by_id = {id(m): (n, m) for n, m, _ in found}
    places: dict[int, set] = {}
    for parent in model.modules():  # each module once; its children as registered, duplicates too
        for child_name, child in parent._modules.items():
            if child is not None and id(child) in by_id:
                places.setdefault(id(child), set()).add((id(parent), child_name))
    for i, where in places.items():
        if len(where) > 1:
            name, module = by_id[i]
            raise UnsupportedModelError(
                f"block {name!r} ({type(module).__name__}) is registered in {len(where)} places of the model (one "
                "module used twice, as in nn.Sequential(b, b)): its units would run twice with one set of weights, "
                "but a unit is one place in the chain. unravel refuses it; use separate copies (copy.deepcopy(b)).")


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
