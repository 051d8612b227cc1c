"""Pruning: remove residual units physically, and choose which ones to remove under a budget.

A lesion (:func:`unravel.lesion.delete`) deletes units while it is active and leaves the model as
it was. :func:`remove` makes the deletion permanent on a *copy*: the copy holds fewer modules and
parameters and computes, bit for bit, what the model computes inside ``lesion.delete`` with the
same units. :func:`select` says which units to remove: it adds units to the removed set, one
step at a time, while the error (or loss) stays within a budget of the unlesioned model's, by one
of four strategies (a greedy search measured with the lesion-sweep engine, and three one-shot
rankings from the literature on layer pruning). :func:`heal` fine-tunes a pruned model briefly and
says what that cost.

How a removed unit is represented (it computes ``post(shortcut(x))``, see :mod:`unravel.units`):

- a block whose units are all removed and whose bypass is the identity (an identity shortcut
  and no ``post``: pre-activation units, pre-LN transformer layers) is dropped from its
  ``nn.Sequential`` or ``nn.ModuleList``, or replaced by an identity :class:`Bypass` where it
  is an attribute;
- a block whose bypass is not the identity is replaced by a :class:`Bypass` holding only the
  shortcut and ``post`` modules (a projection unit keeps its projection, a post-activation unit
  its ReLU, a DenseNet layer becomes :class:`ZeroChannels`);
- in a Hugging Face ``transformers`` model, a layer dropped from the model's layer list updates
  the config (``num_hidden_layers``/``n_layer``, per-layer lists such as ``layer_types``) and the
  layer indices that caches use (``layer_idx``), so that ``save_pretrained`` and
  ``from_pretrained`` give the smaller model. A unit that is part of a layer (its attention or
  MLP sublayer) is removed by replacing that sublayer's modules with a :class:`ZeroBranch`, so
  the residual branch adds nothing; such a model is saved with ``save_pretrained`` and loaded
  with :func:`from_pretrained` (the config lists the replaced sublayers).

What cannot be removed physically raises :class:`~unravel.errors.UnsupportedModelError` naming
the unit and why (a part of a block other than a ``transformers`` layer read from its forward; a
shortcut or ``post`` that is a function, not a module; a ``transformers`` layer whose deletion
leaves LayerNorms). ``lesion.delete`` handles all of them.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._heal import Healing, heal, quality
from ._utils import check_choice, check_int, eval_mode, logits_of, model_device
from .adapters import adapter_for, original_class
from .errors import ArgumentError, ArgumentTypeError, CheckpointError, InterventionError, UnsupportedModelError
from .interventions import active_interventions, intervene
from .lesion import resolve_units
from .units import ResidualUnit, _inplace, find_units

__all__ = ["remove", "select", "heal", "Healing", "quality", "Selection", "load", "from_pretrained", "Bypass", "BypassChain",
           "ZeroBranch", "ZeroChannels", "STRATEGIES", "COLUMNS"]

#: The strategies of :func:`select`.
STRATEGIES = ("greedy", "block_influence", "angular", "gradient_share")
#: The columns of :attr:`Selection.frame`, in order.
COLUMNS = ["strategy", "step", "removed", "units_removed", "error", "loss", "error_increase", "loss_increase",
           "within_budget", "names", "score"]

#: The config attribute of a pruned ``transformers`` model listing the sublayers replaced by
#: :class:`ZeroBranch` (unit names in the pruned model), read back by :func:`from_pretrained`.
HF_SUBLAYERS_KEY = "unravel_removed_sublayers"


# ------------------------------------------------------------------------------------------
# What a removed unit leaves


class Bypass(nn.Module):
    """What a removed unit computes: ``post(shortcut(x))`` (``None`` is the identity).

    Extra arguments (attention masks and the like, which the removed block took) are ignored.
    An in-place ``post`` after an identity shortcut runs on a copy, as in a lesion, so the input is
    never overwritten.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> b = Bypass(post=nn.ReLU())
    >>> b(torch.tensor([-1.0, 2.0]), attention_mask=None)
    tensor([0., 2.])
    """

    def __init__(self, shortcut: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.shortcut = shortcut
        self.post = post

    def forward(self, x, *args, **kwargs):
        s = x if self.shortcut is None else self.shortcut(x)
        if self.post is None:
            return s
        if s is x and _inplace(self.post):
            s = s.clone()
        return self.post(s)


class BypassChain(nn.Sequential):
    """The bypasses of a block's removed units in forward order (extra arguments ignored)."""

    def forward(self, x, *args, **kwargs):
        for m in self:
            x = m(x)
        return x


class ZeroChannels(nn.Module):
    """``concat(x, zeros)`` along dim 1: a removed DenseNet layer adds ``channels`` zero channels.

    Examples
    --------
    >>> import torch
    >>> ZeroChannels(2)(torch.ones(1, 1, 3)).shape
    torch.Size([1, 3, 3])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)

    def forward(self, x):
        return torch.cat([x, x.new_zeros((x.shape[0], self.channels) + tuple(x.shape[2:]))], dim=1)

    def extra_repr(self):
        return str(self.channels)


class ZeroBranch(nn.Module):
    """Stands in a ``transformers`` layer for a removed sublayer (attention or MLP): it returns a
    zero, so the layer's sum ``x + branch`` is ``x`` bit for bit.

    Parameters
    ----------
    outputs : int or None
        ``None``: the sublayer returned a tensor, the zero is returned; ``n``: it returned a tuple
        that the layer unpacks, an n-tuple is returned with the zero at ``index`` and ``None``
        elsewhere.
    index : int
    data : int or str
        Where the call passes its hidden states (a positional index or a keyword): the zero is
        a 0-dim tensor of their dtype and device (the sum broadcasts it).
    passthrough : bool
        For a module whose output only fed removed modules: return the hidden states unchanged.
    """

    def __init__(self, outputs: int | None = None, index: int = 0, data: int | str = 0, passthrough: bool = False):
        super().__init__()
        self.outputs, self.index, self.data, self.passthrough = outputs, index, data, passthrough

    def forward(self, *args, **kwargs):
        x = args[self.data] if isinstance(self.data, int) else kwargs[self.data]
        if self.passthrough:
            return x
        zero = x.new_zeros(())
        if self.outputs is None:
            return zero
        return tuple(zero if i == self.index else None for i in range(self.outputs))

    def extra_repr(self):
        return "passthrough" if self.passthrough else f"outputs={self.outputs}, index={self.index}"


def _as_module(fn, unit: ResidualUnit, what: str):
    """A unit's shortcut or post as a module a pruned model can hold."""
    if fn is None or isinstance(fn, nn.Module):
        return fn
    if fn in (F.relu, torch.relu):
        return nn.ReLU()
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(fn, "__name__", None) == "forward":
        return owner
    raise UnsupportedModelError(
        f"cannot remove unit {unit.index} ({unit.name}) physically: its {what} is a function ({fn!r}), not a "
        "module, so no smaller model can hold what its deletion leaves. Use unravel.lesion.delete, or an "
        f"adapter for {type(unit.module).__name__} whose {what} is a module.")


def _bypass(unit: ResidualUnit) -> nn.Module | None:
    """The module computing ``unit``'s bypass; ``None`` where it is the identity."""
    if unit.kind == "dense":
        from .models import ResidualBlock

        h = getattr(unit.module, "residual", None)
        if not isinstance(unit.module, ResidualBlock) or not isinstance(getattr(h, "out_channels", None), int):
            raise UnsupportedModelError(f"cannot remove dense unit {unit.index} ({unit.name}) physically: only "
                                        "unravel's DenseNet layers say how many channels they add. Use "
                                        "unravel.lesion.delete.")
        return ZeroChannels(h.out_channels)
    shortcut = _as_module(unit.parts.shortcut, unit, "shortcut")
    post = _as_module(unit.parts.post, unit, "post")
    if shortcut is None and post is None:
        return None
    return Bypass(shortcut, post)


def _is_identity(unit: ResidualUnit) -> bool:
    return unit.kind != "dense" and unit.parts.shortcut is None and unit.parts.post is None


# ------------------------------------------------------------------------------------------
# transformers: layer lists, configs, sublayers read from a layer's forward


def _is_hf(module: nn.Module) -> bool:
    return any(c.__module__.startswith("transformers.") for c in type(module).__mro__) and hasattr(module, "config")


def _is_hf_block(module: nn.Module) -> bool:
    return original_class(module).__module__.startswith("transformers.")


_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _layer_config(root: nn.Module, list_name: str, length: int):
    """(config, key) counting the layers of the ModuleList ``list_name``, or None."""
    parts = list_name.split(".") if list_name else []
    for i in range(len(parts) - 1, -1, -1):
        owner = root.get_submodule(".".join(parts[:i]))
        config = getattr(owner, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            continue
        for key in _COUNT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == length:
                return config, key
        return None
    return None


def _renumber(layer: nn.Module, old: int, new: int) -> None:
    for m in layer.modules():
        for attr in ("layer_idx", "layer_id"):
            v = getattr(m, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and v == old:
                setattr(m, attr, new)


def _read_program(block):
    from .adapters._transformers._program import _ReadAdapter, _program

    if not isinstance(adapter_for(block), _ReadAdapter):
        return None
    return _program(block)


def _arity(block, attr: str) -> int | None:
    """How many values the layer's forward unpacks from ``self.<attr>(...)``, or None."""
    from .adapters._transformers._read import _forward_of, _source

    _, fn, _ = _forward_of(original_class(block))
    for node in ast.walk(ast.Module(body=list(_source(fn)), type_ignores=[])):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], (ast.Tuple, ast.List)) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name)
                and node.value.func.value.id == "self" and node.value.func.attr == attr):
            return len(node.targets[0].elts)
    return None


def _data_position(call) -> int | str:
    from .adapters._transformers._read import _DATA

    for i, s in enumerate(call.args):
        if s is _DATA:
            return i
    for k, s in call.kwargs.items():
        if s is _DATA:
            return k
    raise UnsupportedModelError("a call without hidden states (a bug in the reader)")


def _keeps_zero(module) -> bool:
    """Whether a module without parameters or buffers maps a 0-dim zero to a 0-dim zero (dropout,
    ReLU, GELU): a zero passes through it, so it may stay after a removed sublayer."""
    if next(iter(module.parameters()), None) is not None or next(iter(module.buffers()), None) is not None:
        return False
    try:
        with torch.no_grad():
            out = module(torch.zeros(()))
    except Exception:  # noqa: BLE001 - any module that cannot take a 0-dim zero does not keep it
        return False
    return torch.is_tensor(out) and out.dim() == 0 and float(out) == 0.0


def _zero_plan(block, positions: Sequence[int], names: Sequence[str]) -> dict[str, ZeroBranch]:
    """attr -> ZeroBranch for the units at ``positions`` of a layer read from its forward.

    Each residual branch is followed down from the sum through scalings, dropout and modules that
    keep a zero (:func:`_keeps_zero`) to the module that computes it: that one returns a zero
    (:class:`ZeroBranch`); the modules feeding only it pass their input on; modules that units
    which stay use are kept."""
    from .adapters._transformers._program import _nodes

    prog = _read_program(block)
    what = f"{', '.join(names)} of {type(block).__name__}"
    if prog is None:
        raise UnsupportedModelError(
            f"cannot remove {what} physically: only whole layers, or sublayers of transformers layers that "
            "unravel reads from their forward, can be removed (this layer has a hand-written adapter, and its "
            "deletion is not the identity). Use unravel.lesion.delete.")
    keep = set()
    for p in range(len(prog.units)):
        shortcut, add, branches, outer = prog.units[p]
        nodes = _nodes(outer, add) + ([n for b in branches for n in _nodes(b, shortcut)] if p not in positions else [])
        keep |= {n.attr for n in nodes if n.op == "call"}
    plan: dict[str, ZeroBranch] = {}
    feeding: dict[str, ZeroBranch] = {}
    for p in positions:
        shortcut, add, branches, outer = prog.units[p]
        for b in branches:
            t, index = b, None
            while True:
                if t.op in ("dropout", "mul", "item"):
                    index = t.index if t.op == "item" else index
                    t = t.src
                elif t.op == "call" and index is None and _keeps_zero(block.get_submodule(t.attr)):
                    t = t.src
                else:
                    break
            if t.op != "call":
                raise UnsupportedModelError(f"cannot remove {what} physically: a residual branch is not the output "
                                            "of a module. Use unravel.lesion.delete.")
            if t.attr in keep or t.attr in plan:
                raise UnsupportedModelError(f"cannot remove {what} physically: its module {t.attr!r} also serves "
                                            "units that stay. Use unravel.lesion.delete.")
            outputs = None if index is None else max(_arity(block, t.attr) or 0, index + 1)
            plan[t.attr] = ZeroBranch(outputs, index or 0, _data_position(t))
            for n in _nodes(t.src, shortcut):
                if n.op == "call" and n.attr not in keep:
                    feeding.setdefault(n.attr, ZeroBranch(data=_data_position(n), passthrough=True))
    for attr, z in feeding.items():
        plan.setdefault(attr, z)
    return plan


def _zero_sublayers(block, positions, names):
    from .adapters._transformers._read import _layer_idx

    for attr, z in _zero_plan(block, positions, names).items():
        idx = _layer_idx(block.get_submodule(attr))
        if idx is not None:  # caches are checked by the layer index of what they are passed to
            z.layer_idx = idx
        owner, _, name = attr.rpartition(".")  # a submodule read through: "attention.output.dense"
        setattr(block.get_submodule(owner) if owner else block, name, z)


# ------------------------------------------------------------------------------------------
# remove


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
        if _is_hf_block(block):
            listed = isinstance(parent, nn.ModuleList) and _layer_config(new, parent_name, len(parent)) is not None
            if identity and (listed or isinstance(parent, nn.Sequential)):
                drops.setdefault(parent_name, []).append(key)
                if listed:
                    layer_lists.add(parent_name)
            else:
                _zero_plan(block, [u.position for u in us], unit_names)  # raises what cannot be done
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
        _zero_sublayers(block, positions, unit_names)
    for parent, key, replacement in replaces:
        parent._modules[key] = replacement
    for parent_name, keys in drops.items():
        parent = new.get_submodule(parent_name) if parent_name else new
        old = list(parent._modules.items())
        counted = _layer_config(new, parent_name, len(old)) if parent_name in layer_lists else None
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
                _renumber(m, i, j)
    if root_replacement is not None:
        new = root_replacement
    if zeros:
        _record_sublayers(new, [(b, p) for b, p, _ in zeros])
    if example_inputs is not None:
        _check_equal(model, new, chosen, example_inputs)
    return new


def _record_sublayers(new, zeroed):
    """List the ZeroBranch sublayers of a transformers model in its config (by unit name)."""
    config = getattr(new, "config", None)
    if config is None:
        return
    index = {u.key: u.name for u in find_units(new)}
    recorded = list(getattr(config, HF_SUBLAYERS_KEY, None) or [])
    for block, positions in zeroed:
        for p in positions:
            name = index.get((id(block), p))
            if name is not None and name not in recorded:
                recorded.append(name)
    setattr(config, HF_SUBLAYERS_KEY, recorded)


def _run(model, inputs):
    with eval_mode(model), torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
    return logits_of(out) if not torch.is_tensor(out) else out


def _check_equal(model, new, chosen, inputs):
    from .lesion import delete

    with delete(model, chosen):
        want = _run(model, inputs)
    got = _run(new, inputs)
    if want.shape != got.shape or not torch.equal(want, got):
        diff = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
        raise ArgumentError(f"the pruned model does not compute what lesion.delete computes on example_inputs (largest "
                            f"difference {diff:.3g}); a setting that depends on a layer's index, or an adapter that "
                            "does not describe its block, can cause this. Use unravel.lesion.delete.")


# ------------------------------------------------------------------------------------------
# Loading pruned models


def load(path, model: nn.Module, map_location="cpu") -> nn.Module:
    """A pruned model saved by ``unravel prune`` (or :func:`unravel.train.save` with
    ``meta={"removed": [unit names]}``): ``model`` is the unpruned architecture (its weights do
    not matter); the units named in the checkpoint are removed from it and the weights loaded.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint, names no removed units, or does not fit.

    Examples
    --------
    >>> import os, tempfile, unravel
    >>> net = unravel.models.resmlp(4, 2, width=8, depth=3)
    >>> small = unravel.prune.remove(net, [1])
    >>> path = unravel.train.save(small, os.path.join(tempfile.mkdtemp(), "p.pt"), {"removed": ["blocks.1"]})
    >>> back = unravel.prune.load(path, unravel.models.resmlp(4, 2, width=8, depth=3))
    >>> len(unravel.find_units(back))
    2
    """
    from . import train

    ckpt = train.load(path, map_location=map_location)
    removed = (ckpt.get("meta") or {}).get("removed")
    if not isinstance(removed, (list, tuple)):
        raise CheckpointError(f"{str(path)!r} is not a pruned checkpoint: its meta has no 'removed' list of unit names.")
    try:
        pruned = remove(model, list(removed))
    except ArgumentError as e:
        raise CheckpointError(f"{str(path)!r} removes units that {type(model).__name__} does not have: {e}") from None
    try:
        pruned.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {type(model).__name__} without "
                              f"{', '.join(removed)}: {str(e).splitlines()[0]}") from None
    return pruned


def from_pretrained(path, model_class=None, **kwargs) -> nn.Module:
    """Load a pruned ``transformers`` model saved with ``save_pretrained``.

    A model whose removals dropped whole layers loads with ``transformers``' own
    ``from_pretrained``; one with removed sublayers (listed in its config under
    ``unravel_removed_sublayers``) loads here: the model is built and its sublayers replaced by
    :class:`ZeroBranch` before the weights are loaded.

    Parameters
    ----------
    path : str or Path
        A folder written by ``save_pretrained``.
    model_class : type, optional
        The ``transformers`` class to load with; default the config's first architecture.
    **kwargs
        Passed on to ``from_pretrained``.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    if model_class is None:
        archs = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, archs[0], None) if archs else None
        if model_class is None:
            raise ArgumentError(f"{str(path)!r}: the config names no architecture; pass model_class=...")
    names = list(getattr(config, HF_SUBLAYERS_KEY, None) or [])
    if not names:
        return model_class.from_pretrained(path, **kwargs)
    # the removed sublayers' weights are missing: transformers initialises them, then they go
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = model_class.from_pretrained(path, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    units = resolve_units(find_units(model), names)
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in units:
        hosts.setdefault(u.module, []).append(u)
    for block, us in hosts.items():
        _zero_sublayers(block, [u.position for u in us], [u.name for u in us])
    return model.eval()


# ------------------------------------------------------------------------------------------
# select: which units to remove under a budget


@dataclasses.dataclass
class Selection:
    """What :func:`select` chose, and the quality it measured on the way.

    Attributes
    ----------
    strategy, metric : str
    budget : float
        The largest increase of ``metric`` over the unlesioned model allowed.
    units : list of int
        The chosen units (indices of the model's units), in the order they were added.
    names : list of str
        Their names.
    frame : pandas.DataFrame
        One row per step (:data:`COLUMNS`): step 0 is the unlesioned model; ``removed`` lists the
        units removed at that step (comma-separated indices), ``within_budget`` whether its
        increase of ``metric`` is within the budget, ``score`` the strategy's score of the
        candidate added at that step (NaN for greedy).
    baseline : dict
        ``error`` and ``loss`` of the unlesioned model.
    scores : dict or None
        Ranking strategies: candidate (a tuple of unit indices) -> score; ``"angular"``: the
        block chosen at each step (a tuple of unit indices) -> its angular distance.
    """

    strategy: str
    metric: str
    budget: float
    units: list
    names: list
    frame: Any
    baseline: dict
    scores: dict | None = None

    def remove(self, model: nn.Module, **kwargs) -> nn.Module:
        """``unravel.prune.remove(model, self.units)``."""
        return remove(model, self.units, **kwargs)

    def __repr__(self):
        return (f"Selection(strategy={self.strategy!r}, metric={self.metric!r}, budget={self.budget:g}, "
                f"units={self.units})")


def _groups(units, group, candidates):
    """Candidates as contiguous tuples of unit indices (one unit, or all units of one module)."""
    check_choice("group", group, ("unit", "module"))
    allowed = None if candidates is None else {u.index for u in resolve_units(units, candidates)}
    if group == "unit":
        groups = [(u.index,) for u in units]
    else:
        by_module: dict[int, list[int]] = {}
        for u in units:
            by_module.setdefault(id(u.module), []).append(u.index)
        groups = [tuple(v) for v in by_module.values()]
        for g in groups:
            if list(g) != list(range(g[0], g[0] + len(g))):
                raise ArgumentError("group='module' needs each module's units to run one after another.")
    if allowed is not None:
        groups = [g for g in groups if set(g) <= allowed]
    if not groups:
        raise ArgumentError("no candidate to remove: candidates= names no unit (with group='module': no module all "
                            "of whose units are candidates).")
    return groups


def _summed_loss(loss_fn, next_token, ignore_index=-100):
    """``(output, targets) -> summed loss`` over the scored items (as the sweep engine scores)."""

    def loss(out, y):
        logits = logits_of(out)
        if next_token:
            logits, y = logits[:, :-1], y[:, 1:]
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        keep = y != ignore_index
        return loss_fn(logits[keep], y[keep], reduction="sum")

    return loss


def _vectors(t, y, last_token):
    """The items a similarity is averaged over: tokens ``[B, T, ...] -> [B*T, D]`` (or the last
    token) where the targets are per token, else examples flattened ``[B, -1]``."""
    if y.dim() >= 2 and t.dim() >= 3 and tuple(t.shape[:2]) == tuple(y.shape[:2]):
        t = t[:, -1] if last_token else t
        return t.reshape(-1, t.shape[-1]) if not last_token else t.reshape(t.shape[0], -1)
    return t.reshape(t.shape[0], -1)


def _cos(a, b, y, last_token=False):
    return F.cosine_similarity(_vectors(a, y, last_token).double(), _vectors(b, y, last_token).double(), dim=-1)


def _states(model, units, groups, x):
    """One forward (eval, no gradients): per group its input, output and bypass of the input, and
    whether each group's input is the previous group's output."""
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}

    def compute(unit, xin, position, **kw):
        y = unit.forward(xin, **kw)
        ins[position.index], outs[position.index] = xin, y
        return y

    with intervene(model, compute=compute):
        model(x)
    missing = [u.name for u in units if u.index not in ins]
    if missing:
        raise ArgumentError(f"units {missing} did not run in the forward pass.")
    first = [ins[g[0]] for g in groups]
    last = [outs[g[-1]] for g in groups]
    chained = [all(ins[g[i + 1]] is outs[g[i]] for i in range(len(g) - 1)) for g in groups]
    linked = [chained[i] and chained[i + 1] and ins[groups[i + 1][0]] is outs[groups[i][-1]]
              for i in range(len(groups) - 1)]
    return first, last, chained, linked


def _bypass_group(units, g, x):
    for i in g:
        x = units[i].bypass(x)
    return x


def _block_influence(model, units, groups, loader, device):
    """Per group: the mean over items of ``1 - cos(bypass(x), y)``."""
    total = np.zeros(len(groups))
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        first, last, _, _ = _states(model, units, groups, x)
        n = None
        for j, g in enumerate(groups):
            c = _cos(_bypass_group(units, g, first[j]), last[j], y)
            total[j] += float((1 - c).sum())
            n = c.numel()
        count += n
    return total / count


def _angular(model, units, groups, loader, device):
    """``D[l, n-1]``: the mean over items (the last token where the targets are per token) of the
    angular distance ``arccos(cos(bypass_{l..l+n-1}(x_l), x_{l+n})) / pi``; NaN where the groups
    ``l..l+n-1`` do not follow one another directly."""
    G = len(groups)
    total = np.zeros((G, G))
    valid = np.ones((G, G), dtype=bool)
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        first, last, chained, linked = _states(model, units, groups, x)
        n_items = _vectors(first[0], y, True).shape[0]
        for l in range(G):
            b = first[l]
            for n in range(1, G - l + 1):
                j = l + n - 1
                if not chained[j] or (n > 1 and not linked[j - 1]):
                    valid[l, n - 1:] = False
                    break
                b = _bypass_group(units, groups[j], b)
                c = _cos(b, last[j], y, last_token=True).clamp(-1.0, 1.0)
                total[l, n - 1] += float((torch.arccos(c) / math.pi).sum())
        count += n_items
    for l in range(G):
        valid[l, G - l:] = False
    out = total / count
    out[~valid] = np.nan
    return out


def _gradient_share(model, units, groups, loader, device, loss_fn, next_token):
    """Per group: ``||G - S|| / (||G - S|| + ||S||)`` over the data, where ``G`` is the loss
    gradient at the group's input and ``S`` the part of it carried by the path that skips every
    residual branch of the group (see :func:`select`)."""
    from .attribution._record import analysis_mode, record

    loss = _summed_loss(loss_fn, next_token)
    end = {g[-1]: j for j, g in enumerate(groups)}
    start = {g[0]: j for j, g in enumerate(groups)}
    R, S = np.zeros(len(groups)), np.zeros(len(groups))

    def vjp(out, inp, g):
        got, = torch.autograd.grad(out, inp, g, retain_graph=True, allow_unused=True)
        return torch.zeros_like(inp) if got is None else got

    with analysis_mode(model, "eval"):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            records, _, L = record(model, units, (x,), y, loss)
            g = vjp(L, records[-1].y_out, None)
            skip = None
            for l in range(len(units) - 1, -1, -1):
                rec = records[l]
                u = rec.unit.index  # groups hold unit indices; records are in the order the units ran
                if u in end:
                    skip = g
                gz = g if rec.y is rec.zl else vjp(rec.y, rec.zl, g)
                gx = vjp(rec.z, rec.x, gz)
                if skip is not None:
                    sz = skip if rec.y is rec.zl else vjp(rec.y, rec.zl, skip)
                    skip = vjp(rec.s, rec.x, sz) if rec.s is not None else torch.zeros_like(rec.x)
                if u in start:
                    j = start[u]
                    R[j] += float((gx - skip).double().pow(2).sum())
                    S[j] += float(skip.double().pow(2).sum())
                    skip = None
                g = gx
                if l > 0 and rec.x_in is not records[l - 1].y_out:
                    g = vjp(rec.x_in, records[l - 1].y_out, g)
                    if skip is not None:
                        skip = vjp(rec.x_in, records[l - 1].y_out, skip)
            del records, L
    r, s = np.sqrt(R), np.sqrt(S)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r + s > 0, r / (r + s), 0.0)


def select(model: nn.Module, data, *, budget: float, strategy: str = "greedy", metric: str = "error",
           group: str = "unit", candidates=None, max_units: int | None = None, batch_size: int = 256,
           device=None, loss=None, next_token: bool = False, max_rows: int = 2048, split: str = "test",
           progress: bool = False) -> Selection:
    """Which units to remove while ``metric`` stays within ``budget`` of the unlesioned model's.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; never changed.
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        Where quality is measured (a DataSplit gives its ``split``). Selecting on the data you
        report on is optimistic: hold out a split for selection where you can.
    budget : float
        The largest increase of ``metric`` over the unlesioned model allowed (absolute: 0.01 is
        one percentage point of error, or 0.01 nats of mean loss).
    strategy : {"greedy", "block_influence", "angular", "gradient_share"}
        ``"greedy"``: at each step, every remaining candidate is removed in addition to those
        chosen so far and the one with the smallest ``metric`` (ties: the other metric, then the
        lower index) is added; it stops at the first step over the budget. Each step is one lesion
        sweep of the fast engine (:mod:`unravel.sweeps`), so it costs about ``n^2 / 2`` lesioned
        evaluations for ``n`` candidates.

        ``"block_influence"`` (ShortGPT [1]_): each candidate's ``BI = 1 - E[cos(a, y)]`` on the
        unlesioned model, where ``y`` is the candidate's output, ``a`` is what its removal leaves
        in its place, ``post(shortcut(x))`` of its input ``x`` (``x`` itself for identity units,
        as in the paper's pre-LN layers), and the mean runs over tokens where the targets are
        per token (each token's hidden vector) and over examples otherwise (the flattened
        state). Candidates are removed lowest BI first.

        ``"angular"`` (Gromov et al. [2]_): the angular distance ``arccos(cos(a, y)) / pi``
        between the state before a block of ``n`` consecutive candidates (carried through their
        bypasses, as above) and the state after it, averaged over examples (the last token of
        each sequence where the targets are per token, as in the paper). Step ``n`` removes the
        block of ``n`` candidates with the smallest distance (so the removed sets need not
        grow one unit at a time); only candidates that follow one another directly form blocks.

        ``"gradient_share"``: each candidate's share of the loss gradient that passes through its
        residual branches. With ``G`` the gradient of the summed loss with respect to the
        candidate's input (over all the data) and ``S`` the part of ``G`` carried by the path
        through the candidate's shortcuts only (the length-0 term of the exact path
        decomposition, :func:`unravel.attribution.path_length_gradients`, restricted to the
        candidate), the share is ``||G - S|| / (||G - S|| + ||S||)``, in [0, 1]; lowest first. A
        plain unit (no shortcut) has share 1.

        The ranking strategies score once, on the unlesioned model; step ``k`` removes the ``k``
        lowest-scored candidates, every ``k`` is evaluated, and the chosen set is the largest
        one within the budget.
    metric : {"error", "loss"}
    group : {"unit", "module"}
        Candidates are single units, or all units of one module (a transformer layer's attention
        and MLP together: the layers of ShortGPT and Gromov et al.).
    candidates : units, optional
        Only these may be removed (indices, names or units); default all.
    max_units : int, optional
        At most this many candidates removed.
    batch_size, device, loss, next_token, max_rows
        As in :func:`unravel.lesion.delete_each` (``loss(logits, targets, reduction=...)``;
        ``next_token`` for causal language models).
    split : {"test", "train"}
        The split of a DataSplit to measure on.
    progress : bool
        A tqdm bar over steps.

    Returns
    -------
    Selection
        ``units`` (chosen, in order), ``frame`` (quality against units removed) and more.

    Raises
    ------
    ArgumentError
        For a negative budget, an unknown strategy, metric or group, or unknown candidates.
    InterventionError
        Inside a lesion of ``model``.

    References
    ----------
    .. [1] X. Men et al. "ShortGPT: Layers in Large Language Models are More Redundant Than You
       Expect." arXiv:2403.03853, 2024.
    .. [2] A. Gromov et al. "The Unreasonable Ineffectiveness of the Deeper Layers."
       arXiv:2403.17887, 2024.

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> data = unravel.data.synthetic(120, input_shape=(8,), num_classes=3)
    >>> net = unravel.models.resmlp(8, 3, width=8, depth=4)
    >>> sel = unravel.prune.select(net, data, budget=0.05, strategy="block_influence")
    >>> sel.frame.columns.tolist()[:6]
    ['strategy', 'step', 'removed', 'units_removed', 'error', 'loss']
    >>> sel.frame.step.tolist()
    [0, 1, 2, 3, 4]
    >>> small = sel.remove(net)  # unravel.prune.remove(net, sel.units)
    >>> size = lambda m: sum(p.numel() for p in m.parameters())
    >>> len(sel.units) > 0 and size(small) < size(net)
    True
    """
    import pandas as pd

    from ._engine import Engine, Tally, Variant, make_scorer
    from .train import as_loader

    check_choice("strategy", strategy, STRATEGIES)
    check_choice("metric", metric, ("error", "loss"))
    check_choice("split", split, ("test", "train"))
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating, np.integer)) or not budget >= 0:
        raise ArgumentError(f"budget={budget!r} must be a number >= 0 (the increase of {metric} allowed).")
    budget = float(budget)
    max_units = check_int("max_units", max_units, 1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, 1)
    max_rows = check_int("max_rows", max_rows, 1)
    if not isinstance(next_token, bool):
        raise ArgumentError(f"next_token={next_token!r} must be True or False.")
    units = find_units(model)
    if active_interventions(units):
        raise InterventionError("select() cannot run inside delete()/reorder()/intervene() on the same model: its "
                                "steps are lesions of their own. Leave the lesion first.")
    groups = _groups(units, group, candidates)
    limit = len(groups) if max_units is None else min(max_units, len(groups))
    loader = as_loader(data, batch_size, split=split)
    device = model_device(model, device)
    loss_fn = loss or F.cross_entropy
    engine = Engine(model, units, loader, device, make_scorer(loss_fn, next_token), max_rows)
    other = "loss" if metric == "error" else "error"
    from tqdm.auto import tqdm

    def evaluate(sets, base=()):
        variants = [Variant(id=i, k=len(s), deleted=tuple(sorted(s))) for i, s in enumerate(sets)]
        tallies = engine.run(variants, None, base)
        return [tallies[v.id].metrics() for v in variants]

    rows = []

    def row(step, removed, m, score, added=()):
        rows.append(dict(strategy=strategy, step=step, removed=",".join(map(str, sorted(removed))),
                         units_removed=len(removed), error=m["error"], loss=m["loss"],
                         error_increase=m["error"] - base["error"], loss_increase=m["loss"] - base["loss"],
                         within_budget=bool(m[metric] - base[metric] <= budget + 1e-12),
                         names=",".join(units[i].name for i in sorted(removed)), score=score))
        return rows[-1]

    scores = None
    with eval_mode(model), torch.no_grad():
        base_tally = Tally()
        engine.run([], base_tally)
        base = base_tally.metrics()
        row(0, [], base, float("nan"))
        bar = tqdm(total=limit, desc=f"select ({strategy})", unit="step", disable=not progress, leave=False)
        chosen: list[int] = []
        if strategy == "greedy":
            remaining = list(groups)
            while remaining and len(rows) - 1 < limit:
                # every candidate resumes from the states of the network without the chosen units
                got = evaluate([chosen + list(g) for g in remaining], base=chosen)
                best = min(range(len(remaining)), key=lambda i: (got[i][metric], got[i][other], remaining[i]))
                r = row(len(rows), chosen + list(remaining[best]), got[best], float("nan"))
                bar.update(1)
                if not r["within_budget"]:
                    break
                chosen += list(remaining.pop(best))
        elif strategy == "angular":
            D = _angular(model, units, groups, loader, device)
            scores = {}
            blocks = []
            for n in range(1, limit + 1):
                column = D[:, n - 1]
                if np.all(np.isnan(column)):
                    break
                l = int(np.nanargmin(column))
                block = [i for g in groups[l:l + n] for i in g]
                blocks.append((block, float(column[l])))
                scores[tuple(block)] = float(column[l])
            got = evaluate([b for b, _ in blocks]) if blocks else []
            for (block, d), m in zip(blocks, got):
                r = row(len(rows), block, m, d)
                if r["within_budget"]:
                    chosen = block
            bar.update(len(blocks))
        else:
            if strategy == "block_influence":
                s = _block_influence(model, units, groups, loader, device)
            else:
                with torch.enable_grad():
                    s = _gradient_share(model, units, groups, loader, device, loss_fn, next_token)
            scores = {g: float(v) for g, v in zip(groups, s)}
            order = sorted(range(len(groups)), key=lambda j: (s[j], groups[j]))[:limit]
            prefixes = [[i for j in order[:k] for i in groups[j]] for k in range(1, limit + 1)]
            got = evaluate(prefixes)
            for k, (p, m) in enumerate(zip(prefixes, got), start=1):
                r = row(k, p, m, float(s[order[k - 1]]))
                if r["within_budget"]:
                    chosen = p
            bar.update(limit)
        bar.close()
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return Selection(strategy, metric, budget, list(chosen), [units[i].name for i in chosen], frame,
                     {"error": base["error"], "loss": base["loss"]}, scores)
