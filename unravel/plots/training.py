"""Curves over training: by epoch, by step, and a language model's training curves.

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from .axes import _axes, _finish, _numeric, _require

__all__ = ["by_epoch", "over_training", "training_curves"]


def by_epoch(frame, y: str, hue: str | None = "model", style: str | None = None, ax=None, log: bool = False,
             ylabel: str | None = None):
    """A quantity over training: ``y`` against ``epoch``, one line per ``hue`` (and ``style``),
    mean and 95% interval over the rows of each epoch (seeds, say): training curves, or a spectrum
    summary from :class:`unravel.jacobian.spectra.SpectraTracker`.

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
