"""Faithfulness of adapters: routing a model's blocks through their units must reproduce the
model's output. :func:`verify_units` runs the model as it is and routed through its units (no
change made) on example inputs and names the first block class whose routed output differs.

It checks the given inputs only; a block whose routing depends on inputs not exercised (another
mask, another sequence length) is checked only as far as the inputs reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._utils import as_tuple, eval_mode
from .adapters import original_class
from .errors import ArgumentError, UnfaithfulAdapterError
from .interventions import intervene
from .units import find_units, host_modules

__all__ = ["verify_units", "output_tensors"]


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors in a model's output, in a fixed order: a tensor, a tuple or list, a dict or a
    ``ModelOutput`` (anything with ``to_tuple``), nested.

    Examples
    --------
    >>> import torch
    >>> [t.shape[0] for t in output_tensors({"logits": torch.zeros(2), "extra": (torch.zeros(3), None)})]
    [2, 3]
    """
    if torch.is_tensor(out):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in output_tensors(item)]
    return []


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    if bool(nan_a.any()):  # NaNs in the same places (fully masked rows) agree
        a, b = a.masked_fill(nan_a, 0), b.masked_fill(nan_b, 0)
    scale = float(a.abs().max()) if a.numel() else 0.0
    return bool(((a - b).abs() <= atol + rtol * scale).all())


def verify_units(model: nn.Module, example_inputs, *, rtol: float = 1e-5, atol: float = 1e-6, units=None):
    """Check that routing every block through its units reproduces the model's output.

    Parameters
    ----------
    model : nn.Module
    example_inputs : tensor, tuple of positional arguments, or dict of keyword arguments
        One batch for the model (run in eval mode, without gradients; modes are restored).
    rtol, atol : float
        Outputs agree where ``|routed - own| <= atol + rtol * max|own|``, per output tensor
        and per block.
    units : list of ResidualUnit, optional
        The model's units (default: :func:`unravel.find_units` on ``example_inputs``, in call order).

    Returns
    -------
    list of ResidualUnit
        The units, verified.

    Raises
    ------
    UnfaithfulAdapterError
        Naming the first block (in call order) whose routed output differs from its own, and its
        class: that class needs an adapter of its own (``unravel.register_adapter``).

    Examples
    --------
    >>> import torch, unravel
    >>> units = unravel.verify_units(unravel.models.resnet_cifar(8), torch.randn(2, 3, 8, 8))
    >>> len(units)
    3
    """
    units = find_units(model, example_inputs) if units is None else list(units)
    args, kwargs = (((), dict(example_inputs)) if isinstance(example_inputs, Mapping)
                    else (as_tuple(example_inputs), {}))
    hosts = list(host_modules(units))
    names = {m: n for n, m in model.named_modules()}

    def run(routed: bool):
        seen: dict[nn.Module, list] = {}

        def hook(mod, _args, out):  # returns None: the output is not replaced
            seen.setdefault(mod, output_tensors(out))

        handles = [m.register_forward_hook(hook) for m in hosts]
        try:
            with eval_mode(model), torch.no_grad():
                if routed:
                    with intervene(model):
                        out = model(*args, **kwargs)
                else:
                    out = model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        return output_tensors(out), seen

    own, own_blocks = run(False)
    routed, routed_blocks = run(True)
    for m in own_blocks:  # in call order (dicts keep insertion order)
        a, b = own_blocks[m], routed_blocks.get(m, [])
        if len(a) != len(b) or not all(_close(x, y, rtol, atol) for x, y in zip(a, b)):
            diff = max((float((x - y).abs().max()) for x, y in zip(a, b) if x.shape == y.shape
                        and x.is_floating_point()), default=float("nan"))
            cls = original_class(m)
            raise UnfaithfulAdapterError(
                f"block {names.get(m, '?')!r} ({cls.__module__}.{cls.__qualname__}): routed through its units it "
                f"computes another output than its own forward (largest difference {diff:.3g}). Its adapter does "
                f"not describe it; register one: unravel.register_adapter({cls.__name__}, ...)")
    if len(own) != len(routed) or not all(_close(x, y, rtol, atol) for x, y in zip(own, routed)):
        raise UnfaithfulAdapterError("every block agrees with its units, but the model's output routed through "
                                     "them differs: something between the blocks depends on how they are called.")
    if not own:
        raise ArgumentError(f"the model returned no tensor ({type(own).__name__}); nothing to compare.")
    return units
