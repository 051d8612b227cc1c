"""Study kinds: the registry of what a spec's ``kind`` may name.

A kind is a function ``run(ctx) -> list of claims`` (see :class:`~unravel.study.runner.Context`),
the model roles its spec must and may give, and the dataclass of its ``analysis`` settings. The
registry does not check what a kind's function measures or claims.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import NamedTuple

from ..errors import ArgumentError

__all__ = ["Kind", "KINDS", "register_kind", "kind_names"]


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
    """The registered study kinds, in registration order.

    Examples
    --------
    >>> from unravel.study import kind_names
    >>> kind_names()[:2]
    ('veit-lesion', 'veit-paths')
    """
    return tuple(_KINDS)
