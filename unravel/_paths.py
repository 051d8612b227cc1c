"""Enumerating and sampling the paths of an unraveled graph (see :mod:`unravel.graph`), lazily and
uniformly per length, by dynamic programming over path counts. Private: :mod:`unravel.graph`
exports the public functions. Nothing here checks that a graph is a DAG built by
:func:`unravel.graph.build_graph` beyond the attributes it reads.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import networkx as nx

from ._utils import python_rng
from .errors import ArgumentError


def _add(acc: list[int], counts: list[int], shift: int) -> None:
    need = len(counts) + shift
    if len(acc) < need:
        acc.extend([0] * (need - len(acc)))
    for k, c in enumerate(counts):
        acc[k + shift] += c


def _to_target(G: nx.MultiDiGraph) -> dict:
    """``R[v][k]``: paths from ``v`` to the target of length ``k`` (reverse programme)."""
    target = G.graph["target"]
    R: dict = {target: [1]}
    for v in reversed(list(nx.topological_sort(G))):
        if v == target:
            continue
        acc: list[int] = []
        for _, w, length in G.out_edges(v, data="length"):
            if w in R:
                _add(acc, R[w], length)
        R[v] = acc
    return R


def _remaining(R, v, r):
    counts = R.get(v, ())
    return counts[r] if 0 <= r < len(counts) else 0


def all_paths(G: nx.MultiDiGraph, length: int | None = None) -> Iterator[tuple[int, ...]]:
    """Lazily yield each path once, as the sorted tuple of units whose residual branch it takes.

    Paths come shortest first. Branches that hold no path of the wanted length are never
    entered, so the work is proportional to the paths yielded.

    Parameters
    ----------
    G : networkx.MultiDiGraph
    length : int, optional
        Only paths of this length.

    Examples
    --------
    >>> from unravel.graph import all_paths, build_graph
    >>> list(all_paths(build_graph([None] * 3), length=2))
    [(0, 1), (0, 2), (1, 2)]
    >>> sum(1 for _ in all_paths(build_graph([None] * 10)))
    1024
    """
    n = G.graph["n"]
    lengths = range(n + 1) if length is None else [_as_int(length)]
    R = _to_target(G)
    source, target = G.graph["source"], G.graph["target"]
    # out-edges in a fixed order (residual branch first, then by node), so that paths of one
    # length come in lexicographic order of their units
    order = {v: sorted(((w, d["length"], d["unit"]) for _, w, d in G.out_edges(v, data=True)),
                       key=lambda e: (-e[1], G.nodes[e[0]]["index"], G.nodes[e[0]]["kind"])) for v in G}
    for k in lengths:
        if _remaining(R, source, k) == 0:
            continue
        stack = [(source, k, ())]
        while stack:
            v, r, taken = stack.pop()
            if v == target:
                yield taken
                continue
            for w, step, unit in reversed(order[v]):
                if _remaining(R, w, r - step):
                    stack.append((w, r - step, taken + ((unit,) if step else ())))


def _as_int(v):
    """numpy and torch integers count as ints; anything else is left for the caller to reject."""
    try:
        return operator.index(v) if not isinstance(v, bool) else v
    except TypeError:
        return v


def sample_paths(G: nx.MultiDiGraph, length: int, num: int, generator=None) -> list[tuple[int, ...]]:
    """``num`` paths of the given length drawn uniformly (with replacement) among all such paths.

    Each step picks an out-edge with probability proportional to the exact number of ways to
    finish the path from there, so every path of that length has probability ``1 / N_k``. Counts
    are exact integers, so this stays uniform when ``N_k`` exceeds 2^64.

    Parameters
    ----------
    G : networkx.MultiDiGraph
    length : int
    num : int
    generator : None, int, random.Random, torch.Generator or numpy.random.Generator
        The source of randomness; an int is a seed.

    Returns
    -------
    list of tuple of int

    Raises
    ------
    ValueError
        If no path has that length.

    Examples
    --------
    >>> from unravel.graph import build_graph, sample_paths
    >>> paths = sample_paths(build_graph([None] * 6), length=2, num=3, generator=0)
    >>> [len(p) for p in paths]
    [2, 2, 2]
    """
    length, num = _as_int(length), _as_int(num)
    R = _to_target(G)
    source, target = G.graph["source"], G.graph["target"]
    if not isinstance(length, int) or _remaining(R, source, length) == 0:
        lengths = [k for k, c in enumerate(R.get(source, [])) if c]
        raise ArgumentError(f"no path has length {length!r}; lengths with paths: {lengths[0]}..{lengths[-1]}.")
    if not isinstance(num, int) or num < 0:
        raise ArgumentError(f"num={num!r}: must be a non-negative integer.")
    rng = python_rng(generator)
    out_edges = {v: [(w, d["length"], d["unit"]) for _, w, d in G.out_edges(v, data=True)] for v in G}
    paths = []
    for _ in range(num):
        v, r, taken = source, length, []
        while v != target:
            # choose edge e with probability R[w][r - step] / R[v][r], exactly
            pick = rng.randrange(_remaining(R, v, r))
            for w, step, unit in out_edges[v]:
                pick -= _remaining(R, w, r - step)
                if pick < 0:
                    break
            if step:
                taken.append(unit)
            v, r = w, r - step
        paths.append(tuple(sorted(taken)))
    return paths
