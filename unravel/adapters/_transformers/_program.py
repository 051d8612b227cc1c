"""From a read ``forward`` to residual units: the program of a layer (which statements form each
unit's residual branch, shortcut and post) and the adapter that replays it. Private: part of
:mod:`unravel.adapters._transformers`.

A layer is read for calls with its arguments at their defaults; where a condition of its forward
reads an argument (``output_attentions``, ``encoder_hidden_states is not None``), a call with
another value is read again, and routed only when that reading has the same units.
"""

from __future__ import annotations

import functools
import inspect
import weakref

import torch.nn.functional as F

from ...errors import ArgumentError, UnsupportedModelError
from ...units.parts import UnitParts
from .. import Adapter, original_class
from ._conditions import norm_value
from ._graph import _BIN, _CASTS, _chain, _dump, _flat, _label, _nodes, _role, _specs
from ._interp import Reader
from ._read import _DATA, _FRAME, _RESERVED, _S, _T, _bind, _call, _route_frame, _static_value, _Unreadable


def _specs_all(n):
    """Every non-tensor value a symbol takes, side inputs included."""
    return [s for s in _flat((*n.args, *n.kwargs.values(), n.factor)) if isinstance(s, _S)]


class _Program:
    """A read layer: its units (closures replaying the forward) and how to route it."""

    def __init__(self, m, given=None):
        r = Reader(m, given)
        self.keys = list(r.ret) if isinstance(r.ret, dict) else None  # a dict returned: its first value
        ret = tuple(r.ret.values()) if self.keys is not None else r.ret
        single = not isinstance(ret, (tuple, list))
        rets = (ret,) if single else tuple(ret)
        state = rets[0] if rets else None
        if not isinstance(state, _T) or state.op == "rest" or any(
                isinstance(v, _T) and v.op not in ("item", "rest") for v in rets[1:]):
            raise _Unreadable("the return value")
        # what routing needs from the reading (the reader itself holds the module: not kept)
        self.input, self.star, self.assume, self.given = r.input, r.star, dict(r.assume), dict(given or {})
        self.params = {p: (None if v.default is inspect.Parameter.empty else v.default) for p, v in r.params.items()}
        self.returns, self.single, self.list = rets, single, isinstance(ret, list)
        self.units, self.chains = _chain(m, state)
        self.parts = []
        if not self.units:
            raise _Unreadable("no residual sum")
        covered, labels = [], []
        for i, (shortcut, add, branches, outer) in enumerate(self.units):
            top = self.chains.get(i)
            chain = _nodes(top, shortcut) if top is not None else []
            nodes = [n for b in branches for n in _nodes(b, shortcut)] + _nodes(outer, add) + chain
            covered += nodes
            calls = [n for n in reversed(nodes) if n.op == "call"]
            if any(s.kind == "param" for n in _nodes(outer, add) + chain for s in _specs(n)):
                raise _Unreadable("a layer argument used after a sum or on a shortcut")
            if not any(n.op == "call" for b in branches for n in _nodes(b, shortcut)):
                raise _Unreadable("a residual branch without a module")
            label = _label(list(dict.fromkeys(x for x in (_role(m, n.attr) for n in calls) if x)))
            labels.append(label if label not in labels else f"{label}_{len(labels)}")
            params = sorted({s.value for n in nodes for s in _specs(n) if s.kind == "param"})
            if _RESERVED & set(params):
                raise _Unreadable(f"an argument named {sorted(_RESERVED & set(params))}")
            self.parts.append((params, any(n.star for n in calls)))
        side = [v for v in rets[1:] if isinstance(v, _T)]
        if any(not any(c is n for n in covered) for c in r.calls) or any(v.src.op != "call" for v in side):
            raise _Unreadable("a module call outside the residual units")
        self.labels = labels
        # a state one module returns and another takes (RWKV) is None unless the arguments its
        # module is given for it are set (a cache): those arguments must be off when routed
        sources = {s.value[0] for n in covered for s in _specs_all(n) if s.kind == "side"}
        self.state_args = sorted({s.value for c in r.calls if c.attr in sources for s in _specs(c) if s.kind == "param"})
        names = {}
        self.signature = [(_dump(u, names), _dump(self.chains.get(i), names)) for i, u in enumerate(self.units)]

    def unit_parts(self, m):
        out = []
        for i, ((shortcut, add, branches, outer), label) in enumerate(zip(self.units, self.labels)):
            top = self.chains.get(i)

            def residual(x, _b=branches, _s=shortcut, **kw):
                run, memo = _Run(m, self, kw), {id(_s): x}
                return functools.reduce(lambda a, b: a + b, [run.value(b, memo) for b in _b])

            def post(z, _o=outer, _a=add):
                return _Run(m, self, {}).value(_o, {id(_a): z})

            def through(x, _t=top, _s=shortcut):
                return _Run(m, self, {}).value(_t, {id(_s): x})

            def forward(x, _o=outer, _s=shortcut, **kw):  # several branches: the layer's own order of sums
                return _Run(m, self, kw).value(_o, {id(_s): x})

            cast = top is not None and all(n.op == "meth" and n.attr in _CASTS for n in _nodes(top, shortcut))
            out.append(UnitParts(residual=residual, post=None if outer is add else post, label=label,
                                 shortcut=None if top is None else through, projection=False if cast else None,
                                 forward=forward if len(branches) > 1 or top is not None else None))
        return out


class _Run:
    """Evaluates symbols of a program for one call, with the layer's arguments ``kw``."""

    def __init__(self, m, prog, kw):
        self.m, self.prog = m, prog
        kw = dict(kw)
        self.params = {p: kw.pop(p) if p in kw else default for p, default in prog.params.items()}
        self.star = kw  # what remains: the forward's **kwargs
        self.memo = {}

    def spec(self, s):
        if isinstance(s, (tuple, list)):
            return type(s)(self.spec(v) for v in s)
        if s.kind == "param":
            return self.params.get(s.value)
        if s.kind == "const":
            return s.value
        if s.kind == "tattr":
            return getattr(self.ev(s.value[0]), s.value[1])
        if s.kind == "getitem":
            return self.spec(s.value[0])[s.value[1]]
        if s.kind == "sbin":
            return _BIN[s.value[0]](self.spec(s.value[1]), self.spec(s.value[2]))
        if s.kind == "side":
            return _side_input(self.m, *s.value)
        return _static_value(self.m, s)

    def value(self, top, memo):
        self.memo = memo
        return self.ev(top)

    def ev(self, t):
        memo = self.memo
        if id(t) in memo:
            return memo[id(t)]
        if t.op == "call":
            args = [self.ev(t.src) if s is _DATA else self.spec(s) for s in t.args]
            kwargs = {k: self.ev(t.src) if s is _DATA else self.spec(s) for k, s in t.kwargs.items()}
            if t.star:
                kwargs.update(self.star)
            v = _call(self.m.get_submodule(t.attr), *args, _side=t.attr, **kwargs)
        elif t.op == "item":
            v = self.ev(t.src)[t.index]
        elif t.op == "untuple":
            v = self.ev(t.src)
            v = v[0] if isinstance(v, tuple) else v
        elif t.op == "add":
            v = self.ev(t.args[0]) + self.ev(t.args[1])
        elif t.op == "mul":
            f = self.spec(t.factor)
            v = self.ev(t.src) * f if t.index == 0 else f * self.ev(t.src)
        elif t.op == "div":
            v = self.ev(t.src) / self.spec(t.factor)
        elif t.op == "shift":
            f = self.spec(t.factor)
            v = self.ev(t.src) + f if t.index == 0 else f + self.ev(t.src)
        elif t.op == "dropout":
            training = self.spec(t.kwargs["training"]) if "training" in t.kwargs else self.m.training
            v = F.dropout(self.ev(t.src), p=self.spec(t.factor), training=training)
        elif t.op == "meth":
            v = getattr(self.ev(t.src), t.attr)(*[self.spec(s) for s in t.args],
                                                **{k: self.spec(s) for k, s in t.kwargs.items()})
        else:
            raise ArgumentError("a unit read its layer's input through another path (a bug in the reader)")
        memo[id(t)] = v
        return v


def _side_input(m, attr, index):
    """A value one module returned and another takes (RWKV's state): None unless a cache is on,
    and then refused, since it would carry one unit's input into another unit."""
    frame = _FRAME.get()
    got = None if frame is None or frame.get(attr) is None else frame[attr][index]
    if got is not None:
        raise ArgumentError(f"{type(m).__name__} passes a state from {attr} to another of its units (a cache); "
                            "units that share state cannot be routed. Pass use_cache=False.")
    return None


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _program(m, given=None, strict=True):
    """The reading of layer ``m`` (for calls with the arguments ``given``, default: none given)."""
    key = tuple(sorted((given or {}).items(), key=lambda kv: kv[0]))
    cache = _PROGRAMS.setdefault(m, {})
    got = cache.get(key)
    if got is None:
        try:
            got = _Program(m, given)
        except (_Unreadable, AttributeError, TypeError, ValueError, LookupError) as e:
            got = f"{type(e).__name__}: {e}" if not isinstance(e, _Unreadable) else str(e)
        cache[key] = got
    if isinstance(got, str):
        if strict:
            cls = original_class(m)
            raise UnsupportedModelError(
                f"{cls.__module__}.{cls.__qualname__}.forward could not be read as residual units ({got}); "
                f"register an adapter: unravel.register_adapter({cls.__name__}, ...)")
        return None
    return got


def _for_call(m, values):
    """The reading for a call with the arguments ``values``: the default one, or one for the
    values the forward's conditions read, refused where its units are not the default's."""
    base = prog = _program(m)
    for _ in range(8):
        want = {p: norm_value(values.get(p)) for p in prog.assume}
        if all(want[p] is prog.assume[p] or want[p] == prog.assume[p] for p in want):
            break
        given = {**prog.given, **want}
        got = _program(m, given, strict=False)
        if got is None or got.signature != base.signature:
            differ = ", ".join(f"{p}={values.get(p)!r}" if norm_value(values.get(p)) is not norm_value(None)
                               and not hasattr(values.get(p), "shape") else f"{p} given"
                               for p in want if want[p] != prog.assume.get(p))
            why = "cannot be read" if got is None else "has other residual units"
            raise ArgumentError(f"{type(m).__name__} was read for calls with its defaults; called with {differ} "
                                f"its forward {why} (cross-attention, for instance), so routing it so is not "
                                "supported. Call it with the defaults.")
        prog = got
    return base, prog


class _ReadAdapter(Adapter):
    """Units read from the layer's forward (see the module docstring)."""

    def parts(self, m):
        return _program(m).unit_parts(m)

    def zero_plan(self, m, positions, what):
        from ._surgery import zero_plan

        return zero_plan(m, _program(m), positions, what)

    def route(self, m, call_unit, *args, **kwargs):
        values = _bind(m, args, kwargs)
        base, prog = _for_call(m, values)
        on = [p for p in base.state_args if values.get(p) not in (None, False)]
        if on:
            raise ArgumentError(f"{type(m).__name__} passes a state between its units, which it fills when called with "
                                f"{', '.join(on)} set (a cache); units that share state cannot be routed. "
                                "Pass use_cache=False.")
        star = values.get(prog.star) or {}
        calls = [values[prog.input]]
        for i, (params, uses_star) in enumerate(base.parts):
            kw = {p: values[p] for p in params}
            calls.append((i, {**kw, **star} if uses_star else kw))

        def returns(x, frame):
            if prog.single:
                return x
            out = [x]
            for v in prog.returns[1:]:
                if isinstance(v, _T) and v.op == "rest":
                    got = frame.get(v.src.attr)
                    out.extend(() if got is None else got[v.index:])
                else:
                    out.append(_returned(m, v, frame, values))
            if prog.keys is not None:
                return dict(zip(prog.keys, out))
            return out if prog.list else tuple(out)

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


def _readable_layer(m) -> bool:
    """A ``transformers`` module whose forward reads as residual units (any attribute names)."""
    return _readable(m)
