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
import sys
import textwrap

from ...errors import ArgumentError, UnsupportedModelError
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


def _library_version(cls) -> str:
    package = sys.modules.get(cls.__module__.split(".")[0])
    return f"{package.__name__} {getattr(package, '__version__', '(version unknown)')}" if package else "unknown version"


def _signature_changed(cls, what: str) -> UnsupportedModelError:
    """The one error for a layer whose ``forward`` signature moved away from what its adapter reads."""
    return UnsupportedModelError(
        f"{cls.__module__}.{cls.__qualname__}.forward {what} under {_library_version(cls)}; unravel's adapter for "
        f"it reads another signature. Install the version this unravel was verified with (the constraints file "
        f"`requirements/lock-py311.txt`, or the caps on the [hf] extra), or register an adapter: "
        f"unravel.register_adapter({cls.__name__}, ...).")


class _Bound(dict):
    """A layer's arguments by name; asking for one its ``forward`` does not take is an
    :class:`~unravel.errors.UnsupportedModelError` naming the class and the library's version
    (a ``KeyError`` from inside a route would name neither)."""

    def __init__(self, cls, values):
        super().__init__(values)
        self.cls = cls

    def __missing__(self, name):
        raise _signature_changed(self.cls, f"takes no argument {name!r}")


def _named_params(cls) -> list[inspect.Parameter]:
    """The named arguments of ``cls.forward`` past ``self`` (not ``*args`` or ``**kwargs``)."""
    _, _, sig = _forward_of(cls)
    return [p for p in list(sig.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _signature_problem(cls, known, required) -> str | None:
    """What keeps an adapter written for ``known`` and ``required`` arguments from reading
    ``cls.forward``, or None: an argument of ``required`` missing (removed or renamed), or a new
    named argument without a default (every call would pass it, and the adapter would not pass
    it on). A new argument with a default is checked per call (:func:`_known_args`)."""
    params = _named_params(cls)
    missing = [n for n in required if n not in {p.name for p in params}]
    new = [p.name for p in params if p.name not in set(known) | set(required) and p.default is p.empty]
    if missing:
        return f"takes no argument {', '.join(map(repr, missing))}"
    if new:
        return f"requires argument(s) {', '.join(map(repr, new))} that its adapter does not pass on"
    return None


def _check_signature(m, known, required=("hidden_states",)) -> None:
    """Refuse ``m`` unless its ``forward`` has the arguments a hand-written adapter reads (see
    :func:`_signature_problem`). Those adapters call this first in ``parts``, so a release that
    changed the signature is refused when units are found, not in the middle of a forward."""
    cls = original_class(m)
    problem = _signature_problem(cls, known, required)
    if problem:
        raise _signature_changed(cls, problem)


def _at_default(value, default) -> bool:
    if value is default:
        return True
    simple = (bool, int, float, str, type(None))
    return isinstance(value, simple) and isinstance(default, simple) and value == default


def _known_args(v: _Bound, known) -> dict:
    """The arguments of ``known`` that the layer's ``forward`` takes, as bound in ``v``; any other
    named argument (one a newer release added) must be at its default, since the adapter does
    not pass it on."""
    for p in _named_params(v.cls):
        if p.name not in known and p.name != "hidden_states" and p.name in v and not _at_default(v[p.name], p.default):
            raise _signature_changed(v.cls, f"was called with {p.name!r}, an argument its adapter does not pass on")
    return {k: v[k] for k in known if k in v}


def _bind(m, args, kwargs) -> _Bound:
    """The layer's arguments by name, as its own ``forward`` would receive them."""
    cls = original_class(m)
    renames, _, sig = _forward_of(cls)
    kwargs = dict(kwargs)
    for old, new in renames:
        if old in kwargs:
            value = kwargs.pop(old)
            if new is not None:
                kwargs.setdefault(new, value)
    b = sig.bind(m, *args, **kwargs)
    b.apply_defaults()
    return _Bound(cls, b.arguments)


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
# The symbols a forward is read into (the reader is in ._interp)


class _Unreadable(Exception):
    pass


class _T:
    """A tensor of the forward: ``op`` in in/call/item/add/mul/dropout, shift (``x + self.bias``),
    ``meth`` (a tensor method
    such as ``.to(dtype)``), ``untuple`` (a module's output, or its first item where it returns a
    tuple) and ``rest`` (the items of a module's output from ``index`` on, returned beside the
    layer's output). ``attr`` is a call's submodule, dotted from the layer."""

    __slots__ = ("op", "src", "attr", "args", "kwargs", "star", "index", "factor")

    def __init__(self, op, src=None, attr=None, args=(), kwargs=None, star=False, index=0, factor=None):
        self.op, self.src, self.attr, self.args, self.kwargs = op, src, attr, args, kwargs or {}
        self.star, self.index, self.factor = star, index, factor

    def children(self):
        if self.op == "add":
            return list(self.args)
        if self.op == "in":
            return []
        # tensors a setting is read from (``view(residual.shape)``) count as inputs
        return [self.src] + [t for s in (*self.args, *self.kwargs.values(), self.factor) for t in _tensors_in(s)]


class _S:
    """A non-tensor value: ``kind`` in param/const/self (a path of attributes of the layer), tattr
    (``(tensor, attribute)``: a tensor's shape or dtype), smeth (``(self path, method)``: a
    parameter's ``tanh()``, evaluated when run), getitem (``(value, index)``: ``mask[:, 0]``),
    side (``(submodule, index)``: an output of one module that another takes, None when run), star
    (the forward's ``**kwargs``)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind, value):
        self.kind, self.value = kind, value


def _tensors_in(s):
    """The tensors a non-tensor value is computed from (a shape, a slice bound, ...)."""
    if isinstance(s, (tuple, list)):
        return [t for v in s for t in _tensors_in(v)]
    if isinstance(s, slice):
        return _tensors_in((s.start, s.stop, s.step))
    if not isinstance(s, _S):
        return []
    if s.kind == "tattr":
        return [s.value[0]]
    if s.kind in ("getitem", "smeth"):
        return _tensors_in(s.value[0]) + _tensors_in(s.value[1])
    if s.kind == "sbin":
        return _tensors_in(s.value[1:])
    return []


_DATA = _S("data", None)
_UNARY = ("call", "item", "mul", "div", "dropout", "meth", "untuple", "shift")


@functools.lru_cache(maxsize=None)
def _source(fn):
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    node = tree.body[0]
    body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                             and isinstance(node.body[0].value, ast.Constant)) else node.body
    return body


def _static_value(m, s):
    if s.kind == "smeth":
        return getattr(_static_value(m, s.value[0]), s.value[1])()
    v = m
    for a in s.value:
        v = getattr(v, a)
    return v
