"""Jacobian spectra: a summary per unit, and the distribution of singular values.

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from .axes import _axes, _finish, _require

__all__ = ["unit_spectra", "spectrum_distribution"]


def unit_spectra(frame, y: str = "dev", hue: str | None = "net", ax=None, ylabel: str | None = None):
    """A spectrum summary per unit (from :func:`unravel.jacobian.spectra.spectrum_summary`), mean and 95%
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
