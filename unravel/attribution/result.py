"""The result of a path-length attribution: gradient magnitude by path length, with its exact
path counts, effective paths and a tidy frame. It holds numbers; it does not compute gradients.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ArgumentError
from ..graph import UnraveledGraph

__all__ = ["PathLengthGradients"]


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
        Magnitude carried by each length. Exact: the norm of the length-k part of the gradient
        (over the whole batch; for ``wrt="units"``, over all parameters). Sample: the mean
        single-path norm times the number of paths (Veit et al.'s "total gradient magnitude").
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
    loss: float = float("nan")

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
        """The shortest window of lengths holding at least ``mass`` of the magnitude.

        Returns a dict: ``lengths`` (first, last), ``share`` (what the window holds),
        ``num_paths`` (exact) and ``fraction_of_paths``. Among windows of equal width the one
        holding the most is chosen.
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
        return {"lengths": (a, b), "share": held, "num_paths": num, "fraction_of_paths": num / sum(self.counts)}

    def to_frame(self):
        """Tidy frame: one row per length (method, wrt, length, count, norm, per_path_norm, share,
        and for sampling samples and std)."""
        import pandas as pd

        frame = pd.DataFrame({
            "method": self.method, "wrt": self.wrt, "length": self.lengths.tolist(),
            "count": pd.Series(self.counts[: len(self.lengths)], dtype=object),
            "norm": self.norms.tolist(), "per_path_norm": self.per_path_norm.tolist(),
            "share": self.share.tolist()})
        if self.samples is not None:
            frame["samples"] = self.samples.tolist()
            frame["std"] = self.std.tolist()
        return frame


def _live_counts(records) -> list[int]:
    """Paths of each length of the network that ran: up to the longest length that has paths (a
    lesion's deleted units shorten the longest path)."""
    counts = UnraveledGraph([r.unit for r in records]).length_counts()
    while len(counts) > 1 and counts[-1] == 0:
        counts.pop()
    return counts
