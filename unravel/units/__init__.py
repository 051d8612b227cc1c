"""Residual units: the places where a network adds a residual branch to a shortcut.

Finds the units of a model, in forward order, through adapters (one per block class) that read a
module and never change it (:mod:`~unravel.units.find`), and describes them
(:mod:`~unravel.units.parts`: the bottom floor, which the adapters build on). It does not check
that a registered adapter describes its block faithfully: :func:`unravel.verify_units` does, and
``tests`` do for the built-in ones by comparing ``unit.forward`` with the module.

A unit computes ``y = post(shortcut(x) + residual(x))`` [1]_. Three kinds exist:

``"residual"``
    the usual unit; ``shortcut`` is the identity or a projection.
``"plain"``
    a unit of a plain (shortcut-free) network, ``y = post(residual(x))``. Its ``shortcut`` is not
    part of the forward: it is the bypass used when the unit is deleted (the identity, or a
    parameter-free subsample-and-pad where the shape changes), so that lesions on plain and
    residual nets compare like with like, as Veit et al. delete layers of VGG [1]_.
``"dense"``
    a DenseNet layer, ``y = concat(x, h(x))``; written as a unit, ``shortcut`` pads ``x`` with
    zero channels and ``residual`` puts ``h(x)`` after zero channels, so ``shortcut + residual``
    is the concatenation.

References
----------
.. [1] A. Veit, M. Wilber, S. Belongie. "Residual Networks Behave Like Ensembles of Relatively
   Shallow Networks." NeurIPS 2016.
"""

from .find import find_units, unit_table
from .groups import GROUPS, unit_groups
from .parts import UNIT_KINDS, ResidualUnit, UnitParts, host_modules, inplace, is_identity, resolve_units, swappable

__all__ = ["ResidualUnit", "UnitParts", "find_units", "unit_table", "resolve_units", "swappable", "is_identity",
           "inplace", "host_modules", "UNIT_KINDS", "unit_groups", "GROUPS"]
