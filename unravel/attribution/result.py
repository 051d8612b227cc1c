"""The result of a path-length attribution: the gradient by path length, as one of two named
quantities, with its exact path counts, effective paths and a tidy frame. It holds numbers; it
does not compute gradients.

- ``"net"`` (``method="exact"``): the norm of the **sum** of the length-k path gradients, the
  length-k part of the gradient. Paths of one length can cancel. No paper measured it.
- ``"magnitude"`` (``method="sample"``): Veit et al.'s total gradient magnitude, the number of
  length-k paths times the mean norm of one path's gradient (estimated from sampled paths, with a
  per-length 95% interval). Paths cannot cancel: it is at least the net quantity.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ArgumentError
from ..graph import UnraveledGraph

__all__ = ["PathLengthGradients", "QUANTITIES"]

#: method -> the quantity its ``norms`` hold.
QUANTITIES = {"exact": "net", "sample": "magnitude"}


@dataclasses.dataclass
class PathLengthGradients:
    """Gradient magnitude by path length, from :func:`path_length_gradients`.

    Attributes
    ----------
    method : {"exact", "sample"}
    wrt : {"input", "units"}
    lengths : torch.Tensor
        The path lengths reported, ``0 .. K-1``.
    counts : list of int
        Paths of each length (exact integers).
    norms : torch.Tensor
        What each length carries, as the quantity named by :attr:`quantity`. Exact (``"net"``):
        the norm of the length-k part of the gradient, the sum of its paths' gradients (over the
        whole batch; for ``wrt="units"``, over all parameters). Sample (``"magnitude"``): the mean
        single-path norm times the number of paths (Veit et al.'s "total gradient magnitude",
        float64).
    per_path_norm : torch.Tensor
        Sample: the mean single-path gradient norm (Veit Fig. 6(a)). Exact: ``norms / counts``,
        the length-k part shared evenly among its paths (a vector sum, so at most the mean
        single-path norm).
    by_length : torch.Tensor or None
        Exact, ``wrt="input"``: the parts, shape ``[K, *input_shape]``; they sum to the gradient.
        Like the parts below, on the model's device (copying them to the host can cost more than
        computing them on a GPU); the norms are on the CPU.
    param_by_length : dict or None
        Exact, ``wrt="units"``: parameter name -> parts ``[K, *param.shape]`` (every parameter of
        the model; those outside the units carry the lengths of the paths below or above them).
    total : torch.Tensor or None
        Exact, ``wrt="input"``: the sum of the parts (equal to autograd's gradient).
    dropped_norm : float
        With ``max_length``: the norm of the longer paths' part, not kept (0 otherwise).
    samples : torch.Tensor or None
        Sample: single paths used per length.
    std : torch.Tensor or None
        Sample: standard deviation of the single-path norms per length.
    low, high : torch.Tensor or None
        Sample: a 95% interval of ``norms`` per length (normal, of the mean single-path norm,
        with the finite-population correction: an enumerated length's interval is its value).
    loss : float
    """

    method: str
    wrt: str
    lengths: torch.Tensor
    counts: list
    norms: torch.Tensor
    per_path_norm: torch.Tensor
    by_length: torch.Tensor | None = None
    param_by_length: dict | None = None
    total: torch.Tensor | None = None
    dropped_norm: float = 0.0
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    loss: float = float("nan")

    @property
    def quantity(self) -> str:
        """``"net"`` (exact: the norm of the sum of a length's path gradients) or ``"magnitude"``
        (sampled: Veit et al.'s count x mean single-path norm)."""
        return QUANTITIES[self.method]

    @property
    def n(self) -> int:
        """The longest length reported (the number of live units without ``max_length``)."""
        return len(self.lengths) - 1

    @property
    def share(self) -> torch.Tensor:
        """Each length's share of the summed magnitude."""
        total = self.norms.sum()
        return self.norms / total if total > 0 else torch.zeros_like(self.norms)

    @property
    def mean_length(self) -> float:
        """The magnitude-weighted mean path length."""
        return float((self.share * self.lengths.to(self.share.dtype)).sum())

    def effective_paths(self, mass: float = 0.9) -> dict:
        """The effective paths: the shortest window of lengths holding at least ``mass`` of this
        result's quantity (Veit et al. Sec. 5.3 report 5-17 of 54 units for the magnitude).

        Returns a dict: ``quantity``; ``lengths`` (low, high); ``width`` (high - low + 1);
        ``units`` (n); ``relative_window`` (low / n, high / n) and ``mean_length_over_n`` (the
        quantity-weighted mean length over n), comparable across depths; ``share`` (what the
        window holds); ``num_paths`` (exact) and ``fraction_of_paths``, which Veit reports at
        n = 54 (0.45%) but which is a step function of the window's upper edge and not comparable
        across n. Among windows of equal width the one holding the most is chosen.

        Examples
        --------
        >>> import torch
        >>> from unravel.attribution import PathLengthGradients
        >>> r = PathLengthGradients("exact", "input", torch.arange(5), [1, 4, 6, 4, 1],
        ...                         torch.tensor([1.0, 8.0, 1.0, 0, 0]), torch.zeros(5))
        >>> w = r.effective_paths(0.8)
        >>> w["quantity"], w["lengths"], w["width"], w["mean_length_over_n"]
        ('net', (1, 1), 1, 0.25)
        """
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 < mass <= 1:
            raise ArgumentError(f"mass={mass!r}: must lie in (0, 1].")
        share = self.share.tolist()
        K = len(share)
        best = None
        for width in range(1, K + 1):
            for a in range(0, K - width + 1):
                held = sum(share[a:a + width])
                if held >= mass * (1 - 1e-9) and (best is None or held > best[2]):
                    best = (a, a + width - 1, held)
            if best is not None:
                break
        a, b, held = best
        num = sum(self.counts[a:b + 1])
        n = max(self.n, 1)
        return {"quantity": self.quantity, "lengths": (a, b), "width": b - a + 1, "units": self.n,
                "relative_window": (a / n, b / n), "mean_length_over_n": self.mean_length / n, "share": held,
                "num_paths": num, "fraction_of_paths": num / sum(self.counts)}

    def to_frame(self):
        """Tidy frame: one row per length (method, quantity, wrt, length, count, norm,
        per_path_norm, share, and for sampling samples, std, low and high).

        Examples
        --------
        >>> import torch, unravel
        >>> net = unravel.models.resmlp(8, 3, width=8, depth=3)
        >>> r = unravel.attribution.path_length_gradients(net, torch.randn(4, 8), method="sample", generator=0)
        >>> r.to_frame().columns.tolist()[:6], r.quantity
        (['method', 'quantity', 'wrt', 'length', 'count', 'norm'], 'magnitude')
        """
        import pandas as pd

        frame = pd.DataFrame({
            "method": self.method, "quantity": self.quantity, "wrt": self.wrt, "length": self.lengths.tolist(),
            "count": pd.Series(self.counts[: len(self.lengths)], dtype=object),
            "norm": self.norms.tolist(), "per_path_norm": self.per_path_norm.tolist(),
            "share": self.share.tolist()})
        if self.samples is not None:
            frame["samples"] = self.samples.tolist()
            frame["std"] = self.std.tolist()
        if self.low is not None:
            frame["low"] = self.low.tolist()
            frame["high"] = self.high.tolist()
        return frame


def _live_counts(records) -> list[int]:
    """Paths of each length of the network that ran: up to the longest length that has paths (a
    lesion's deleted units shorten the longest path)."""
    counts = UnraveledGraph([r.unit for r in records]).length_counts()
    while len(counts) > 1 and counts[-1] == 0:
        counts.pop()
    return counts
