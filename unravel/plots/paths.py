"""The gradient by path length (Veit et al. Fig. 6), and its share per length over training.

Plotting never computes science: each function takes a tidy frame (or a graph) and returns the
matplotlib Axes it drew on."""

from __future__ import annotations

from .axes import _axes, _finish, _require

__all__ = ["gradient_by_length", "length_heatmap"]


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
