"""The unraveled view: a residual network of n units as a DAG whose source-to-target paths are
its 2^n paths (Veit et al. 2016, Fig. 1), with path algebra by dynamic programming over the DAG.

Nothing here enumerates paths unless asked to (``all_paths`` is lazy) and nothing checks that a
graph handed to the functions was built by :func:`unravel`; they need only a DAG whose edges carry
``length`` (0 or 1) and ``unit``, and whose ``graph`` dict names ``source`` and ``target``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import networkx as nx
from torch import nn

from ._paths import _add, _as_int, all_paths, sample_paths
from ._utils import python_rng
from .errors import ArgumentError, ArgumentTypeError
from .units import ResidualUnit, find_units

__all__ = [
    "UnraveledGraph",
    "unravel",
    "build_graph",
    "path_length_counts",
    "count_paths",
    "all_paths",
    "sample_paths",
]


def _dense_groups(units: Sequence[ResidualUnit]) -> list[list[int]]:
    """Split unit indices into runs: a dense block (consecutive dense units with one parent
    module) is one run; every other unit is a run of its own."""
    groups: list[list[int]] = []
    parent = None
    for i, u in enumerate(units):
        p = u.name.rsplit(".", 1)[0] if u.kind == "dense" else None
        if p is not None and p == parent and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
        parent = p
    return groups


def build_graph(units: Sequence[ResidualUnit | None]) -> nx.MultiDiGraph:
    """The DAG of states and units of a network; ``None`` entries are anonymous residual units.

    Parameters
    ----------
    units : sequence of ResidualUnit or None

    Returns
    -------
    networkx.MultiDiGraph
        Nodes ``"x0" ... "xn"`` are the states between units (``kind="state"``); states inside a
        dense block lie on no path and are left out. A residual or
        projection unit ``l`` adds two parallel edges ``x_l -> x_{l+1}``, keyed ``"shortcut"``
        (``length=0``) and ``"residual"`` (``length=1``); a plain unit only the residual edge.
        A dense block of m layers starting at state ``x_a`` adds a node ``"h<l>"`` per layer
        (``kind="layer"``); each layer is fed by the block input and by every earlier layer of
        its block (``kind="residual"``, ``length=1``), and everything reaches the block output
        ``x_{a+m}`` (``kind="concat"``, ``length=0``). Transitions between blocks are shared by
        every path and are not counted: consecutive blocks meet at one state node. A deleted unit
        (a view from inside a lesion, ``unit.deleted``) keeps only its shortcut edge; a deleted
        dense layer has no node. Edges carry
        ``unit``, ``name`` and ``projection``; ``G.graph`` holds ``source``, ``target`` and ``n``.

    Examples
    --------
    >>> G = build_graph([None, None, None])
    >>> G.number_of_nodes(), G.number_of_edges()
    (4, 6)
    >>> sorted(k for _, _, k in G.edges(keys=True))[:2]
    ['residual', 'residual']
    """
    G = nx.MultiDiGraph(source="x0", target=f"x{len(units)}", n=len(units))
    for i in range(len(units) + 1):
        G.add_node(f"x{i}", kind="state", index=i)

    def info(i):
        u = units[i]
        # a dense layer's padding "shortcut" is structure, not a projection worth marking
        return dict(unit=i, name=u.name if u is not None else f"unit{i}",
                    projection=bool(u is not None and u.projection and u.kind != "dense"))

    groups = _dense_groups(units) if None not in units else [[i] for i in range(len(units))]
    for group in groups:
        first = group[0]
        u = units[first]
        if u is not None and u.kind == "dense":
            a, b = f"x{first}", f"x{group[-1] + 1}"
            sources = [a]
            for i in group:
                if getattr(units[i], "deleted", False):  # a deleted layer adds zero channels
                    continue
                h = f"h{i}"
                G.add_node(h, kind="layer", index=i)
                for s in sources:
                    G.add_edge(s, h, key="residual", kind="residual", length=1, **info(i))
                sources.append(h)
            for s in sources:
                G.add_edge(s, b, key="concat", kind="concat", length=0, unit=None, name="concat", projection=False)
            continue
        a, b = f"x{first}", f"x{first + 1}"
        deleted = getattr(u, "deleted", False)
        if u is None or u.kind != "plain" or deleted:  # a deleted unit is its bypass
            G.add_edge(a, b, key="shortcut", kind="shortcut", length=0, **info(first))
        if not deleted:
            G.add_edge(a, b, key="residual", kind="residual", length=1, **info(first))
    # consecutive dense layers of one block share one state node: the states between them lie on
    # no path, and only nodes on a source-to-target path belong to the unraveled view
    G.remove_nodes_from([v for v in list(G) if G.degree(v) == 0 and v not in (G.graph["source"], G.graph["target"])])
    return G


def path_length_counts(G: nx.MultiDiGraph, source=None, target=None) -> list[int]:
    """Number of ``source``-to-``target`` paths of each length (exact Python ints).

    Dynamic programme over the DAG in topological order:
    ``N_v[k] = sum over edges (u, v) of N_u[k - length(u, v)]``.

    Parameters
    ----------
    G : networkx.MultiDiGraph
        A DAG whose edges carry ``length``.
    source, target : node, optional
        Default ``G.graph["source"]`` and ``G.graph["target"]``.

    Returns
    -------
    list of int
        ``counts[k]`` paths of length ``k``, for ``k = 0 .. n``.

    Raises
    ------
    networkx.NetworkXUnfeasible
        If ``G`` has a cycle.

    Examples
    --------
    >>> path_length_counts(build_graph([None] * 4))
    [1, 4, 6, 4, 1]

    Notes
    -----
    For a chain of n units the counts are the binomial coefficients C(n, k): path lengths are
    Binomial(n, 1/2) [1]_.

    References
    ----------
    .. [1] A. Veit, M. Wilber, S. Belongie. "Residual Networks Behave Like Ensembles of
       Relatively Shallow Networks." NeurIPS 2016.
    """
    source = G.graph["source"] if source is None else source
    target = G.graph["target"] if target is None else target
    N: dict = {source: [1]}
    for v in nx.topological_sort(G):
        if v not in N:
            continue
        for _, w, length in G.out_edges(v, data="length"):
            _add(N.setdefault(w, []), N[v], length)
    counts = N.get(target, [])
    n = G.graph.get("n", len(counts) - 1)
    return counts + [0] * (n + 1 - len(counts))


def count_paths(G: nx.MultiDiGraph) -> int:
    """Total number of paths from source to target.

    Examples
    --------
    >>> count_paths(build_graph([None] * 54)) == 2 ** 54
    True
    """
    return sum(path_length_counts(G))


class UnraveledGraph:
    """A network seen as its paths: the object :func:`unravel` returns.

    Attributes
    ----------
    n : int
        Number of units.
    units : list of ResidualUnit or None
        The model's units (None when built from an int).
    graph : networkx.MultiDiGraph
        See :func:`build_graph`.
    """

    def __init__(self, units: Sequence[ResidualUnit | None]):
        self.units = list(units)
        self.n = len(self.units)
        self.graph = build_graph(self.units)
        self._counts: list[int] | None = None

    def __repr__(self):
        return f"UnraveledGraph(n={self.n}, num_paths={self.num_paths})"

    def to_networkx(self) -> nx.MultiDiGraph:
        """A copy of the DAG of states and units (:func:`build_graph`)."""
        return self.graph.copy()

    def length_counts(self) -> list[int]:
        """Exact number of paths of each length; index = length (:func:`path_length_counts`)."""
        if self._counts is None:
            self._counts = path_length_counts(self.graph)
        return list(self._counts)

    @property
    def num_paths(self) -> int:
        """Total number of paths (exact)."""
        return sum(self.length_counts())

    def length_distribution(self):
        """Tidy frame: ``length``, ``count`` (exact int), ``fraction``.

        Examples
        --------
        >>> unravel(3).length_distribution().to_dict("list")
        {'length': [0, 1, 2, 3], 'count': [1, 3, 3, 1], 'fraction': [0.125, 0.375, 0.375, 0.125]}
        """
        import pandas as pd

        counts = self.length_counts()
        total = sum(counts)
        return pd.DataFrame({"length": list(range(len(counts))), "count": pd.Series(counts, dtype=object),
                             "fraction": [c / total for c in counts]})

    def paths(self, length: int | None = None) -> Iterator[tuple[int, ...]]:
        """Lazy iterator over paths (tuples of units whose residual branch they take); see
        :func:`all_paths`."""
        return all_paths(self.graph, length)

    def sample_paths(self, length: int, num: int, generator=None) -> list[tuple[int, ...]]:
        """Uniform sample among the paths of one length; see :func:`sample_paths`."""
        length, num = _as_int(length), _as_int(num)
        if self._is_chain() and isinstance(length, int) and 0 <= length <= self.n and isinstance(num, int) and num >= 0:
            # a chain's paths of length k are the k-subsets of units: sample one directly
            rng = python_rng(generator)
            return [tuple(sorted(rng.sample(range(self.n), length))) for _ in range(num)]
        return sample_paths(self.graph, length, num, generator)

    def _is_chain(self) -> bool:
        return all(u is None or u.kind == "residual" for u in self.units)

    def draw(self, ax=None, max_spelled: int = 6):
        """Draw the network: every path spelled out for ``n <= max_spelled`` (Veit et al. Fig.
        1(b)), otherwise the DAG with units labelled and projection units marked.

        Returns the matplotlib Axes.
        """
        from . import plots

        if self.n <= max_spelled:
            return plots.draw_paths(self, ax=ax)
        return plots.draw_graph(self, ax=ax)


def unravel(model_or_units_or_n) -> UnraveledGraph:
    """The unraveled view of a network.

    Parameters
    ----------
    model_or_units_or_n : torch.nn.Module, sequence of ResidualUnit, or int
        A model (its units come from :func:`unravel.find_units`), its units, or a number of
        anonymous residual units.

    Returns
    -------
    UnraveledGraph

    Raises
    ------
    TypeError, ValueError
        For anything else, or a negative n.

    Examples
    --------
    >>> import unravel as uv
    >>> g = uv.unravel(uv.models.resnet_cifar(110))
    >>> g.num_paths == 2 ** 54, g.length_counts()[:3]
    (True, [1, 54, 1431])
    >>> uv.unravel(3).length_counts()
    [1, 3, 3, 1]
    """
    x = model_or_units_or_n
    if isinstance(x, nn.Module):
        return UnraveledGraph(find_units(x))
    if isinstance(x, bool):
        raise ArgumentTypeError("unravel() takes a model, a list of units or an int, not a bool.")
    if isinstance(x, int):
        if x < 0:
            raise ArgumentError(f"n={x}: a network has a non-negative number of units.")
        return UnraveledGraph([None] * x)
    if isinstance(x, (list, tuple)) and all(isinstance(u, ResidualUnit) for u in x):
        return UnraveledGraph(x)
    raise ArgumentTypeError(f"unravel() takes a torch.nn.Module, a list of ResidualUnit or an int; got {type(x).__name__}.")

