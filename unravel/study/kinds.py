"""Study kinds: the registry of what a spec's ``kind`` may name.

Kinds load on first use: a lookup of a kind that is not registered loads the study folders'
code (:func:`~unravel.study.folders.load_all_studies`), which registers theirs. A kind is a function ``run(ctx) -> list of claims`` (see :class:`~unravel.study.runner.Context`),
the model roles its spec must and may give, and the dataclass of its ``analysis`` settings. The
registry does not check what a kind's function measures or claims.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import NamedTuple

from ..errors import ArgumentError, SpecError
from .folders import load_all_studies

__all__ = ["Kind", "KINDS", "register_kind", "kind_names", "get_kind"]


class Kind(NamedTuple):
    """One study kind. ``KINDS[name][0]`` is its function and ``KINDS[name][1]`` its roles."""

    #: ``run(ctx) -> list of claim dicts``.
    run: Callable
    #: Model roles its spec must give (``models.<role>``).
    roles: tuple[str, ...]
    #: Model roles its spec may give besides.
    optional_roles: tuple[str, ...] = ()
    #: Dataclass of its ``analysis:`` settings (None: it takes none).
    analysis: type | None = None


_KINDS: dict[str, Kind] = {}

#: Study kinds by name: a live, read-only view of the registry (name -> :class:`Kind`).
KINDS = MappingProxyType(_KINDS)


def register_kind(name: str, *, roles=(), optional_roles=(), analysis: type | None = None,
                  replace: bool = False) -> Callable[[Callable], Callable]:
    """Register the decorated function as the study kind ``name``.

    Parameters
    ----------
    name : str
        What a spec's ``kind`` field names.
    roles : sequence of str
        Model roles a spec of this kind must give under ``models``.
    optional_roles : sequence of str
        Model roles it may give besides; any other role is refused.
    analysis : dataclass type, optional
        Its ``analysis`` settings, one field each (with its default); a key that is not a field
        is refused. A field's ``metadata["check"]``, a function ``(path, value) -> value``, may
        check its value. None: the kind takes no settings.
    replace : bool
        Allow replacing a registered kind.

    Returns
    -------
    callable
        A decorator that registers its function and returns it unchanged.

    Examples
    --------
    >>> from unravel.study import KINDS, register_kind
    >>> @register_kind("count-units", roles=("net",), replace=True)
    ... def count_units(ctx):
    ...     return []
    >>> KINDS["count-units"].roles
    ('net',)
    """
    if not isinstance(name, str) or not name:
        raise ArgumentError(f"a study kind's name must be a non-empty string; got {name!r}.")
    if name in _KINDS and not replace:
        raise ArgumentError(f"a study kind named {name!r} is registered already; pass replace=True to replace it.")

    def decorate(run: Callable) -> Callable:
        if not callable(run):
            raise ArgumentError(f"study kind {name!r} must decorate a function run(ctx); got {run!r}.")
        _KINDS[name] = Kind(run, tuple(roles), tuple(optional_roles), analysis)
        return run

    return decorate


def kind_names() -> tuple[str, ...]:
    """Every study kind, the study folders' loaded first, in registration order.

    Examples
    --------
    >>> from unravel.study import kind_names
    >>> "veit-lesion" in kind_names()
    True
    """
    load_all_studies()
    return tuple(_KINDS)


def get_kind(name: str, path: str = "kind") -> Kind:
    """The kind ``name``, loading the study folders' code if it is not registered yet.

    Raises
    ------
    SpecError
        If no study registers it; the message names the spec field ``path`` and the kinds there are.

    Examples
    --------
    >>> from unravel.study import get_kind
    >>> get_kind("veit-paths").roles
    ('residual',)
    """
    if not (isinstance(name, str) and name in _KINDS):
        load_all_studies()
    if not isinstance(name, str) or name not in _KINDS:
        raise SpecError(f"spec field {path!r} is {name!r}; allowed: {', '.join(_KINDS)}")
    return _KINDS[name]
