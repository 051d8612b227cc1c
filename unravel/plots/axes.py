"""The axes every plot draws on, the columns it needs, and saving a figure as PNG and SVG.

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from ..errors import ArgumentError

__all__ = ["save"]


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


def _finish(ax):
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def _numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series)


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
