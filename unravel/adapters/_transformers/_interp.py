"""The interpreter that reads a ``transformers`` layer's ``forward``: tensors become symbols
(:class:`~._read._T`), everything else static values (:class:`~._read._S`), and conditions on the
layer's settings are evaluated. Calls into the layer's own code are read through: its methods
(``self.feed_forward_chunk``), its ``transformers`` submodules where their forward holds a sum
(BERT's ``self.output(h, input_tensor)``), ``transformers``' module-level helpers and
``apply_chunking_to_forward`` without chunks. Anything else that is not understood makes the layer
unreadable. Private: :mod:`._program` builds units on it.
"""

from __future__ import annotations

import ast
import builtins
import inspect

import torch.nn.functional as F
from torch import nn

from .. import original_class
from ._conditions import Conditions
from ._read import _DATA, _S, _T, _forward_of, _renames, _source, _static_value, _Unreadable

_METHODS = {"to", "view", "reshape", "float", "contiguous", "type_as", "expand", "expand_as"}  # replayed as read
_LIKE = {"type_as": ("to", "dtype"), "expand_as": ("expand", "shape")}
_TENSOR_ATTRS = {"shape", "dtype", "device"}
_STATIC_METHODS = {"tanh", "sigmoid", "exp", "float", "to"}  # of a parameter (a gate): evaluated at run time
_DEPTH = 6  # how deep calls are read through
_VALUES = ("const", "self", "smeth", "param", "getitem", "sbin", "tattr")  # non-tensors a tensor op may take
_ARITH = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}


STAR = _S("star", None)  # the layer's **kwargs, passed on whole


def _rest(values):
    return any(isinstance(i, _T) and i.op == "rest" for i in values)


class _Frame:
    __slots__ = ("env", "path", "globals", "ret")

    def __init__(self, env, path, globals_):
        self.env, self.path, self.globals, self.ret = env, path, globals_, None


class Reader(Conditions):
    """Interprets the forward of layer ``m``; ``given`` fixes the values of some of its arguments
    (a reading for calls where they differ from the defaults)."""

    def __init__(self, m, given=None):
        self.m, self.given = m, dict(given or {})
        _, fn, sig = _forward_of(original_class(m))
        ps = list(sig.parameters.values())
        if len(ps) < 2 or ps[1].kind not in (ps[1].POSITIONAL_ONLY, ps[1].POSITIONAL_OR_KEYWORD):
            raise _Unreadable("forward takes no input tensor")
        self.input = ps[1].name
        self.params = {p.name: p for p in ps[2:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        self.star = next((p.name for p in ps if p.kind == p.VAR_KEYWORD), None)
        self.calls, self.assume, self.adds, self.depth = [], {}, 0, 0
        env = {ps[0].name: _S("self", ()), self.input: _T("in"), **{p: _S("param", p) for p in self.params}}
        if self.star:
            env[self.star] = STAR
        self.fr = _Frame(env, (), fn.__globals__)
        self.ret = self.run(fn)
        if self.ret is None:
            raise _Unreadable("forward does not end in a return")

    def run(self, fn):
        try:
            body = _source(fn)
        except (OSError, TypeError, SyntaxError) as e:
            raise _Unreadable(f"no source ({e})") from None
        self.block(body)
        return self.fr.ret

    # statements
    def block(self, body):
        for s in body:
            if self.fr.ret is not None:
                return
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) or isinstance(s, ast.Pass):
                continue
            if isinstance(s, (ast.Assign, ast.AnnAssign)) and (not isinstance(s, ast.Assign) or len(s.targets) == 1):
                if s.value is None:
                    continue
                self.assign(s.targets[0] if isinstance(s, ast.Assign) else s.target, self.expr(s.value))
            elif isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
                self.fr.env[s.target.id] = self.binop(self.expr(ast.Name(s.target.id, ast.Load())), s.op,
                                                      self.expr(s.value))
            elif isinstance(s, ast.If) and self.untuple(s):
                continue
            elif isinstance(s, ast.If):
                self.block(s.body if self.static(s.test) else s.orelse)
            elif isinstance(s, ast.Return) and s.value is not None:
                self.fr.ret = self.expr(s.value)
            else:
                raise _Unreadable(f"statement {ast.unparse(s)[:60]!r}")

    def untuple(self, s):
        """``if isinstance(h, tuple): h, _ = h`` (or ``h = h[0]``): a module that returns a tuple
        or a tensor depending on its settings (mixture-of-experts blocks)."""
        t = s.test
        if not (isinstance(t, ast.Call) and isinstance(t.func, ast.Name) and t.func.id == "isinstance"
                and len(t.args) == 2 and isinstance(t.args[0], ast.Name) and ast.unparse(t.args[1]) == "tuple"
                and not s.orelse and len(s.body) == 1 and isinstance(s.body[0], ast.Assign)):
            return False
        name, a = t.args[0].id, s.body[0]
        target = a.targets[0]
        first = target.elts[0] if isinstance(target, (ast.Tuple, ast.List)) else target
        v = self.fr.env.get(name)
        if not (isinstance(first, ast.Name) and first.id == name and isinstance(v, _T)
                and ast.unparse(a.value) in (name, f"{name}[0]")):
            return False
        self.fr.env[name] = _T("untuple", v)
        return True

    def assign(self, target, value):
        env = self.fr.env
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            if isinstance(value, _T) and value.op in ("call", "untuple"):
                parts = [_T("item", value, index=i) for i in range(len(target.elts))]
            elif isinstance(value, (tuple, list)) and len(value) == len(target.elts):
                parts = value
            else:
                raise _Unreadable("unpacking a value that is not a module's output")
            for t, v in zip(target.elts, parts):
                env[t.id] = v
        elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
              and isinstance(env.get(target.value.id), dict) and isinstance(target.slice, ast.Constant)):
            env[target.value.id] = {**env[target.value.id], target.slice.value: value}  # out["key"] = v
        else:
            raise _Unreadable("assignment target")

    # expressions
    def expr(self, e):
        if isinstance(e, ast.Name):
            if e.id in self.fr.env:
                return self.fr.env[e.id]
            if e.id in self.fr.globals or hasattr(builtins, e.id):
                return _S("const", self.fr.globals[e.id] if e.id in self.fr.globals else getattr(builtins, e.id))
            raise _Unreadable(f"name {e.id!r}")
        if isinstance(e, ast.Constant):
            return _S("const", e.value)
        if isinstance(e, ast.Attribute):
            base = self.expr(e.value)
            if isinstance(base, _S) and base.kind == "self":
                return _S("self", base.value + (e.attr,))
            if isinstance(base, _S) and base.kind == "const" and not callable(getattr(base.value, e.attr, None)):
                return _S("const", getattr(base.value, e.attr))
            if isinstance(base, _S) and base.kind == "const" and isinstance(getattr(base.value, e.attr, None), type):
                return _S("const", getattr(base.value, e.attr))
            if isinstance(base, _T) and e.attr in _TENSOR_ATTRS:
                return _S("tattr", (base, e.attr))
            raise _Unreadable(f"attribute {ast.unparse(e)!r}")
        if isinstance(e, (ast.Tuple, ast.List)):
            out = [self.expr(x) for x in e.elts]
            return tuple(out) if isinstance(e, ast.Tuple) else out
        if isinstance(e, ast.Dict) and all(isinstance(k, ast.Constant) for k in e.keys):
            return {k.value: self.expr(v) for k, v in zip(e.keys, e.values)}
        if isinstance(e, ast.Subscript):
            return self.subscript(e)
        if isinstance(e, ast.BinOp):
            return self.binop(self.expr(e.left), e.op, self.expr(e.right))
        if isinstance(e, ast.IfExp):
            return self.expr(e.body if self.static(e.test) else e.orelse)
        if isinstance(e, ast.Call):
            return self.call(e)
        raise _Unreadable(f"expression {ast.unparse(e)[:60]!r}")

    def subscript(self, e):
        v, sl = self.expr(e.value), e.slice
        if isinstance(v, _S) and v.kind == "self" and isinstance(sl, ast.Constant) and type(sl.value) is int \
                and isinstance(_static_value(self.m, v), nn.Module):
            return _S("self", v.value + (str(sl.value),))  # self.layers[0]: a ModuleList's item
        if isinstance(v, _S) and v.kind in ("param", "getitem", "self", "tattr"):
            return _S("getitem", (v, self.index(sl)))  # mask[:, 0], evaluated when run
        if isinstance(sl, ast.Constant) and isinstance(v, dict) and sl.value in v:
            return v[sl.value]
        if isinstance(sl, ast.Constant) and isinstance(sl.value, str) and isinstance(v, _T) and v.op == "call":
            return _T("item", v, index=sl.value)  # out["context_layer"] of a module's dict
        if isinstance(sl, ast.Constant) and type(sl.value) is int:
            if isinstance(v, _T) and v.op in ("call", "untuple"):
                return _T("item", v, index=sl.value)  # outputs[0] of a module's tuple
            if isinstance(v, (tuple, list)) and 0 <= sl.value < len(v) and not _rest(v[:sl.value + 1]):
                return v[sl.value]
        if isinstance(sl, ast.Slice) and sl.upper is None and sl.step is None:
            k = 0 if sl.lower is None else self.expr(sl.lower)
            k = k.value if isinstance(k, _S) and k.kind == "const" else k
            if type(k) is int and isinstance(v, _T) and v.op == "call":
                return (_T("rest", v, index=k),)  # outputs[1:]: whatever else the module returned
            if type(k) is int and isinstance(v, (tuple, list)) and not _rest(v[:k]):
                return v[k:]
        raise _Unreadable(f"subscript {ast.unparse(e)[:60]!r}")

    def index(self, sl):
        if isinstance(sl, ast.Tuple):
            return tuple(self.index(x) for x in sl.elts)
        if isinstance(sl, ast.Slice):
            return slice(*(None if x is None else self.index(x) for x in (sl.lower, sl.upper, sl.step)))
        v = self.expr(sl)
        if isinstance(v, _S) and v.kind == "const" and (v.value is None or type(v.value) is int):
            return v.value
        raise _Unreadable(f"index {ast.unparse(sl)!r}")

    def binop(self, a, op, b):
        if isinstance(op, ast.Add) and isinstance(a, _T) and isinstance(b, _T):
            self.adds += 1
            return _T("add", args=(a, b))
        if isinstance(op, ast.Add) and isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return type(a)(list(a) + list(b))
        na, nb = self.number(a), self.number(b)
        if na is not None and nb is not None and type(op) in _ARITH:
            return _S("const", _ARITH[type(op)](na, nb))
        if isinstance(a, _T) != isinstance(b, _T):
            t, f = (a, b) if isinstance(a, _T) else (b, a)
            if not isinstance(f, _S) or f.kind not in _VALUES:
                raise _Unreadable("an operation of a tensor with something other than a setting, parameter or argument")
            if isinstance(op, ast.Add):  # a bias: x + self.bias
                return _T("shift", t, index=int(t is b), factor=f)
            if isinstance(op, ast.Mult):
                return _T("mul", t, index=int(t is b), factor=f)
            if isinstance(op, ast.Div) and t is a:
                return _T("div", t, factor=f)
        if isinstance(a, _S) and isinstance(b, _S) and a.kind in _VALUES and b.kind in _VALUES and type(op) in _ARITH:
            return _S("sbin", (type(op).__name__, a, b))  # of parameters or arguments: computed when run
        raise _Unreadable("an operation other than a sum of tensors or a scaling")

    def number(self, v):
        """The Python number a static value is at reading time (a setting), else None."""
        if isinstance(v, _S) and v.kind in ("const", "self"):
            n = v.value if v.kind == "const" else _static_value(self.m, v)
            if isinstance(n, (int, float)) and not isinstance(n, bool):
                return n
        return None

    def keywords(self, e):
        kwargs, star = {}, False
        for k in e.keywords:
            if k.arg is None:
                v = self.expr(k.value)
                if v is STAR:
                    star = True
                elif isinstance(v, _S) and v.kind == "kw":  # keywords a read function took into **kwargs
                    kwargs.update(v.value[0])
                    star = star or v.value[1]
                elif not (isinstance(v, _S) and v.kind == "const" and v.value == {}):
                    raise _Unreadable("** of something other than the forward's **kwargs")
            else:
                kwargs[k.arg] = self.expr(k.value)
        return kwargs, star

    def call(self, e):
        f = e.func
        if isinstance(f, ast.Attribute):
            base = self.expr(f.value)
            if isinstance(base, _T):
                return self.method(base, f.attr, e)
            if isinstance(base, _S) and base.kind == "self":
                obj = getattr(_static_value(self.m, base), f.attr, None)
                if isinstance(obj, nn.Module):
                    return self.module_call(base.value + (f.attr,), obj, e)
                if inspect.ismethod(obj):
                    return self.inline(obj.__func__, base.value, [self.expr(a) for a in e.args], *self.keywords(e))
                if f.attr in _STATIC_METHODS and not e.args and not e.keywords:
                    return _S("smeth", (base, f.attr))
                raise _Unreadable(f"self.{f.attr}(...) is not a submodule or method")
        if isinstance(f, ast.Subscript):
            target = self.expr(f)
            obj = _static_value(self.m, target) if isinstance(target, _S) and target.kind == "self" else None
            if not isinstance(obj, nn.Module):
                raise _Unreadable(f"call {ast.unparse(f)!r}")
            return self.module_call(target.value, obj, e)
        fn = self.resolve(f)
        if getattr(fn, "__module__", None) == "math" and not e.keywords:
            args = [self.number(self.expr(a)) for a in e.args]
            if all(a is not None for a in args):
                return _S("const", fn(*args))
        if fn is F.dropout:
            if len(e.args) != 1:
                raise _Unreadable("dropout called with other arguments")
            kw, star = self.keywords(e)
            training = kw.get("training")
            if star or set(kw) != {"p", "training"} or not isinstance(training, _S) or training.kind not in (
                    "self", "const") or (training.kind == "self" and training.value[-1:] != ("training",)):
                raise _Unreadable("dropout called with other arguments")
            return _T("dropout", self.expr(e.args[0]), factor=kw["p"], kwargs={"training": training})
        if getattr(fn, "__name__", None) == "apply_chunking_to_forward" and len(e.args) >= 4:
            if self.static(e.args[1]) != 0:
                raise _Unreadable("apply_chunking_to_forward in chunks")
            target = self.expr(e.args[0])
            obj = _static_value(self.m, target) if isinstance(target, _S) and target.kind == "self" else None
            if not inspect.ismethod(obj):
                raise _Unreadable("apply_chunking_to_forward of something other than a method")
            return self.inline(obj.__func__, target.value[:-1], [self.expr(a) for a in e.args[3:]], {}, False)
        if (inspect.isfunction(fn) and fn.__module__.startswith("transformers.models.")
                and not any(isinstance(a, ast.Starred) for a in e.args)):
            return self.inline(fn, None, [self.expr(a) for a in e.args], *self.keywords(e))
        raise _Unreadable(f"call {ast.unparse(f)!r}")

    def method(self, t, name, e):
        if name not in _METHODS:
            raise _Unreadable(f"tensor method {name!r}")
        args = [self.expr(a) for a in e.args]
        kwargs, star = self.keywords(e)
        if star or any(not isinstance(v, _S) for v in (*args, *kwargs.values())):
            if name not in _LIKE or len(args) != 1 or not isinstance(args[0], _T) or kwargs:
                raise _Unreadable(f"tensor method {name!r} with tensor arguments")
            name, attr = _LIKE[name]  # type_as(other) is to(other.dtype), expand_as(other) expand(other.shape)
            args = [_S("tattr", (args[0], attr))]
        return _T("meth", t, name, args, kwargs)

    def module_call(self, path, sub, e):
        args = [self.expr(a) for a in e.args]
        kwargs, star = self.keywords(e)
        if self.depth < _DEPTH and type(sub).__module__.startswith("transformers.models."):
            saved, adds = len(self.calls), self.adds
            try:
                _, fn = _renames(type(sub).forward)
                out = self.inline(fn, path, args, kwargs, star)
                if self.adds > adds:  # a sum inside: read through
                    return out
            except _Unreadable:
                pass
            del self.calls[saved:]
            self.adds = adds
        values = (*args, *kwargs.values())
        data = list({id(v): v for v in values if isinstance(v, _T)}.values())
        sides = [v for v in data if v.op == "item" and type(v.index) is int and v.index >= 1 and v.src.op == "call"]
        if len(data) > 1 and len(data) - len(sides) == 1:  # a state another module returned: None when run
            side = {id(v): _S("side", (v.src.attr, v.index)) for v in sides}
            args = [side.get(id(v), v) for v in args]
            kwargs = {k: side.get(id(v), v) for k, v in kwargs.items()}
            values = (*args, *kwargs.values())
            data = [v for v in data if id(v) not in side]
        if len(data) != 1 or any(not isinstance(v, (_T, _S)) for v in values):
            raise _Unreadable(f"self.{'.'.join(path)}(...) does not take exactly one tensor of the layer")
        if data[0].op == "rest":
            raise _Unreadable("a module called on the rest of another's outputs")
        t = _T("call", data[0], ".".join(path), [_DATA if isinstance(v, _T) else v for v in args],
               {k: _DATA if isinstance(v, _T) else v for k, v in kwargs.items()}, star)
        self.calls.append(t)
        return t

    def inline(self, fn, path, args, kwargs, star):
        """The value ``fn`` returns, read with its arguments bound to the caller's values (``path``:
        where its ``self`` is, None for a plain function)."""
        if self.depth >= _DEPTH:
            raise _Unreadable("calls nested too deep")
        _, fn = _renames(fn)
        try:
            sig = inspect.signature(fn)
            bound = sig.bind(*(([_S("self", path)] if path is not None else []) + list(args)), **kwargs)
        except (TypeError, ValueError) as err:
            raise _Unreadable(f"arguments of {getattr(fn, '__qualname__', fn)} ({err})") from None
        env = {}
        for p in sig.parameters.values():
            if p.kind == p.VAR_KEYWORD:
                extra = bound.arguments.get(p.name, {})
                env[p.name] = _S("kw", (dict(extra), star)) if extra else STAR if star else _S("const", {})
            elif p.kind == p.VAR_POSITIONAL:
                if bound.arguments.get(p.name):
                    raise _Unreadable(f"*{p.name} given")
            elif p.name in bound.arguments:
                env[p.name] = bound.arguments[p.name]
            elif p.default is not p.empty and (p.default is None or isinstance(p.default, (bool, int, float, str))):
                env[p.name] = _S("const", p.default)
            else:
                raise _Unreadable(f"argument {p.name!r} of {fn.__qualname__} not given")
        if star and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            raise _Unreadable(f"**kwargs passed to {fn.__qualname__}, which takes none")
        outer = self.fr
        self.fr, self.depth = _Frame(env, path if path is not None else outer.path, fn.__globals__), self.depth + 1
        try:
            out = self.run(fn)
        finally:
            self.fr, self.depth = outer, self.depth - 1
        if out is None:
            raise _Unreadable(f"{fn.__qualname__} does not end in a return")
        return out

    def resolve(self, e):
        if isinstance(e, ast.Name):
            v = self.fr.env.get(e.id)
            if isinstance(v, _S) and v.kind == "const":
                return v.value
            return self.fr.globals.get(e.id, getattr(builtins, e.id, None)) if v is None else None
        if isinstance(e, ast.Attribute):
            return getattr(self.resolve(e.value), e.attr, None)
        return None
