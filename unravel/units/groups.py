"""Groups of units that move together: each unit alone, a transformer layer's sublayers
(attention and MLP of one decoder layer), a CNN stage, or groups of your own. The sweeps delete
and reorder groups, and the attribution counts a path's length in groups. It checks that groups
are disjoint and run one after another; it does not check that a group means anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ArgumentError
from .parts import ResidualUnit, resolve_units

__all__ = ["GROUPS", "unit_groups"]

#: The named groupings :func:`unit_groups` knows.
GROUPS = ("unit", "layer", "stage")


def unit_groups(units: Sequence[ResidualUnit], group="unit") -> list[tuple[int, ...]]:
    """The unit indices of each group, in forward order.

    Parameters
    ----------
    units : list of ResidualUnit
        From :func:`unravel.find_units`.
    group : {"unit", "layer", "stage"} or list of lists of units
        ``"unit"``: every unit alone. ``"layer"``: the units of one block module together (a
        transformer decoder layer's attention and MLP units; in a CNN, whose blocks hold one
        unit each, the same as ``"unit"``). ``"stage"``: a new group starts at every unit with a
        projection shortcut (a CNN stage: the units between changes of shape; a transformer,
        whose shortcuts are all identities, is one stage). A list of lists: groups of your own
        (unit indices, names or units), each run one after another; units left out stay alone.

    Returns
    -------
    list of tuple of int
        Disjoint groups covering every unit, each a run of consecutive indices.

    Raises
    ------
    ArgumentError
        For an unknown name, a unit in two groups, or a group whose units do not run one after
        another.

    Examples
    --------
    >>> import unravel
    >>> from unravel.units import unit_groups
    >>> units = unravel.find_units(unravel.lm.gpt2(context=8, depth=2, width=8, heads=2))
    >>> unit_groups(units, "layer")
    [(0, 1), (2, 3)]
    >>> unit_groups(unravel.find_units(unravel.models.resnet_cifar(14)), "stage")
    [(0, 1), (2, 3), (4, 5)]
    >>> unit_groups(units, [[0, 1]])
    [(0, 1), (2,), (3,)]
    """
    if isinstance(group, str):
        if group == "unit":
            return [(u.index,) for u in units]
        if group == "layer":
            by_module: dict[int, list[int]] = {}
            for u in units:
                by_module.setdefault(id(u.module), []).append(u.index)
            return _checked(list(by_module.values()), "group='layer'", units)
        if group == "stage":
            stages: list[list[int]] = []
            for u in units:
                if not stages or u.projection:
                    stages.append([])
                stages[-1].append(u.index)
            return [tuple(s) for s in stages]
        raise ArgumentError(f"group={group!r} is not a grouping: give one of {', '.join(map(repr, GROUPS))}, or a "
                            "list of lists of units (indices or names).")
    try:
        spec = [list(g) if not isinstance(g, (str, int)) else [g] for g in group]
    except TypeError:
        raise ArgumentError(f"group={group!r} is not a grouping: give one of {', '.join(map(repr, GROUPS))}, or a "
                            "list of lists of units (indices or names).") from None
    seen: dict[int, int] = {}
    groups: list[list[int]] = []
    for j, g in enumerate(spec):
        idx = [u.index for u in resolve_units(units, g)]
        if not idx:
            raise ArgumentError(f"group {j} of group= is empty; every group needs at least one unit.")
        for i in idx:
            if i in seen:
                raise ArgumentError(f"unit {i} ({units[i].name}) is in groups {seen[i]} and {j}; groups must not "
                                    "overlap.")
            seen[i] = j
        groups.append(sorted(idx))
    groups += [[u.index] for u in units if u.index not in seen]
    groups.sort(key=lambda g: g[0])
    return _checked(groups, "group=", units)


def _checked(groups, what, units):
    for g in groups:
        if list(g) != list(range(g[0], g[0] + len(g))):
            names = ", ".join(units[i].name for i in g)
            raise ArgumentError(f"{what} needs each group's units to run one after another; units {list(g)} "
                                f"({names}) do not.")
    return [tuple(g) for g in groups]
