"""Conditions in a read ``forward``: ``if`` tests and ``a if c else b`` are evaluated while
reading, from the layer's settings and its arguments. An argument is assumed at its default (or
given, for a required one); :mod:`._program` reads a call with other values again. Private.
"""

from __future__ import annotations

import ast
import inspect

from ._read import _S, _T, _forward_of, _source, _static_value, _Unreadable


class _Given:
    """An argument given (not None) where the reading assumed None: comparisons with None work,
    anything else about it is not static."""

    def __bool__(self):
        raise _Unreadable("a condition on the value of a tensor argument")

    def __repr__(self):
        return "<given>"


GIVEN = _Given()


def norm_value(v):
    """An argument as a reading can assume it: a Python scalar or None as it is, else GIVEN."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else GIVEN


class Conditions:
    """The part of :class:`._interp.Reader` that evaluates conditions."""

    # conditions: the layer's settings, and arguments (assumed as their defaults, or as given)
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
            ops = {ast.Is: lambda: a is b, ast.IsNot: lambda: a is not b}
            if isinstance(a, _Given) or isinstance(b, _Given):
                if type(e.ops[0]) in ops and (a is None or b is None):
                    return ops[type(e.ops[0])]()
                raise _Unreadable(f"condition {ast.unparse(e)[:60]!r} on a tensor argument")
            ops.update({ast.Eq: lambda: a == b, ast.NotEq: lambda: a != b, ast.Lt: lambda: a < b,
                        ast.Gt: lambda: a > b, ast.LtE: lambda: a <= b, ast.GtE: lambda: a >= b,
                        ast.In: lambda: a in b, ast.NotIn: lambda: a not in b})
            if type(e.ops[0]) in ops:
                return ops[type(e.ops[0])]()
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in ("hasattr", "getattr") \
                and len(e.args) in (2, 3) and isinstance(e.args[1], ast.Constant):
            obj = self.expr(e.args[0])
            if not (isinstance(obj, _S) and obj.kind == "self"):
                raise _Unreadable(f"condition {ast.unparse(e)[:60]!r}")
            obj = _static_value(self.m, obj)
            if e.func.id == "hasattr":
                return hasattr(obj, e.args[1].value)
            return getattr(obj, e.args[1].value, *([self.static(e.args[2])] if len(e.args) == 3 else []))
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "isinstance" and len(e.args) == 2:
            obj, cls = self.expr(e.args[0]), self.expr(e.args[1])
            if isinstance(obj, _S) and obj.kind in ("self", "const") and isinstance(cls, _S) and cls.kind == "const":
                return isinstance(obj.value if obj.kind == "const" else _static_value(self.m, obj), cls.value)
            raise _Unreadable(f"condition {ast.unparse(e)[:60]!r}")
        v = self.expr(e)
        if isinstance(v, _S) and v.kind == "const":
            return v.value
        if isinstance(v, _S) and v.kind == "self" and "training" not in v.value:
            return _static_value(self.m, v)
        if isinstance(v, _S) and v.kind == "param":
            if isinstance(e, ast.Name) and self.params[v.value].default is inspect.Parameter.empty \
                    and v.value not in self.given:
                self.assume[v.value] = False  # a required flag (`if output_attentions:`): read as off
                return False
            return self.argument(v.value)
        if isinstance(v, _T) and v.op not in ("item", "rest", "untuple"):
            return GIVEN  # a tensor the layer computed (an item of a module's output may be None)
        if isinstance(v, _T) and v.op == "item" and v.src.op == "call":
            got = _returned_setting(self.m.get_submodule(v.src.attr), v.index)
            if got is not _UNKNOWN:
                return norm_value(got)
        raise _Unreadable(f"condition {ast.unparse(e)[:60]!r}")

    def argument(self, name):
        """A layer argument in a condition: as given to this reading, else its default (a scalar
        or None), recorded in ``assume``; routing checks the call's values against it."""
        if name in self.given:
            value = self.given[name]
        else:
            value = self.params[name].default
            if value is inspect.Parameter.empty:
                value = GIVEN  # a required argument: assumed not None
            elif not (value is None or isinstance(value, (bool, int, float, str))):
                raise _Unreadable(f"a condition on argument {name!r}")
        self.assume[name] = value
        return value


_UNKNOWN = object()


def _returned_setting(sub, index):
    """What ``sub``'s forward returns at ``index`` where every ``return`` there is one of its own
    attributes (GPT-NeoX-Japanese's attention returns ``self.dense_bias``, a parameter or None);
    else ``_UNKNOWN``."""
    try:
        _, fn, _ = _forward_of(type(sub))
        body = _source(fn)
    except (OSError, TypeError, SyntaxError, ValueError):
        return _UNKNOWN
    found = []
    for node in ast.walk(ast.Module(body=list(body), type_ignores=[])):
        if isinstance(node, ast.Return):
            v = node.value
            if not (isinstance(v, ast.Tuple) and len(v.elts) > index and isinstance(v.elts[index], ast.Attribute)
                    and isinstance(v.elts[index].value, ast.Name) and v.elts[index].value.id == "self"):
                return _UNKNOWN
            found.append(v.elts[index].attr)
    if not found or len(set(found)) != 1:
        return _UNKNOWN
    return getattr(sub, found[0], _UNKNOWN)
