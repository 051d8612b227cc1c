"""Removing units that are part of a transformers layer read from its forward: which sublayer
modules to replace so that their residual branches add nothing (the plan behind
:meth:`~unravel.adapters.Adapter.zero_plan`, which :func:`unravel.prune.remove` calls).

Private to the transformers adapter. It does not change the layer; the caller does.
"""

from __future__ import annotations

import ast

import torch

from ...errors import UnsupportedModelError
from .. import original_class
from ._graph import _nodes
from ._read import _DATA, _forward_of, _layer_idx, _source

#: Use this instead, in every message.
_LESION = "Use unravel.lesion.delete."


def _arity(block, attr: str) -> int | None:
    """How many values the layer's forward unpacks from ``self.<attr>(...)``, or None."""
    _, fn, _ = _forward_of(original_class(block))
    for node in ast.walk(ast.Module(body=list(_source(fn)), type_ignores=[])):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], (ast.Tuple, ast.List)) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name)
                and node.value.func.value.id == "self" and node.value.func.attr == attr):
            return len(node.targets[0].elts)
    return None


def _data_position(call) -> int | str:
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


def _zero(block, attr, outputs=None, index=0, data=0, passthrough=False) -> dict:
    return {"outputs": outputs, "index": index, "data": data, "passthrough": passthrough,
            "layer_idx": _layer_idx(block.get_submodule(attr))}


def zero_plan(block, prog, positions, what: str) -> dict[str, dict]:
    """attr -> the arguments of a zero module, for the units at ``positions`` of a layer whose
    program ``prog`` was read from its forward.

    Each residual branch is followed down from the sum through scalings, dropout and modules that
    keep a zero (:func:`_keeps_zero`) to the module that computes it: that one returns a zero;
    the modules feeding only it pass their input on; modules that units which stay use are kept."""
    keep = set()
    for p in range(len(prog.units)):
        shortcut, add, branches, outer = prog.units[p]
        nodes = _nodes(outer, add) + ([n for b in branches for n in _nodes(b, shortcut)] if p not in positions else [])
        keep |= {n.attr for n in nodes if n.op == "call"}
    plan: dict[str, dict] = {}
    feeding: dict[str, dict] = {}
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
                                            f"of a module. {_LESION}")
            if t.attr in keep or t.attr in plan:
                raise UnsupportedModelError(f"cannot remove {what} physically: its module {t.attr!r} also serves "
                                            f"units that stay. {_LESION}")
            outputs = None if index is None else max(_arity(block, t.attr) or 0, index + 1)
            plan[t.attr] = _zero(block, t.attr, outputs, index or 0, _data_position(t))
            for n in _nodes(t.src, shortcut):
                if n.op == "call" and n.attr not in keep:
                    feeding.setdefault(n.attr, _zero(block, n.attr, data=_data_position(n), passthrough=True))
    for attr, z in feeding.items():
        plan.setdefault(attr, z)
    return plan
