"""The unraveled view: how many paths of each length, and drawings of the paths and of the graph of states and units.

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from ..errors import ArgumentError
from .axes import _axes, _require

__all__ = ["path_length_distribution", "draw_paths", "draw_graph"]


def path_length_distribution(frame, y: str = "fraction", hue: str | None = None, ax=None):
    """Bar chart of paths per length, from :meth:`UnraveledGraph.length_distribution`.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``length`` and ``y`` (``"fraction"`` or ``"count"``); optionally a ``hue``
        column (``"model"``, say) to compare networks.
    y : {"fraction", "count"}
    hue : str, optional
    ax : matplotlib Axes, optional

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import unravel
    >>> ax = unravel.plots.path_length_distribution(unravel.unravel(10).length_distribution())
    >>> ax.get_xlabel()
    'path length (residual branches taken)'
    """
    import seaborn as sns

    if y not in ("fraction", "count"):
        raise ArgumentError(f"y={y!r}; allowed: 'fraction", "count'.")
    _require(frame, ["length", y] + ([hue] if hue else []), "path_length_distribution")
    ax = _axes(ax)
    data = frame.assign(**{y: frame[y].astype(float)})
    sns.barplot(data=data, x="length", y=y, hue=hue, ax=ax, native_scale=True,
                color=None if hue else sns.color_palette()[0])
    ax.set_xlabel("path length (residual branches taken)")
    ax.set_ylabel("fraction of paths" if y == "fraction" else "number of paths")
    if y == "count" and data[y].max() > 1e4:
        ax.set_yscale("log")
    n = int(frame["length"].max())
    ax.set_title(f"Path lengths of a network of {n} units")
    return ax


def draw_paths(g, ax=None):
    """Every path spelled out, one row each, shortest first (Veit et al. 2016, Fig. 1(b)).

    Units a path takes the residual branch of are boxes ``f_i``; elsewhere it runs along the
    shortcut. Meant for ``n <= 6`` (64 rows).
    """
    import seaborn as sns
    from matplotlib.patches import FancyBboxPatch

    paths = list(g.paths())
    ax = _axes(ax, size=(1.2 + 0.9 * (g.n + 2), 0.8 + 0.28 * len(paths)))
    palette = sns.color_palette("viridis", g.n + 1)
    for row, path in enumerate(paths):
        y = len(paths) - 1 - row
        color = palette[len(path)]
        ax.plot([0, g.n + 1], [y, y], color=color, lw=1.5, zorder=1)
        for unit in path:
            ax.add_patch(FancyBboxPatch((unit + 1 - 0.28, y - 0.3), 0.56, 0.6, boxstyle="round,pad=0.02",
                                        fc=color, ec="black", lw=0.6, zorder=2))
            ax.text(unit + 1, y, f"$f_{{{unit + 1}}}$", ha="center", va="center", fontsize=8, zorder=3,
                    color="white" if len(path) < 0.6 * g.n else "black")
    ax.set_xticks(range(g.n + 2), ["input"] + [_unit_label(g, i) for i in range(g.n)] + ["output"], fontsize=8)
    ax.set_yticks(range(len(paths)), [f"{len(p)}" for p in reversed(paths)], fontsize=7)
    ax.set_ylabel("path length")
    ax.set_xlim(-0.5, g.n + 1.5)
    ax.set_ylim(-0.7, len(paths) - 0.3)
    ax.set_title(f"{g.n} units unravel into {len(paths)} paths")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def _unit_label(g, i):
    u = g.units[i]
    return f"unit {i}" if u is None else u.name


def draw_graph(g, ax=None):
    """The DAG of states and units: shortcuts straight, residual branches as arcs labelled by
    unit, projection units in red and dashed, DenseNet layers as nodes above the chain."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    G = g.graph
    pos = {}
    for v, d in G.nodes(data=True):
        # states on the axis; a DenseNet layer sits above, just after its input state
        pos[v] = (d["index"], 0.0) if d["kind"] == "state" else (d["index"] + 0.5, 1.0)
    ax = _axes(ax, size=(min(18.0, 2.0 + 0.35 * g.n), 3.2))
    arc = -0.5 if g.n < 20 else -0.8
    for u, v, d in G.edges(data=True):
        projection = d.get("projection", False)
        color = "tab:red" if projection else ("0.35" if d["kind"] != "residual" else "tab:blue")
        style = "arc3,rad=0" if d["kind"] != "residual" or G.nodes[v]["kind"] == "layer" else f"arc3,rad={arc}"
        ax.add_patch(FancyArrowPatch(pos[u], pos[v], connectionstyle=style, arrowstyle="-|>", mutation_scale=7,
                                     color=color, lw=0.9, ls="--" if projection else "-", shrinkA=3, shrinkB=3))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.scatter(xs, ys, s=14, color="black", zorder=3)
    step = max(1, g.n // 12)
    ax.set_xticks(range(0, g.n + 1, step), [f"$x_{{{i}}}$" for i in range(0, g.n + 1, step)], fontsize=8)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.5, g.n + 0.5)
    has_layers = any(d["kind"] == "layer" for _, d in G.nodes(data=True))
    ax.set_ylim(-0.3, 1.4 if has_layers else 0.9)
    ax.legend(handles=[Line2D([], [], color="0.35", label="shortcut / concat"),
                       Line2D([], [], color="tab:blue", label="residual branch"),
                       Line2D([], [], color="tab:red", ls="--", label="projection unit")],
              loc="upper right", fontsize=7, frameon=False, ncol=3)
    ax.set_title(f"{g.n} units, {g.num_paths:,} paths" if g.num_paths < 10**9 else
                 f"{g.n} units, 2^{g.num_paths.bit_length() - 1} paths" if g.num_paths & (g.num_paths - 1) == 0
                 else f"{g.n} units, {g.num_paths:.3e} paths")
    return ax
