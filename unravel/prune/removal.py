"""Removing residual units physically: :func:`remove` builds a smaller copy of a model that
computes, bit for bit, what the model computes inside ``lesion.delete`` with the same units.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .._utils import eval_mode, logits_of
from ..errors import ArgumentError, ArgumentTypeError, InterventionError, UnsupportedModelError
from ..interventions import active_interventions
from ..units import ResidualUnit, find_units, resolve_units
from .hf import is_hf_block, layer_config, record_sublayers, renumber, zero_plan, zero_sublayers
from .modules import Bypass, BypassChain, _bypass, _is_identity

__all__ = ["remove"]


def _parent(root: nn.Module, name: str):
    if "." in name:
        head, key = name.rsplit(".", 1)
        return root.get_submodule(head), key, head
    return root, name, ""


def remove(model: nn.Module, units, *, example_inputs=None) -> nn.Module:
    """A smaller copy of ``model`` without ``units``, computing what ``lesion.delete`` computes.

    Parameters
    ----------
    model : nn.Module
        Never changed (the result is built from a ``copy.deepcopy``).
    units : int, str, ResidualUnit or iterable of them
        The units to remove, by index, name, or as units of ``model``.
    example_inputs : tensor, tuple of tensors or dict of keyword inputs, optional
        With it, the result's output on these inputs (eval mode, no gradients) is checked to equal
        ``model``'s inside ``lesion.delete(model, units)`` bit for bit (``torch.equal``).

    Returns
    -------
    nn.Module
        The pruned copy, in the same train/eval mode. Every removed unit is gone from
        ``find_units`` where its whole block was removed (a removed ``transformers`` sublayer
        leaves a unit whose residual branch is a :class:`ZeroBranch`).

    Raises
    ------
    ArgumentError
        For unknown units (the message lists the valid range and names), or when the check on
        ``example_inputs`` fails.
    InterventionError
        Inside a lesion or intervention of ``model``.
    UnsupportedModelError
        For a unit that cannot be removed physically (the message says why; ``lesion.delete``
        works).

    Notes
    -----
    See the module docstring for what takes a removed unit's place. In a ``transformers`` model
    whose layer is dropped, the config's layer count and per-layer lists (config entries whose
    name holds ``"layer"`` and whose length is the number of layers) shrink, and ``layer_idx``
    attributes are renumbered; settings that depend on a layer's index (GPT-2's
    ``scale_attn_by_inverse_layer_idx``) then change the computation, which ``example_inputs``
    would catch. Generation with a cache after removing an attention sublayer (not a whole layer)
    is not supported: that layer's cache slot stays empty.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.preact_resnet_cifar(14, width=4).eval()
    >>> small = unravel.prune.remove(net, [0, "stage3.1"])
    >>> x = torch.randn(2, 3, 32, 32)
    >>> with unravel.lesion.delete(net, [0, "stage3.1"]):
    ...     torch.equal(small(x), net(x))
    True
    >>> len(unravel.find_units(small)), len(unravel.find_units(net))
    (4, 6)
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"remove() takes a torch.nn.Module, got {type(model).__name__}.")
    found = find_units(model)
    if active_interventions(found):
        raise InterventionError("remove() cannot run inside delete()/reorder()/intervene() on the same model: the "
                                "copy would hold the unlesioned network. Leave the lesion first, or name every "
                                "unit to remove.")
    chosen = resolve_units(found, units)
    memo: dict[int, Any] = {}
    new = copy.deepcopy(model, memo)
    by_key = {u.key: u for u in find_units(new)}
    targets = [by_key[(id(memo[id(u.module)]), u.position)] for u in chosen]
    all_units = list(by_key.values())
    names = {}
    for n, m in new.named_modules(remove_duplicate=False):
        names.setdefault(m, n)
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in targets:
        hosts.setdefault(u.module, []).append(u)
    drops: dict[str, list[str]] = {}         # list or sequential name -> keys of the blocks dropped
    layer_lists: set[str] = set()             # transformers layer lists (config and layer_idx follow)
    replaces: list[tuple[nn.Module, str, nn.Module]] = []
    zeros: list[tuple[nn.Module, list[int], list[str]]] = []
    root_replacement = None
    for block, us in hosts.items():
        us = sorted(us, key=lambda u: u.position)
        whole = len(us) == sum(1 for u in all_units if u.module is block)
        name = names[block]
        parent, key, parent_name = _parent(new, name) if name else (None, "", "")
        identity = whole and all(_is_identity(u) for u in us)
        unit_names = [u.name for u in us]
        if is_hf_block(block):
            listed = isinstance(parent, nn.ModuleList) and layer_config(new, parent_name, len(parent)) is not None
            if identity and (listed or isinstance(parent, nn.Sequential)):
                drops.setdefault(parent_name, []).append(key)
                if listed:
                    layer_lists.add(parent_name)
            else:
                zero_plan(block, [u.position for u in us], unit_names)  # raises what cannot be done
                zeros.append((block, [u.position for u in us], unit_names))
            continue
        if not whole:
            others = [u.name for u in all_units if u.module is block and u not in us]
            raise UnsupportedModelError(
                f"cannot remove {', '.join(unit_names)} physically: {'it is' if len(us) == 1 else 'they are'} part "
                f"of {type(block).__name__} {name!r}, which also holds {', '.join(others)}; only whole blocks (and "
                "sublayers of transformers layers) can be removed. Remove every unit of the block, or use "
                "unravel.lesion.delete.")
        pieces = [b for b in (_bypass(u) for u in us) if b is not None]
        if parent is None:
            root_replacement = BypassChain(*pieces) if len(pieces) > 1 else pieces[0] if pieces else Bypass()
        elif not pieces and isinstance(parent, (nn.Sequential, nn.ModuleList)):
            drops.setdefault(parent_name, []).append(key)
        else:
            replacement = Bypass() if not pieces else pieces[0] if len(pieces) == 1 else BypassChain(*pieces)
            replaces.append((parent, key, replacement))

    for block, positions, unit_names in zeros:
        zero_sublayers(block, positions, unit_names)
    for parent, key, replacement in replaces:
        parent._modules[key] = replacement
    for parent_name, keys in drops.items():
        parent = new.get_submodule(parent_name) if parent_name else new
        old = list(parent._modules.items())
        counted = layer_config(new, parent_name, len(old)) if parent_name in layer_lists else None
        kept = [(i, k, m) for i, (k, m) in enumerate(old) if k not in keys]
        numbered = all(k == str(i) for i, (k, _) in enumerate(old))
        parent._modules = OrderedDict((str(j) if numbered else k, m) for j, (_, k, m) in enumerate(kept))
        if counted is not None:
            config, count_key = counted
            setattr(config, count_key, len(kept))
            kept_index = [i for i, _, _ in kept]
            for k, v in list(config.to_dict().items()):
                if "layer" in k and isinstance(v, list) and len(v) == len(old) and hasattr(config, k):
                    setattr(config, k, [v[i] for i in kept_index])
            for j, (i, _, m) in enumerate(kept):
                renumber(m, i, j)
    if root_replacement is not None:
        new = root_replacement
    if zeros:
        record_sublayers(new, [(b, p) for b, p, _ in zeros])
    if example_inputs is not None:
        _check_equal(model, new, chosen, example_inputs)
    return new




def _run(model, inputs):
    with eval_mode(model), torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
    return logits_of(out) if not torch.is_tensor(out) else out


def _check_equal(model, new, chosen, inputs):
    from ..lesion import delete

    with delete(model, chosen):
        want = _run(model, inputs)
    got = _run(new, inputs)
    if want.shape != got.shape or not torch.equal(want, got):
        diff = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
        raise ArgumentError(f"the pruned model does not compute what lesion.delete computes on example_inputs (largest "
                            f"difference {diff:.3g}); a setting that depends on a layer's index, or an adapter that "
                            "does not describe its block, can cause this. Use unravel.lesion.delete.")
