"""Figures from unravel's tidy frames (seaborn) and drawings of the unraveled view (matplotlib).

Plotting never computes science: every function takes a frame or graph that an analysis made,
and returns the matplotlib Axes it drew on. It does not check that a frame came from unravel
beyond the columns it needs.
"""

from __future__ import annotations

from .errors import ArgumentError

__all__ = ["path_length_distribution", "deletion_errors", "error_vs_k", "gradient_by_length",
           "length_heatmap", "norm_ratios", "subnetwork_errors", "by_epoch", "unit_spectra", "spectrum_distribution",
           "over_training", "lesion_effects", "training_curves", "draw_paths", "draw_graph", "save"]


def _axes(ax, size=(6.0, 3.6)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _require(frame, columns, what):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArgumentError(f"{what} needs a frame with columns {columns}; missing {missing} "
                         f"(got {list(frame.columns)}).")


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
        raise ArgumentError(f"y={y!r}; allowed: 'fraction', 'count'.")
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


def _finish(ax):
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def deletion_errors(frame, hue: str | None = "model", ax=None):
    """Test error after deleting each single unit (Veit et al. 2016, Fig. 3), from
    :func:`unravel.lesion.delete_each` frames; dashed lines mark each model's unlesioned error
    and projection units are marked with open circles.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"variant": [-1, 0, 1], "units": ["", "0", "1"], "error": [.1, .2, .15],
    ...                   "projection": [False, False, True], "model": "resnet"})
    >>> unravel.plots.deletion_errors(f).get_ylabel()
    'test error'
    """
    import seaborn as sns

    _require(frame, ["variant", "units", "error"], "deletion_errors")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    units = frame[frame.variant >= 0].assign(unit=lambda d: d.units.astype(str).astype(int))
    sns.lineplot(data=units, x="unit", y="error", hue=hue, marker="o", ax=ax)
    if "projection" in units.columns and units.projection.any():
        proj = units[units.projection]
        ax.scatter(proj.unit, proj.error, s=90, facecolors="none", edgecolors="black", zorder=5,
                   label="projection unit")
    palette = dict(zip(units[hue].unique(), sns.color_palette())) if hue else {}
    base = frame[frame.variant == -1]
    for name, err in (base.groupby(hue).error.mean().items() if hue else [(None, base.error.mean())]):
        ax.axhline(err, ls="--", lw=1, color=palette.get(name, "0.4"))
    ax.set_xlabel("deleted unit")
    ax.set_ylabel("test error")
    ax.set_title("Deleting single units (dashed: no deletion)")
    ax.legend(fontsize=8, frameon=False)
    return _finish(ax)


def error_vs_k(frame, hue: str | None = "model", ax=None, x: str = "k", predicted: str | None = None):
    """Mean test error (with its standard deviation over draws and seeds) against the number of
    deleted or swapped units k (Veit et al. 2016, Fig. 5a); k = 0 is the unlesioned network.

    ``x="kendall_tau"`` plots each draw's error against Kendall's tau between the original and
    the lesioned order instead (Fig. 5b, from :func:`unravel.lesion.reorder_random`). ``predicted``
    names a column drawn as a dotted mean curve beside the measured one (for example
    ``predicted_error`` from :func:`unravel.study.independent_prediction`).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"k": [0, 1, 1, 2, 2], "error": [.1, .2, .25, .3, .4], "pred": [.1, .2, .2, .35, .35]})
    >>> unravel.plots.error_vs_k(f, predicted="pred").get_ylabel()
    'test error'
    """
    import seaborn as sns

    _require(frame, [x, "error"] + ([predicted] if predicted else []), "error_vs_k")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    if x == "k":
        sns.lineplot(data=frame, x="k", y="error", hue=hue, style=hue, marker="o", errorbar="sd", ax=ax)
    else:
        sns.scatterplot(data=frame, x=x, y="error", hue=hue, ax=ax, alpha=0.6)
        if x == "kendall_tau":
            ax.invert_xaxis()
    if predicted:
        mean = frame.groupby(x)[predicted].mean()
        ax.plot(mean.index, mean.to_numpy(), ls=":", color="black", lw=1.5, label="independent prediction")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel({"k": "units deleted or pairs swapped (k)", "kendall_tau": "Kendall's tau to the original order"}
                  .get(x, x))
    ax.set_ylabel("test error")
    ax.set_title("Error as lesions grow")
    return _finish(ax)


def gradient_by_length(frame, y: str = "per_path_norm", hue: str | None = "method", window=None, ax=None):
    """Gradient magnitude per path length on a log scale (Veit et al. 2016, Fig. 6), from
    :meth:`PathLengthGradients.to_frame`; ``window=(a, b)`` shades the effective paths."""
    import seaborn as sns

    _require(frame, ["length", y], "gradient_by_length")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    data = frame[frame[y] > 0]
    sns.lineplot(data=data, x="length", y=y, hue=hue, style=hue, marker="o", ax=ax)
    ax.set_yscale("log")
    if window is not None:
        ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="tab:orange", alpha=0.15, label="effective paths")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("path length")
    ax.set_ylabel({"per_path_norm": "gradient magnitude per path", "norm": "total gradient magnitude"}.get(y, y))
    return _finish(ax)


def length_heatmap(frame, value: str = "share", ax=None, index: str = "epoch"):
    """Record-by-length heatmap of the gradient's distribution over path lengths (from
    :meth:`PathLengthTracker.to_frame`, one ``wrt`` and group at a time), averaged over what
    else the frame holds (seeds); ``index="step"`` for records at chosen steps."""
    import seaborn as sns

    _require(frame, [index, "length", value], "length_heatmap")
    ax = _axes(ax, size=(6.5, 3.6))
    table = frame.pivot_table(index=index, columns="length", values=value, aggfunc="mean")
    sns.heatmap(table, cmap="magma", ax=ax, cbar_kws={"label": value})
    ax.set_xlabel("path length")
    ax.set_ylabel(index)
    return ax


def norm_ratios(frame, hue: str | None = "model", ax=None):
    """``||dL/dx_l|| / ||dL/dx_{l+1}||`` per unit (from :func:`unravel.attribution.norm_ratios`);
    the dotted line is perfect norm preservation."""
    import seaborn as sns

    _require(frame, ["unit", "ratio"], "norm_ratios")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    sns.lineplot(data=frame, x="unit", y="ratio", hue=hue, marker="o", ax=ax)
    ax.axhline(1.0, ls=":", color="black", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("unit")
    ax.set_ylabel("gradient norm ratio (in / out)")
    return _finish(ax)


def subnetwork_errors(frame, ax=None):
    """Error of random k-unit subnetworks over training (from
    :meth:`PathLengthTracker.subnetworks_frame`)."""
    import seaborn as sns

    _require(frame, ["epoch", "subnetwork_units", "error"], "subnetwork_errors")
    ax = _axes(ax)
    sns.lineplot(data=frame, x="epoch", y="error", hue="subnetwork_units", marker="o", palette="viridis", ax=ax)
    ax.set_ylabel("test error of random subnetworks")
    ax.legend(title="units kept", fontsize=8, frameon=False)
    return _finish(ax)


def by_epoch(frame, y: str, hue: str | None = "model", style: str | None = None, ax=None, log: bool = False,
             ylabel: str | None = None):
    """A quantity over training: ``y`` against ``epoch``, one line per ``hue`` (and ``style``),
    mean and 95% interval over the rows of each epoch (seeds, say): training curves, or a spectrum
    summary from :class:`unravel.spectra.SpectraTracker`.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"epoch": [0, 1, 0, 1], "model": "a", "seed": [0, 0, 1, 1], "dev": [0.3, 0.1, 0.35, 0.12]})
    >>> unravel.plots.by_epoch(f, "dev", log=True).get_yscale()
    'log'
    """
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    keys = [c for c in (hue, style) if c]
    _require(frame, ["epoch", y] + keys, "by_epoch")
    ax = _axes(ax)
    sns.lineplot(data=frame, x="epoch", y=y, hue=hue, style=style, markers=True, dashes=bool(style),
                 marker=None if style else "o", errorbar=("ci", 95), ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel or y)
    if keys:
        ax.legend(fontsize=8, frameon=False)
    return _finish(ax)


def unit_spectra(frame, y: str = "dev", hue: str | None = "net", ax=None, ylabel: str | None = None):
    """A spectrum summary per unit (from :func:`unravel.spectra.spectrum_summary`), mean and 95%
    interval over the rows of each unit; open circles mark the transition units
    (``transition`` or ``projection`` column). Log scale.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"unit": [0, 1, 2], "net": "a", "dev": [0.2, 0.6, 0.1], "transition": [False, True, False]})
    >>> unravel.plots.unit_spectra(f).get_xlabel()
    'unit'
    """
    import seaborn as sns

    flag = "transition" if "transition" in frame.columns else "projection"
    _require(frame, ["unit", y, flag] + ([hue] if hue else []), "unit_spectra")
    ax = _axes(ax, size=(7.0, 3.6))
    sns.lineplot(data=frame, x="unit", y=y, hue=hue, errorbar=("ci", 95), ax=ax, lw=1)
    marks = frame[frame[flag].astype(bool)].groupby([c for c in ("unit", hue) if c])[y].mean().reset_index()
    ax.scatter(marks["unit"], marks[y], s=40, facecolors="none", edgecolors="black", zorder=3, label="transition")
    ax.set_yscale("log")
    ax.set_xlabel("unit")
    ax.set_ylabel(ylabel or y)
    ax.legend(fontsize=8, frameon=False)
    return _finish(ax)


def spectrum_distribution(frame, hue: str | None = "net", style: str | None = "units", ax=None):
    """Cumulative distributions of singular values on a log scale: ``share_below`` (the share of
    values below ``10**log10_sigma``) against ``log10_sigma``, one line per ``hue`` and
    ``style``; the dotted line is 1. A step is a mass of values at one place (at the left end:
    zeros), a steep rise around 0 a spectrum concentrated near 1.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"log10_sigma": [-0.1, 0.0, 0.1] * 2, "share_below": [0.1, 0.9, 1.0, 0.3, 0.6, 1.0],
    ...                   "net": "a", "units": ["identity"] * 3 + ["transition"] * 3})
    >>> unravel.plots.spectrum_distribution(f).get_xlabel()
    'log10 singular value'
    """
    import seaborn as sns

    _require(frame, ["log10_sigma", "share_below"] + [c for c in (hue, style) if c], "spectrum_distribution")
    ax = _axes(ax)
    sns.lineplot(data=frame, x="log10_sigma", y="share_below", hue=hue, style=style, errorbar=None, ax=ax, lw=1.2,
                 drawstyle="steps-post")
    ax.axvline(0.0, ls=":", color="black", lw=1)
    ax.set_xlabel("log10 singular value")
    ax.set_ylabel("share of singular values below")
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=8, frameon=False)
    return _finish(ax)


def over_training(frame, y: str, hue: str | None = None, x: str = "step", ylabel: str | None = None, ax=None):
    """A quantity over training: per ``hue``, the mean over seeds at each ``x`` and a band from
    the lowest to the highest seed (rows of one seed, ``hue`` and ``x`` are averaged first:
    draws). Steps are on a symmetric-log axis, so the first steps and the last epochs both show.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [0, 10, 0, 10], "error": [0.9, 0.2, 0.8, 0.3]})
    >>> unravel.plots.over_training(f, "error").get_xscale()
    'symlog'
    """
    import seaborn as sns

    _require(frame, ["seed", x, y] + ([hue] if hue else []), "over_training")
    keys = ["seed", x] + ([hue] if hue else [])
    data = frame.groupby(keys, as_index=False)[y].mean()
    ax = _axes(ax)
    sns.lineplot(data=data, x=x, y=y, hue=hue, errorbar=("pi", 100), marker="o", markersize=3, ax=ax,
                 palette="viridis" if hue and _numeric(data[hue]) else None)
    ax.set_xscale("symlog", linthresh=1)
    if data[x].min() >= 0:  # no room for negative steps
        ax.set_xlim(left=-0.3, right=float(data[x].max()) * 1.15)
    ax.set_xlabel({"step": "optimisation step"}.get(x, x))
    ax.set_ylabel(ylabel or y)
    if hue:
        ax.legend(title=hue, fontsize=8, frameon=False)
    return _finish(ax)


def _numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series)




def lesion_effects(frame, x: str, y: str = "retained", reference: float | None = 1.0, ax=None,
                   xlabel: str | None = None, ylabel: str | None = None):
    """One column per lesion: each seed's value as a grey point and their mean with a 95%
    interval (over the seeds) in black; a dotted line at ``reference`` (1: the unlesioned model,
    for retained accuracy).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"lesion": ["L0", "L1"] * 2, "retained": [0.2, 0.9, 0.3, 0.95], "seed": [0, 0, 1, 1]})
    >>> unravel.plots.lesion_effects(f, "lesion").get_ylabel()
    'retained accuracy'
    """
    import seaborn as sns

    _require(frame, [x, y], "lesion_effects")
    ax = _axes(ax, size=(max(4.0, 0.45 * frame[x].nunique() + 1.5), 3.6))
    order = list(dict.fromkeys(frame[x]))
    sns.stripplot(data=frame, x=x, y=y, order=order, color="0.6", size=4, jitter=0.15, ax=ax)
    sns.pointplot(data=frame, x=x, y=y, order=order, color="black", linestyle="none", errorbar=("ci", 95),
                  markers="_", markersize=12, ax=ax)
    if reference is not None:
        ax.axhline(reference, ls=":", color="black", lw=1)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or {"retained": "retained accuracy"}.get(y, y))
    return _finish(ax)


def training_curves(frame, y: str = "val_bits_per_byte", hue: str | None = "seed", ax=None):
    """A metric against training steps (from :func:`unravel.lm.fit`'s history), one line per
    ``hue`` value.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"step": [1, 2], "val_bits_per_byte": [4.0, 3.0], "seed": 0})
    >>> unravel.plots.training_curves(f).get_xlabel()
    'training step'
    """
    import seaborn as sns

    _require(frame, ["step", y], "training_curves")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    sns.lineplot(data=frame, x="step", y=y, hue=hue, marker="o", ax=ax)
    ax.set_xlabel("training step")
    ax.set_ylabel({"val_bits_per_byte": "validation bits per byte"}.get(y, y))
    return _finish(ax)


def save(ax_or_fig, path_without_suffix) -> list:
    """Save a figure as PNG (150 dpi) and SVG; returns the two paths. The figure is closed."""
    import matplotlib.pyplot as plt
    from pathlib import Path

    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
