"""The graph of a read ``forward``: which sums are residual units (their shortcut, branches and
what follows them), the non-tensor values each reads, what a call does (attention, MLP, ...),
and a canonical text of the symbols. Private: part of :mod:`unravel.adapters._transformers`.
"""

from __future__ import annotations

import operator

from torch import nn

from ._read import _S, _T, _UNARY, _Unreadable


def _reaches(n, t):
    """Whether every path down from ``n`` ends at ``t`` (n is a function of t alone)."""
    if n is t:
        return True
    if n.op == "in":
        return False
    return all(_reaches(c, t) for c in n.children())


def _uses(n, t):
    """Whether ``t`` is among the symbols ``n`` is computed from."""
    return any(x is t for x in _nodes(n, None))


def _peel(t):
    while t.op in _UNARY:
        t = t.src
    return t


def _boundary(t):
    """Whether ``t`` can be a unit's input: the layer's input, or a sum (with what follows it)."""
    return t.op == "in" or _peel(t).op == "add"


_CASTS = ("to", "float", "type_as")


def _shortcut_of(m, t, others):
    """(state, t) where ``t`` is its shortcut: ``t`` itself, or a scaling, cast or norm of a state
    that every other term reads (``alpha * x``, ``x.to(float32)``, ``alpha * ln(x)``); else None."""
    n = t
    while True:
        if _boundary(n) and all(_reaches(o, n) for o in others):
            return n, t
        if n.op in ("mul", "div", "meth", "shift") or (n.op == "call" and _role(m, n.attr) is None and not n.star):
            n = n.src
        else:
            return None


def _split(m, add):
    """(shortcut state, shortcut chain top or None, branches) of a sum."""
    terms = list(add.args)
    while True:
        found = [t for t in terms if _boundary(t) and all(_reaches(o, t) for o in terms if o is not t)]
        if len(found) == 1:
            return found[0], None, [o for o in terms if o is not found[0]]
        if not found:
            chains = [(t, _shortcut_of(m, t, [o for o in terms if o is not t])) for t in terms]
            chains = [(t, c) for t, c in chains if c is not None]
            if len(chains) == 1:
                t, (state, top) = chains[0]
                return state, top, [o for o in terms if o is not t]
        # a nested sum no other term reads is a parallel term ((x + a) + b); one that another term
        # reads is a state, and then the sum is not a unit (a branch skipping several units)
        i = next((i for i, t in enumerate(terms) if t.op == "add"
                  and not any(_uses(o, t) for o in terms if o is not t)), None)
        if i is None:
            raise _Unreadable("a sum whose terms are not a shortcut and branches reading it")
        terms[i:i + 1] = list(terms[i].args)


def _chain(m, out):
    """[(shortcut, sum, branches, outer)] in forward order (``outer`` applies post to ``sum``),
    and {unit: top of its shortcut chain} where the shortcut is not the identity."""
    units, chains, e = [], {}, out
    while e.op != "in":
        outer = e
        e = _peel(e)
        if e.op != "add":
            raise _Unreadable("the output is not a sum of a shortcut and residual branches")
        shortcut, top, branches = _split(m, e)
        if top is not None:
            chains[len(units)] = top
        units.append((shortcut, e, branches, outer))
        e = shortcut
    n = len(units)
    return units[::-1], {n - 1 - i: top for i, top in chains.items()}


def _flat(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _flat(v)
        else:
            yield v


_BIN = {"Add": operator.add, "Sub": operator.sub, "Mult": operator.mul, "Div": operator.truediv, "Pow": operator.pow}


def _leaves(s):
    if s.kind == "getitem":
        return _leaves(s.value[0])
    if s.kind == "sbin":
        return _leaves(s.value[1]) + _leaves(s.value[2])
    return [s]


def _specs(n):
    """The non-tensor values a symbol reads (arguments of a call, a scale, a dropout rate)."""
    return [x for s in _flat((*n.args, *n.kwargs.values(), n.factor)) if isinstance(s, _S) for x in _leaves(s)]


def _nodes(top, stop):
    seen, todo = [], [top]
    while todo:
        n = todo.pop()
        if n is stop or any(n is s for s in seen):
            continue
        seen.append(n)
        todo.extend(n.children())
    return seen


_ATTENTION = ("attn", "attention", "attend")
_MLP = ("mlp", "ffn", "feed_forward", "moe", "expert", "intermediate")
_MLP_CLASS = ("mlp", "ffn", "feedforward", "expert", "intermediate")  # "moe" only at the end: model names hold it
_LEAF = (nn.Linear, nn.Conv1d, nn.Identity)
_GENERIC = ("self", "output", "layer", "block", "module")  # names that say nothing of what a call does


def _role(m, attr):
    """What a call does: None for a norm or dropout, "attention", "mlp", "leaf" (a linear map or
    activation function), else the name of the submodule called. Past a norm, the
    outermost submodule on the path whose name (or class name) says attention or MLP decides."""
    parts = attr.split(".")
    sub = m.get_submodule(attr)
    a, name = parts[-1].lower(), type(sub).__name__.lower()
    if isinstance(sub, nn.Dropout) or "norm" in a or "norm" in name or a.startswith("ln"):
        return None
    for i in range(len(parts)):
        a = parts[i].lower()
        name = type(m.get_submodule(".".join(parts[:i + 1]))).__name__.lower()
        if any(k in a or k in name for k in _ATTENTION):
            return "attention"
        if any(k in a for k in _MLP) or any(k in name for k in _MLP_CLASS) or name.endswith(("moe", "moeblock")):
            return "mlp"
    if isinstance(sub, _LEAF) or name == "conv1d" or type(sub).__module__.endswith("activations") \
            or type(sub).__module__.startswith("torch.nn.modules.activation"):
        return "leaf"
    return next((a for a in reversed(parts) if a not in _GENERIC), parts[-1])


def _label(roles):
    """A unit's label from the roles of its calls: attention and MLP first, then other mixers
    (``"attention+mamba"`` for Falcon-H1's parallel attention and Mamba); linear maps and
    activations alone make an MLP."""
    known = [r for r in ("attention", "mlp") if r in roles]
    other = [r for r in roles if r not in ("attention", "mlp", "leaf")]
    return "+".join(known + other) or ("mlp" if roles else "unit")


def _dump(n, names):
    """A canonical text of the symbols under ``n`` (readings with equal texts compute alike)."""
    if isinstance(n, (tuple, list)):
        return "(" + ",".join(_dump(v, names) for v in n) + ")"
    if isinstance(n, _S):
        v = n.value
        if n.kind in ("tattr", "getitem", "smeth"):
            v = _dump(v[0], names) + repr(v[1])
        elif n.kind == "sbin":
            v = v[0] + _dump(v[1:], names)
        return f"{n.kind}:{v!r}"
    if not isinstance(n, _T):
        return repr(n)
    if id(n) not in names:
        kids = [_dump(c, names) for c in ([n.src] if n.op not in ("in", "add") else list(n.args))]
        specs = _dump((list(n.args) if n.op != "add" else [], sorted(n.kwargs.items()), n.factor), names)
        names[id(n)] = f"{n.op}[{n.attr},{n.index},{n.star}]({','.join(kids)};{specs})"
    return names[id(n)]
