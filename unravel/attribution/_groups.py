"""The exact decomposition with a path's length counted in groups of units (a transformer
layer's attention and MLP units, a CNN stage): a path has length k when it takes a residual
branch in k groups. Private: :func:`unravel.attribution.path_length_gradients` calls it for
``group=`` other than single units.

Within a group the channels split in two (the paper's symbols; a group's Jacobian is the product
of its units' ``P^T (S + R)`` factors, expanded): ``G_k``, paths that have taken no residual
branch of the group yet, and ``H_k``, paths that have (the group already counted in ``k``).
Backwards through unit l of the group::

    G_k <- S^T P^T G_k
    H_k <- (S + R)^T P^T H_k + R^T P^T G_{k-1}

and at the group's first unit ``G_k + H_k`` leave it. With every group a single unit this is the
unit recursion. It does not check that the groups mean anything; :func:`group_records` checks
that they run one after another.
"""

from __future__ import annotations

from ..errors import ArgumentError
from ._propagate import _fill


def _add(a, b):
    return a if b is None else b if a is None else a + b


def group_records(records, groups):
    """``groups`` (tuples of unit indices) as lists of positions in ``records`` (the order the
    units ran), each a run of consecutive positions; refuses groups that do not run so."""
    where = {rec.unit.index: i for i, rec in enumerate(records)}
    out = []
    for g in groups:
        pos = sorted(where[i] for i in g)
        if pos != list(range(pos[0], pos[0] + len(pos))):
            raise ArgumentError(f"the units {list(g)} of one group did not run one after another (a reorder moved "
                                "them apart?); a path's length in groups needs each group's units together.")
        out.append(pos)
    out.sort(key=lambda p: p[0])
    return out


def group_counts(records, groups) -> list[int]:
    """Paths of each length in groups: ``prod_g (a_g + b_g t)``, with ``a_g`` the ways through
    group g without a residual branch (1, or 0 if it holds a plain unit) and ``b_g`` the other
    ways (each live residual unit branches two ways; a deleted or plain unit one)."""
    counts = [1]
    for pos in groups:
        total, plain = 1, False
        for i in pos:
            rec = records[i]
            if rec.unit.kind == "dense":
                raise ArgumentError("group= with several DenseNet layers in one group is not supported (their paths "
                                    "are not a chain of choices); use group='unit'.")
            if rec.r is not None and rec.s is not None:
                total *= 2
            plain = plain or rec.s is None
        a = 0 if plain else 1
        b = total - a
        counts = [(counts[k] if k < len(counts) else 0) * a + (counts[k - 1] if k >= 1 else 0) * b
                  for k in range(len(counts) + 1)]
    while len(counts) > 1 and counts[-1] == 0:
        counts.pop()
    return counts


def propagate_groups(records, groups, G, M, names_of, between, vjp, out=None):
    """The channels at the first unit's input from ``G`` at the last unit's output, group by group
    from the last. ``names_of(rec)``: the parameter names of a unit; ``between(l, channels)``: the
    channels carried back across the code between unit l - 1 and unit l (or the stem at l = 0);
    ``vjp(output, leaf, channels, names, shift)`` as in :func:`unravel.attribution.exact._exact`.
    With ``out`` the result is written there as :func:`~unravel.attribution._propagate.through_unit`
    writes it."""
    for pos in reversed(groups):
        c = len(G) - 1
        c_new = min(c + 1, M + 1)
        G = G[:c] + [None] * (c_new - c) + [G[c]]  # lengths 0..c_new-1, then the overflow
        H = [None] * (c_new + 1)
        for l in reversed(pos):
            rec = records[l]
            names = names_of(rec)
            gz, hz = G, H
            if rec.y is not rec.zl:
                gz = vjp(rec.y, rec.zl, G, names, 0)
                hz = vjp(rec.y, rec.zl, H, names, 0)
            if rec.s is None:  # a plain unit: every path takes its residual branch
                G = [None] * (c_new + 1)
            else:
                G = gz if rec.s is rec.x else vjp(rec.s, rec.x, gz, names, 0)
            # (S + R)^T in one VJP through their sum; the group is counted already
            zh = hz if rec.z is rec.x else vjp(rec.z, rec.x, hz, names, 0)
            # G_{k-1} -> H_k: the group's first residual branch on the path adds one
            rg = [None] * (c_new + 1) if rec.r is None else vjp(rec.r, rec.x, gz, names, 1)
            H = list(zh)
            for k in range(c_new):
                if k >= 1:
                    H[k] = _add(H[k], rg[k - 1])
            H[c_new] = _add(_add(H[c_new], rg[c_new - 1]), rg[c_new])
            del gz, hz, zh, rg
            if l != pos[0]:  # code between two units of the group
                G, H = between(l, G), between(l, H)
                records[l] = None  # streamed: a unit's graphs go once its VJPs are taken
        G = between(pos[0], [_add(g, h) for g, h in zip(G, H)])
        records[pos[0]] = None
    if out is None:
        return G
    return _fill(out, G[:-1], G[-1], len(G) - 1, M)
