"""``--plot FILE``: the figure :mod:`unravel.plots` draws from a command's frame, written where
the user asks (the format from the file's suffix: .png, .svg, .pdf)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__: list = []

SUFFIXES = (".png", ".svg", ".pdf", ".jpg")


def _figure_file(text: str) -> str:
    path = Path(text)
    if path.suffix.lower() not in SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: a figure file ends in {', '.join(SUFFIXES)}")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: its folder does not exist")
    return text


def add_plot(q) -> None:
    """The ``--plot FILE`` option."""
    q.add_argument("--plot", type=_figure_file, default=None, metavar="FILE",
                   help="also draw the figure of unravel.plots into FILE (.png, .svg or .pdf)")


def draw(kind: str, frame, path, **kwargs) -> None:
    """Draw ``frame`` with the plot of ``kind`` into ``path`` and say so."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .. import plots

    if kind == "delete_each":
        ax = plots.deletion_errors(frame, hue=None)
    elif kind in ("delete_random", "reorder_random"):
        ax = plots.error_vs_k(frame, hue=None)
    elif kind == "paths":
        ax = plots.gradient_by_length(frame, hue=None, **kwargs)
    elif kind == "spectra":
        ax = plots.unit_spectra(frame, hue=None, ylabel="median |log singular value|")
    elif kind == "prune":
        ax = plots.lesion_effects(frame, x="units_removed", y=kwargs["metric"], reference=kwargs.get("reference"),
                                  xlabel="units removed" + ("" if kwargs.get("reference") is None else
                                                            " (dotted: the budget's limit)"))
    else:  # pragma: no cover - the commands name their kind
        raise ValueError(kind)
    ax.figure.savefig(path, dpi=150)
    plt.close(ax.figure)
    print(f"wrote {path}")
