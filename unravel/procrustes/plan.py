"""Which convolutions a Procrustes ResNet constrains (:func:`procrustes_units`), and the plan of a
projection: each one's input size, the stride of the operator clipped and its target band.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .._utils import as_tuple, check_choice, eval_mode, model_device
from ..errors import ArgumentError, ArgumentTypeError
from .geometry import _bounds, _geometry, _is_conv

__all__ = ["procrustes_units", "Planned", "PARTS", "STRIDED", "TARGETS"]

#: Which convolutions: the transition units' residual branches and shortcuts, and the stem.
PARTS = ("residual", "shortcut", "stem")
#: Which operator of a strided convolution is clipped: its own, or the stride-1 one of its kernel.
STRIDED = ("exact", "stride1")
#: ``"band"``: ``[low, high]`` for every convolution; ``"sqrt_ratio"``: ``sqrt(c_out / c_in)``
#: for each (Zaeemzadeh et al.'s target).
TARGETS = ("band", "sqrt_ratio")


class Planned(NamedTuple):
    """One convolution to constrain: its unit (None for the stem), the module, its name, its
    spatial input size, the stride of the operator clipped (None: its own) and its band."""

    unit: Any
    conv: nn.Module
    name: str
    input_size: tuple
    stride: Any
    low: float
    high: float


def _stem(model, units) -> list:
    """Convolutions outside every unit, registered before the first unit's module."""
    inside = {id(m) for u in units for m in u.module.modules()}
    first = id(units[0].module) if units else None
    stem = []
    for m in model.modules():
        if id(m) == first:
            break
        if _is_conv(m) and id(m) not in inside:
            stem.append(m)
    return stem


def procrustes_units(model: nn.Module, *, parts: Iterable[str] = ("residual", "shortcut"),
                     units=None) -> list[tuple[Any, nn.Module]]:
    """The convolutions that a Procrustes ResNet constrains: those of its transition units (and its stem).

    A transition (projection) unit is one whose shortcut is not the identity (``unit.projection``,
    see :func:`unravel.find_units`): where the resolution or the width changes.

    Parameters
    ----------
    model : nn.Module
    parts : iterable of {"residual", "shortcut", "stem"}
        Which convolutions: the transition units' residual branches (where the branch is not a
        module, as in the torchvision adapters, every convolution of the block outside the
        shortcut), their shortcuts (a 1x1 convolution in option-B nets; option A's zero-padding
        shortcut has none), and the stem: every convolution outside the units registered before
        the first unit's module (Zaeemzadeh et al. constrain it too).
    units : list of ResidualUnit, optional
        ``find_units(model)`` by default.

    Returns
    -------
    list of (ResidualUnit or None, nn.Module)
        The stem first (with ``None`` for its unit), then in unit order; each convolution once
        (``nn.Conv1d/2d/3d``; transposed ones are left out).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1)
    >>> [(u.name, type(c).__name__) for u, c in unravel.procrustes.procrustes_units(net)]
    [('stage2.0', 'Conv1d'), ('stage2.0', 'Conv1d'), ('stage3.0', 'Conv1d'), ('stage3.0', 'Conv1d')]
    >>> net = unravel.models.resnet_cifar(8, width=4, shortcut="conv")
    >>> len(unravel.procrustes.procrustes_units(net, parts=["shortcut"]))
    2
    >>> [u for u, c in unravel.procrustes.procrustes_units(net, parts=["stem"])]
    [None]
    """
    from ..units import find_units

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"procrustes_units expects a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(parts, str):
        parts = (parts,)
    parts = tuple(check_choice("parts", p, PARTS) for p in parts)
    if not parts:
        raise ArgumentError(f"parts is empty; give some of {PARTS}.")
    units = find_units(model) if units is None else list(units)
    found, seen = [], set()
    if "stem" in parts:
        for conv in _stem(model, units):
            seen.add(id(conv))
            found.append((None, conv))
    for unit in units:
        if not unit.projection:
            continue
        shortcut = unit.parts.shortcut
        in_shortcut = [m for m in shortcut.modules() if _is_conv(m)] if isinstance(shortcut, nn.Module) else []
        convs = []
        if "residual" in parts:
            residual = unit.parts.residual
            if isinstance(residual, nn.Module):
                convs += [m for m in residual.modules() if _is_conv(m)]
            else:  # a function of the block's modules: every conv of the block outside the shortcut
                ids = {id(m) for m in in_shortcut}
                convs += [m for m in unit.module.modules() if _is_conv(m) and id(m) not in ids]
        if "shortcut" in parts:
            convs += in_shortcut
        for conv in convs:
            if id(conv) not in seen:
                seen.add(id(conv))
                found.append((unit, conv))
    return found


def _input_sizes(model: nn.Module, convs, example_input) -> dict[int, tuple[int, ...]]:
    """Spatial input size of each conv (by id), from forward pre-hooks on one eval-mode pass."""
    sizes: dict[int, tuple[int, ...]] = {}
    handles = []
    for conv in convs:
        def hook(module, args, d=conv.weight.dim() - 2):
            if args and torch.is_tensor(args[0]):
                sizes.setdefault(id(module), tuple(args[0].shape[-d:]))
        handles.append(conv.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            else:
                model(*as_tuple(example_input))
    finally:
        for h in handles:
            h.remove()
    return sizes


def _sizes(model, pairs, names, example_input, input_sizes) -> dict:
    if (example_input is None) == (input_sizes is None):
        raise ArgumentError("give exactly one of example_input (a batch the model runs on, to measure each "
                            "convolution's input size) and input_sizes (a dict: convolution name -> size).")
    if example_input is not None:
        if torch.is_tensor(example_input):
            example_input = example_input.to(model_device(model))
        measured = _input_sizes(model, [c for _, c in pairs], example_input)
        missing = [names.get(id(c), "?") for _, c in pairs if id(c) not in measured]
        if missing:
            raise ArgumentError(f"the example input never reached {', '.join(missing)}: cannot tell their input sizes.")
        return {id(c): measured[id(c)] for _, c in pairs}
    if not isinstance(input_sizes, Mapping):
        raise ArgumentTypeError(f"input_sizes must be a dict (convolution name -> spatial size), got "
                                f"{type(input_sizes).__name__}.")
    sizes, missing = {}, []
    for _, c in pairs:
        name = names.get(id(c))
        keys = [k for k in (name, c) if k in input_sizes]  # by name, or by the module itself
        if keys:
            sizes[id(c)] = input_sizes[keys[0]]
        else:
            missing.append(name)
    if missing:
        raise ArgumentError(f"input_sizes lacks {', '.join(missing)}; it needs every convolution of "
                            f"procrustes_units(model) by name.")
    return sizes


def _band(conv, target, low, high):
    if target == "sqrt_ratio":
        value = math.sqrt(conv.out_channels / conv.in_channels)
        return value, value
    return low, high


def _plan(model, example_input, input_sizes, parts, strided, target="band", low=1.0, high=1.0) -> list[Planned]:
    """The convolutions to constrain, each with its input size, operator stride and band."""
    check_choice("strided", strided, STRIDED)
    check_choice("target", target, TARGETS)
    low, high = _bounds(low, high)
    pairs = procrustes_units(model, parts=parts)
    if not pairs:
        raise ArgumentError(f"{type(model).__name__} has no convolution in its {' or '.join(parts)} (option A's "
                            "zero-padding shortcuts hold none): nothing to constrain.")
    names = {id(m): name for name, m in model.named_modules()}
    sizes = _sizes(model, pairs, names, example_input, input_sizes)
    plan = []
    for unit, conv in pairs:
        stride = 1 if strided == "stride1" else None
        size, name = sizes[id(conv)], names.get(id(conv), "?")
        try:  # check every size now, naming the convolution
            g = _geometry(conv, size, stride, None, None, None)
            g.check_support()
        except ArgumentError as e:
            hint = " (strided='stride1' clips the stride-1 operator instead)" if "divisible" in str(e) else ""
            raise ArgumentError(f"{name}: {e}{hint}") from None
        plan.append(Planned(unit, conv, name, size, stride, *_band(conv, target, low, high)))
    return plan
