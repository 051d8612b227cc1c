"""Reading a ``transformers`` layer's ``forward`` source into residual units: module calls, sums,
scalings, dropout and conditions on the layer's own settings are interpreted symbolically, and the
units replay exactly those statements. A layer with any statement not understood is not matched.
Private: :mod:`unravel.adapters._transformers` builds its tables on it.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import inspect
import textwrap

import torch.nn.functional as F
from torch import nn

from ...errors import ArgumentError
from .. import original_class

_FRAME: contextvars.ContextVar = contextvars.ContextVar("unravel_transformers_frame", default=None)
_RESERVED = {"x", "position", "unit", "self"}  # names call_unit and compute functions take


# ------------------------------------------------------------------------------------------
# Calling a layer's submodules: caches refused once they hold tokens, side outputs kept


def _layer_idx(sub):
    for m in sub.modules():
        for name in ("layer_idx", "layer_id"):
            if isinstance(getattr(m, name, None), int):
                return getattr(m, name)
    return None


def _call(sub, *args, _side=None, **kwargs):
    """``sub(*args, **kwargs)``, refusing a cache that already holds tokens for ``sub``'s layer
    (a unit moved, deleted or run twice would read keys another network wrote); the result is
    kept for the layer's return value under ``_side`` (attention weights)."""
    for v in (*args, *kwargs.values()):
        if hasattr(v, "get_seq_length") and hasattr(v, "update"):
            idx = _layer_idx(sub)
            if idx is None or v.get_seq_length(idx) > 0:
                where = "" if idx is None else f" for layer {idx}"
                raise ArgumentError(
                    f"{type(sub).__name__} was called with a cache that already holds tokens{where}; inside an "
                    "intervention units run through a fresh cache only (a deleted or moved unit would read keys "
                    "another network wrote). Pass use_cache=False (model.generate(..., use_cache=False) "
                    "recomputes each step).")
    out = sub(*args, **kwargs)
    frame = _FRAME.get()
    if _side is not None and frame is not None:
        frame[_side] = out
    return out


def _renames(fn):
    """Keyword renames applied by ``transformers``' ``deprecate_kwarg`` decorators on ``fn``."""
    out = []
    while hasattr(fn, "__wrapped__"):
        try:
            free = inspect.getclosurevars(fn).nonlocals
        except (TypeError, ValueError):
            free = {}
        if "old_name" in free and "new_name" in free:
            out.append((free["old_name"], free["new_name"]))
        fn = fn.__wrapped__
    return out, fn


@functools.lru_cache(maxsize=None)
def _forward_of(cls):
    renames, fn = _renames(cls.forward)
    return renames, fn, inspect.signature(fn)


def _bind(m, args, kwargs) -> dict:
    """The layer's arguments by name, as its own ``forward`` would receive them."""
    renames, _, sig = _forward_of(original_class(m))
    kwargs = dict(kwargs)
    for old, new in renames:
        if old in kwargs:
            value = kwargs.pop(old)
            if new is not None:
                kwargs.setdefault(new, value)
    b = sig.bind(m, *args, **kwargs)
    b.apply_defaults()
    return dict(b.arguments)


def _route_frame(m, call_unit, calls, returns):
    """Run ``calls`` [(position, kwargs)] from the layer input, collecting side outputs."""
    frame = {}
    token = _FRAME.set(frame)
    try:
        x = calls[0]
        for position, kw in calls[1:]:
            x = call_unit(position, x, **kw)
    finally:
        _FRAME.reset(token)
    return returns(x, frame)


# ------------------------------------------------------------------------------------------
# Reading a forward: tensors as symbols, everything else as static values


class _Unreadable(Exception):
    pass


class _T:
    """A tensor of the forward: ``op`` in in/call/item/add/mul/dropout."""

    __slots__ = ("op", "src", "attr", "args", "kwargs", "star", "index", "factor")

    def __init__(self, op, src=None, attr=None, args=(), kwargs=None, star=False, index=0, factor=None):
        self.op, self.src, self.attr, self.args, self.kwargs = op, src, attr, args, kwargs or {}
        self.star, self.index, self.factor = star, index, factor

    def children(self):
        return list(self.args) if self.op == "add" else [] if self.op == "in" else [self.src]


class _S:
    """A non-tensor value: ``kind`` in param/const/self (a path of attributes of the layer)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value):
        self.kind, self.value = kind, value


_DATA = _S("data", None)
_UNARY = ("call", "item", "mul", "dropout")


@functools.lru_cache(maxsize=None)
def _source(fn):
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    node = tree.body[0]
    body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                             and isinstance(node.body[0].value, ast.Constant)) else node.body
    return body


class _Reader:
    """Interprets a layer's forward for one instance (conditions on its settings are evaluated)."""

    def __init__(self, m):
        self.m = m
        _, fn, sig = _forward_of(original_class(m))
        ps = list(sig.parameters.values())
        if len(ps) < 2 or ps[1].kind not in (ps[1].POSITIONAL_ONLY, ps[1].POSITIONAL_OR_KEYWORD):
            raise _Unreadable("forward takes no input tensor")
        self.input = ps[1].name
        self.params = {p.name: p for p in ps[2:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        self.star = next((p.name for p in ps if p.kind == p.VAR_KEYWORD), None)
        self.globals, self.fn = fn.__globals__, fn
        self.env, self.calls, self.assume, self.ret = {}, [], set(), None
        try:
            body = _source(fn)
        except (OSError, TypeError, SyntaxError) as e:
            raise _Unreadable(f"no source ({e})") from None
        self.block(body)
        if self.ret is None:
            raise _Unreadable("forward does not end in a return")

    # statements
    def block(self, body):
        for s in body:
            if self.ret is not None:
                return
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) or isinstance(s, ast.Pass):
                continue
            if isinstance(s, (ast.Assign, ast.AnnAssign)) and (not isinstance(s, ast.Assign) or len(s.targets) == 1):
                if s.value is None:
                    continue
                self.assign(s.targets[0] if isinstance(s, ast.Assign) else s.target, self.expr(s.value))
            elif isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
                self.env[s.target.id] = self.binop(self.expr(ast.Name(s.target.id, ast.Load())), s.op, self.expr(s.value))
            elif isinstance(s, ast.If):
                self.block(s.body if self.static(s.test) else s.orelse)
            elif isinstance(s, ast.Return) and s.value is not None:
                self.ret = self.expr(s.value)
            else:
                raise _Unreadable(f"statement {ast.unparse(s)[:60]!r}")

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            if isinstance(value, _T) and value.op == "call":
                parts = [_T("item", value, index=i) for i in range(len(target.elts))]
            elif isinstance(value, tuple) and len(value) == len(target.elts):
                parts = value
            else:
                raise _Unreadable("unpacking a value that is not a module's output")
            for t, v in zip(target.elts, parts):
                self.env[t.id] = v
        else:
            raise _Unreadable("assignment target")

    # expressions
    def expr(self, e):
        if isinstance(e, ast.Name):
            if e.id in self.env:
                return self.env[e.id]
            if e.id == self.input:
                return self.env.setdefault(e.id, _T("in"))
            if e.id in self.params:
                return _S("param", e.id)
            raise _Unreadable(f"name {e.id!r}")
        if isinstance(e, ast.Constant):
            return _S("const", e.value)
        if isinstance(e, ast.Attribute):
            base = self.expr(e.value) if not (isinstance(e.value, ast.Name) and e.value.id == "self") else _S("self", ())
            if isinstance(base, _S) and base.kind == "self":
                return _S("self", base.value + (e.attr,))
            raise _Unreadable(f"attribute {ast.unparse(e)!r}")
        if isinstance(e, ast.Tuple):
            return tuple(self.expr(x) for x in e.elts)
        if isinstance(e, ast.Subscript) and isinstance(e.slice, ast.Constant) and type(e.slice.value) is int:
            v = self.expr(e.value)  # outputs[0] of a module's tuple
            if isinstance(v, _T) and v.op == "call":
                return _T("item", v, index=e.slice.value)
        if isinstance(e, ast.BinOp):
            return self.binop(self.expr(e.left), e.op, self.expr(e.right))
        if isinstance(e, ast.IfExp):
            return self.expr(e.body if self.static(e.test) else e.orelse)
        if isinstance(e, ast.Call):
            return self.call(e)
        raise _Unreadable(f"expression {ast.unparse(e)[:60]!r}")

    def binop(self, a, op, b):
        if isinstance(op, ast.Add) and isinstance(a, _T) and isinstance(b, _T):
            return _T("add", args=(a, b))
        if isinstance(op, ast.Mult) and isinstance(a, _T) != isinstance(b, _T):
            t, f = (a, b) if isinstance(a, _T) else (b, a)
            return _T("mul", t, index=int(t is b), factor=f)
        raise _Unreadable("an operation other than a sum of tensors or a scaling")

    def call(self, e):
        f = e.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
            if not isinstance(getattr(self.m, f.attr, None), nn.Module):
                raise _Unreadable(f"self.{f.attr}(...) is not a submodule")
            args = [self.expr(a) for a in e.args]
            kwargs, star = {}, False
            for k in e.keywords:
                if k.arg is None:
                    if not (isinstance(k.value, ast.Name) and k.value.id == self.star):
                        raise _Unreadable("** of something other than the forward's **kwargs")
                    star = True
                else:
                    kwargs[k.arg] = self.expr(k.value)
            data = [v for v in (*args, *kwargs.values()) if isinstance(v, _T)]
            if len(data) != 1 or any(not isinstance(v, (_T, _S)) for v in (*args, *kwargs.values())):
                raise _Unreadable(f"self.{f.attr}(...) does not take exactly one tensor of the layer")
            t = _T("call", data[0], f.attr, [_DATA if isinstance(v, _T) else v for v in args],
                   {k: _DATA if isinstance(v, _T) else v for k, v in kwargs.items()}, star)
            self.calls.append(t)
            return t
        if self.resolve(f) is F.dropout and len(e.args) == 1:
            kw = {k.arg: k.value for k in e.keywords}
            if set(kw) != {"p", "training"} or ast.unparse(kw["training"]) != "self.training":
                raise _Unreadable("dropout called with other arguments")
            p = self.expr(kw["p"])
            return _T("dropout", self.expr(e.args[0]), factor=p)
        raise _Unreadable(f"call {ast.unparse(f)!r}")

    def resolve(self, e):
        if isinstance(e, ast.Name):
            return self.globals.get(e.id)
        if isinstance(e, ast.Attribute):
            return getattr(self.resolve(e.value), e.attr, None)
        return None

    # conditions: the layer's settings, and parameters compared with None (read as None)
    def static(self, e):
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.BoolOp):
            for v in e.values:
                r = self.static(v)
                if isinstance(e.op, ast.And) != bool(r):
                    return r
            return r
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            return not self.static(e.operand)
        if isinstance(e, ast.Compare) and len(e.ops) == 1:
            a, b = self.static(e.left), self.static(e.comparators[0])
            ops = {ast.Eq: lambda: a == b, ast.NotEq: lambda: a != b, ast.Is: lambda: a is b,
                   ast.IsNot: lambda: a is not b, ast.Lt: lambda: a < b, ast.Gt: lambda: a > b,
                   ast.LtE: lambda: a <= b, ast.GtE: lambda: a >= b, ast.In: lambda: a in b}
            if type(e.ops[0]) in ops:
                return ops[type(e.ops[0])]()
        if (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "hasattr" and len(e.args) == 2
                and ast.unparse(e.args[0]) == "self" and isinstance(e.args[1], ast.Constant)):
            return hasattr(self.m, e.args[1].value)
        v = self.expr(e)
        if isinstance(v, _S) and v.kind == "const":
            return v.value
        if isinstance(v, _S) and v.kind == "self" and "training" not in v.value:
            return _static_value(self.m, v)
        if isinstance(v, _S) and v.kind == "param" and self.params[v.value].default is None:
            self.assume.add(v.value)
            return None
        raise _Unreadable(f"condition {ast.unparse(e)[:60]!r}")


def _static_value(m, s):
    v = m
    for a in s.value:
        v = getattr(v, a)
    return v
