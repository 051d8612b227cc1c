"""The ``analysis:`` settings of the Veit studies (``veit-lesion``, ``veit-paths``), each field
checked as it is read (see :mod:`unravel.study.schema`)."""

from __future__ import annotations

from dataclasses import dataclass

from unravel.study.schema import integer, list_of, number, setting

__all__ = ["VeitLesionAnalysis", "VeitPathsAnalysis"]


@dataclass(frozen=True)
class VeitLesionAnalysis:
    """``analysis:`` of a ``veit-lesion`` study: the k values and draws per k of Fig. 5."""

    ks: tuple = setting((1, 2, 4, 6, 8), list_of(integer(1), "positive integers"))
    samples_per_k: int = setting(5, integer(1))
    #: The claims about deep nets (single deletions near the baseline, smooth growth) are
    #: inconclusive for a residual net of fewer units: Veit et al. make them at 54.
    min_units: int = setting(27, integer(0))
    #: Bootstrap resamples behind each claim's confidence interval.
    n_boot: int = setting(1000, integer(10))


@dataclass(frozen=True)
class VeitPathsAnalysis:
    """``analysis:`` of a ``veit-paths`` study: probe batch (the net quantity), Veit's sampled
    paths on random training batches (his magnitude), effective-path mass."""

    probe_size: int = setting(128, integer(1))
    #: Veit's estimator: single paths measured per length (1,000 in the paper; every path where a
    #: length has fewer), on ``sample_batches`` random training batches of ``sample_batch`` examples.
    num_samples: int = setting(1000, integer(1))
    sample_batches: int = setting(10, integer(1))
    sample_batch: int = setting(128, integer(1))
    #: Paths propagated together in one stack of cotangents.
    paths_per_pass: int = setting(64, integer(1))
    mass: float = setting(0.9, number(0, 1, open_low=True))
    #: Depths of the residual model trained besides its own, for the depth sweep (does the
    #: window of effective paths stay put as n grows?); empty: no sweep.
    depths: tuple = setting((), list_of(integer(1), "depths"))
    #: The mean gradient path length and the share of paths carrying the gradient are
    #: inconclusive for fewer units: Veit et al. make these claims at n = 54, and with few units
    #: any window of a few lengths holds a large share of all 2**n paths.
    min_units: int = setting(27, integer(0))
    n_boot: int = setting(1000, integer(10))


