"""Lesions: the error after deleting each unit, against the number of deleted or swapped units, and lesion effects by position (Veit et al. Fig. 3 and 5).

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from .axes import _axes, _finish, _require

__all__ = ["deletion_errors", "error_vs_k", "lesion_effects"]


def deletion_errors(frame, hue: str | None = "model", ax=None):
    """Test error after deleting each single unit (Veit et al. 2016, Fig. 3), from
    :func:`unravel.sweeps.delete_each` frames; dashed lines mark each model's unlesioned error
    and projection units are marked with open circles.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import pandas as pd, unravel
    >>> f = pd.DataFrame({"variant": [-1, 0, 1], "units": ["", "0", "1"], "error": [.1, .2, .15],
    ...                   "projection": [False, False, True], "model": "resnet"})
    >>> unravel.plots.deletion_errors(f).get_ylabel()
    'test error'

    Groups of units (``group="layer"`` in the sweep) are numbered in forward order:

    >>> g = f.assign(units=["", "0,1", "2,3"])
    >>> unravel.plots.deletion_errors(g).get_xlabel()
    'deleted group'
    """
    import seaborn as sns

    _require(frame, ["variant", "units", "error"], "deletion_errors")
    hue = hue if hue and hue in frame.columns else None
    ax = _axes(ax)
    units = frame[frame.variant >= 0]
    single = units.units.astype(str).str.fullmatch(r"\d+").all()  # groups (group="layer") list several units
    units = units.assign(unit=units.units.astype(str).astype(int) if single else units.variant)
    sns.lineplot(data=units, x="unit", y="error", hue=hue, marker="o", ax=ax)
    if "projection" in units.columns and units.projection.any():
        proj = units[units.projection]
        ax.scatter(proj.unit, proj.error, s=90, facecolors="none", edgecolors="black", zorder=5,
                   label="projection unit")
    palette = dict(zip(units[hue].unique(), sns.color_palette())) if hue else {}
    base = frame[frame.variant == -1]
    for name, err in (base.groupby(hue).error.mean().items() if hue else [(None, base.error.mean())]):
        ax.axhline(err, ls="--", lw=1, color=palette.get(name, "0.4"))
    ax.set_xlabel("deleted unit" if single else "deleted group")
    ax.set_ylabel("test error")
    ax.set_title("Deleting single units (dashed: no deletion)")
    ax.legend(fontsize=8, frameon=False)
    return _finish(ax)


def error_vs_k(frame, hue: str | None = "model", ax=None, x: str = "k", predicted: str | None = None):
    """Mean test error (with its standard deviation over draws and seeds) against the number of
    deleted or swapped units k (Veit et al. 2016, Fig. 5a); k = 0 is the unlesioned network.

    ``x="kendall_tau"`` plots each draw's error against Kendall's tau between the original and
    the lesioned order instead (Fig. 5b, from :func:`unravel.sweeps.reorder_random`). ``predicted``
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
