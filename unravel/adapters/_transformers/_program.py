"""From a read ``forward`` to residual units: the program of a layer (which statements form each
unit's residual branch, shortcut and post) and the adapter that replays it. Private: part of
:mod:`unravel.adapters._transformers`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref

import torch.nn.functional as F
from torch import nn

from ...errors import ArgumentError, UnsupportedModelError
from ...units import UnitParts
from .. import Adapter, original_class
from ._read import (_DATA, _RESERVED, _S, _T, _UNARY, _bind, _call, _Reader, _route_frame, _static_value,
                    _Unreadable)

_FRAME: contextvars.ContextVar = contextvars.ContextVar("unravel_transformers_frame", default=None)


# ------------------------------------------------------------------------------------------
# From the read forward to units


def _reaches(n, t):
    """Whether every path down from ``n`` ends at ``t`` (n is a function of t alone)."""
    if n is t:
        return True
    if n.op == "in":
        return False
    return all(_reaches(c, t) for c in n.children())


def _is_state(t):
    while t.op in _UNARY:
        t = t.src
    return t.op in ("in", "add")


def _split(add):
    """(shortcut, branches) of a sum: the one term every other term is a function of."""
    terms = list(add.args)
    while True:
        found = [t for t in terms if _is_state(t) and all(_reaches(o, t) for o in terms if o is not t)]
        if len(found) == 1:
            return found[0], [o for o in terms if o is not found[0]]
        i = next((i for i, t in enumerate(terms) if t.op == "add"), None)
        if i is None:
            raise _Unreadable("a sum whose terms are not a shortcut and branches reading it")
        terms[i:i + 1] = list(terms[i].args)


def _chain(out):
    """[(shortcut, sum, branches, outer)] in forward order; ``outer`` applies post to ``sum``."""
    units, e = [], out
    while e.op != "in":
        outer = e
        while e.op in _UNARY:
            e = e.src
        if e.op != "add":
            raise _Unreadable("the output is not a sum of a shortcut and residual branches")
        shortcut, branches = _split(e)
        units.append((shortcut, e, branches, outer))
        e = shortcut
    return units[::-1]


def _specs(n):
    """The non-tensor values a symbol reads (arguments of a call, a scale, a dropout rate)."""
    return [s for s in (*n.args, *n.kwargs.values(), n.factor) if isinstance(s, _S)]


def _nodes(top, stop):
    seen, todo = [], [top]
    while todo:
        n = todo.pop()
        if n is stop or any(n is s for s in seen):
            continue
        seen.append(n)
        todo.extend(n.children())
    return seen


_ATTENTION = ("attn", "attention")
_MLP = ("mlp", "ffn", "feed_forward", "moe", "expert", "intermediate")


def _role(m, attr):
    sub, a = getattr(m, attr), attr.lower()
    name = type(sub).__name__.lower()
    if isinstance(sub, nn.Dropout) or "norm" in a or "norm" in name or a.startswith("ln"):
        return None
    if any(k in a or k in name for k in _ATTENTION):
        return "attention"
    return "mlp" if any(k in a or k in name for k in _MLP) else attr


class _Program:
    """A read layer: its units (closures replaying the forward) and how to route it."""

    def __init__(self, m):
        r = _Reader(m)
        rets = r.ret if isinstance(r.ret, tuple) else (r.ret,)
        state = rets[0]
        if not isinstance(state, _T) or any(isinstance(v, _T) and v.op != "item" for v in rets[1:]):
            raise _Unreadable("the return value")
        # what routing needs from the reading (the reader itself holds the module: not kept)
        self.input, self.star, self.assume = r.input, r.star, r.assume
        self.params = {p: (None if v.default is inspect.Parameter.empty else v.default) for p, v in r.params.items()}
        self.returns, self.units, self.parts = rets, _chain(state), []
        if not self.units:
            raise _Unreadable("no residual sum")
        covered, labels = [], []
        for shortcut, add, branches, outer in self.units:
            nodes = [n for b in branches for n in _nodes(b, shortcut)] + _nodes(outer, add)
            covered += nodes
            calls = [n for n in reversed(nodes) if n.op == "call"]
            if any(s.kind == "param" for n in _nodes(outer, add) for s in _specs(n)):
                raise _Unreadable("a layer argument used after a sum")
            roles = list(dict.fromkeys(x for x in (_role(m, n.attr) for n in calls) if x))
            roles.sort(key=lambda x: (x != "attention", x != "mlp"))
            label = "+".join(roles) or "unit"
            labels.append(label if label not in labels else f"{label}_{len(labels)}")
            params = sorted({s.value for n in nodes for s in _specs(n) if s.kind == "param"})
            if _RESERVED & set(params):
                raise _Unreadable(f"an argument named {sorted(_RESERVED & set(params))}")
            self.parts.append((params, any(n.star for n in calls)))
        side = [v for v in rets[1:] if isinstance(v, _T)]
        if any(not any(c is n for n in covered) for c in r.calls) or any(v.src.op != "call" for v in side):
            raise _Unreadable("a module call outside the residual units")
        self.side = {v.src.attr for v in side}
        self.labels = labels

    def unit_parts(self, m):
        out = []
        for (shortcut, add, branches, outer), label in zip(self.units, self.labels):
            def residual(x, _b=branches, _s=shortcut, **kw):
                run, memo = _Run(m, self, kw), {id(_s): x}
                return functools.reduce(lambda a, b: a + b, [run.value(b, memo) for b in _b])

            def post(z, _o=outer, _a=add):
                return _Run(m, self, {}).value(_o, {id(_a): z})

            def forward(x, _o=outer, _s=shortcut, **kw):  # several branches: the layer's own order of sums
                return _Run(m, self, kw).value(_o, {id(_s): x})

            out.append(UnitParts(residual=residual, post=None if outer is add else post, label=label,
                                 forward=forward if len(branches) > 1 else None))
        return out


class _Run:
    """Evaluates symbols of a program for one call, with the layer's arguments ``kw``."""

    def __init__(self, m, prog, kw):
        self.m, self.prog = m, prog
        kw = dict(kw)
        self.params = {p: kw.pop(p) if p in kw else default for p, default in prog.params.items()}
        self.star = kw  # what remains: the forward's **kwargs

    def spec(self, s):
        if s.kind == "param":
            return self.params.get(s.value)
        return s.value if s.kind == "const" else _static_value(self.m, s)

    def value(self, top, memo):
        def ev(t):
            if id(t) in memo:
                return memo[id(t)]
            if t.op == "call":
                args = [ev(t.src) if s is _DATA else self.spec(s) for s in t.args]
                kwargs = {k: ev(t.src) if s is _DATA else self.spec(s) for k, s in t.kwargs.items()}
                if t.star:
                    kwargs.update(self.star)
                side = t.attr if t.attr in self.prog.side else None
                v = _call(getattr(self.m, t.attr), *args, _side=side, **kwargs)
            elif t.op == "item":
                v = ev(t.src)[t.index]
            elif t.op == "add":
                v = ev(t.args[0]) + ev(t.args[1])
            elif t.op == "mul":
                f = self.spec(t.factor)
                v = ev(t.src) * f if t.index == 0 else f * ev(t.src)
            elif t.op == "dropout":
                v = F.dropout(ev(t.src), p=self.spec(t.factor), training=self.m.training)
            else:
                raise ArgumentError("a unit read its layer's input through another path (a bug in the reader)")
            memo[id(t)] = v
            return v

        return ev(top)


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _program(m, strict=True):
    got = _PROGRAMS.get(m)
    if got is None:
        try:
            got = _Program(m)
        except (_Unreadable, AttributeError, TypeError, ValueError) as e:
            got = f"{type(e).__name__}: {e}" if not isinstance(e, _Unreadable) else str(e)
        _PROGRAMS[m] = got
    if isinstance(got, str):
        if strict:
            cls = original_class(m)
            raise UnsupportedModelError(
                f"{cls.__module__}.{cls.__qualname__}.forward could not be read as residual units ({got}); "
                f"register an adapter: unravel.register_adapter({cls.__name__}, ...)")
        return None
    return got


class _ReadAdapter(Adapter):
    """Units read from the layer's forward (see the module docstring)."""

    def parts(self, m):
        return _program(m).unit_parts(m)

    def route(self, m, call_unit, *args, **kwargs):
        prog = _program(m)
        values = _bind(m, args, kwargs)
        for p in sorted(prog.assume):
            if values[p] is not None:
                raise ArgumentError(f"{type(m).__name__} was read for calls without {p!r} (its units do not include "
                                    f"what {p} adds); routing it with {p} given is not supported.")
        star = values.get(prog.star) or {}
        calls = [values[prog.input]]
        for i, (params, uses_star) in enumerate(prog.parts):
            kw = {p: values[p] for p in params}
            calls.append((i, {**kw, **star} if uses_star else kw))

        def returns(x, frame):
            if len(prog.returns) == 1:
                return x
            return (x,) + tuple(_returned(m, v, frame, values) for v in prog.returns[1:])

        return _route_frame(m, call_unit, calls, returns)


def _returned(m, v, frame, values):
    """A value the layer returns beside its output: a module's side output (None when the unit
    that computes it did not run: deleted), an argument, or a constant."""
    if isinstance(v, _T):
        got = frame.get(v.src.attr)
        return None if got is None else got[v.index]
    return values.get(v.value) if v.kind == "param" else v.value if v.kind == "const" else _static_value(m, v)


def _readable(m) -> bool:
    return _program(m, strict=False) is not None
