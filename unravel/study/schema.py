"""Checks of spec values: each ``check(path, value) -> value`` raises a SpecError that names the
key path and what is allowed; :func:`section` reads a dataclass from a mapping with them.

Public so that a study's own settings (its ``analysis:`` dataclass) check their values the same way.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Mapping
from dataclasses import field, fields
from typing import Any

from .._utils import MAX_INT64
from ..errors import SpecError

__all__ = ["join", "bad", "integer", "number", "choice", "text", "flag", "optional", "list_of", "setting", "keys",
           "section"]


def join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def bad(path: str, value, allowed: str):
    hint = " (YAML reads 3e-3 as text: write 3.0e-3)" if isinstance(value, str) and is_number(value) else ""
    raise SpecError(f"spec field {path!r} is {value!r}; allowed: {allowed}{hint}")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: The largest integer a spec may give (seeds and sizes must fit a 64-bit integer).
MAX_INT = MAX_INT64


def integer(minimum: int) -> Callable:
    def check(path, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > MAX_INT:
            bad(path, v, f"an integer >= {minimum} (and < 2**63)")
        return v
    return check


def number(low: float, high: float | None = None, *, open_low: bool = False) -> Callable:
    what = (f"a finite number {'>' if open_low else '>='} {low}" + (f" and <= {high}" if high is not None else ""))

    def check(path, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low \
                or (open_low and v == low) or (high is not None and v > high):
            bad(path, v, what)
        return v
    return check


def choice(names: Callable[[], Any]) -> Callable:
    """One of ``names()``, read when checked (registries grow)."""
    def check(path, v):
        allowed = tuple(names())
        if not isinstance(v, str) or v not in allowed:
            bad(path, v, ", ".join(allowed))
        return v
    return check


def text(path, v):
    if not isinstance(v, str):
        bad(path, v, "text")
    return v


def flag(path, v):
    if v not in (True, False, 0, 1):
        bad(path, v, "true or false")
    return bool(v)


def optional(check: Callable) -> Callable:
    return lambda path, v: None if v is None else check(path, v)


def list_of(check: Callable, what: str) -> Callable:
    def checked(path, v):
        if not isinstance(v, (list, tuple)) or not v:
            bad(path, v, f"a non-empty list of {what}")
        return tuple(check(f"{path}[{i}]", x) for i, x in enumerate(v))
    return checked


def setting(default, check: Callable):
    """A dataclass field whose YAML value ``check`` checks."""
    return field(default=default, metadata={"check": check})


def keys(value, path: str, allowed) -> Mapping:
    """``value`` if it is a mapping of ``allowed`` keys only."""
    allowed = tuple(allowed)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        where = f"spec field {path!r}" if path else "a spec"
        raise SpecError(f"{where} must be a mapping (with fields {', '.join(allowed) or 'none'}); got {value!r}")
    for key in value:
        if key not in allowed:
            raise SpecError(f"spec field {join(path, key)!r} is unknown; allowed fields: "
                            f"{', '.join(allowed) or 'none'}")
    return value


def section(cls, value, path: str):
    """The dataclass ``cls`` from the mapping ``value`` at ``path``, each field checked."""
    value = keys(value, path, [f.name for f in fields(cls)])
    return cls(**{f.name: f.metadata.get("check", _any)(join(path, f.name), value[f.name]) for f in fields(cls)
                  if f.name in value})


def _any(path, v):
    return v
