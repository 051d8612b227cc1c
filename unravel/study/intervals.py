"""Estimates and intervals: the mean over seeds of each seed's statistic, and a hierarchical
bootstrap interval around it on the statistic's own scale, inside the range it can take.

A claim's **estimate** is the mean over training seeds of the statistic computed on each seed's
rows alone. Its **interval** comes from a two-level (hierarchical) bootstrap: each replicate
draws the seeds with replacement (whole training runs) and, with each drawn net fixed, its test
examples (Poisson(1) weights, one weight vector per replicate shared by every seed, since all
seeds are measured on the same examples: comparisons stay paired) and its random draws (rows, or
clusters of rows, within each ``draws`` group); the replicate is the mean of the drawn seeds'
statistics.

The interval is built on the statistic's own scale (:func:`to_scale`: logit for a statistic
bounded on both sides, such as a share or an accuracy; log for a positive quantity, such as a
ratio; the plain scale otherwise): ``h(estimate) +- t * sd`` with ``sd`` the standard deviation
of the replicates, corrected by ``sqrt(S / (S - 1))`` for resampling S seeds and carried to that
scale by the delta method (times ``h'(estimate)``, so a seed or replicate on a bound, where ``h``
is infinite, cannot blow the interval up), and ``t`` Student's quantile with ``S - 1`` degrees of
freedom; then mapped back. An estimate on a bound of its range is judged on the plain scale and
its interval clipped to the range. It never leaves the statistic's ``range`` and always holds the estimate. Why not the
replicates' percentiles (or scipy.stats.bootstrap's BCa, which also resamples one level only): a
percentile interval cannot be wider than the spread of the seeds measured, and over three seeds
the mean lies outside their range a quarter of the time: such intervals under-cover badly at the
three to five seeds a study affords (``tests/test_intervals.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from .stats import Trials, clusters

__all__ = ["Interval", "bootstrap", "to_scale", "from_scale", "tail_p_value", "check_range"]


@dataclass
class Interval:
    """What :func:`bootstrap` returns.

    Attributes
    ----------
    estimate : float
        The mean over seeds of each seed's statistic (NaN when a seed's is undefined).
    ci : list of float
        ``[low, high]``, NaN where undefined.
    undefined : float
        The share of replicates where the statistic was undefined.
    per_seed : list of float
        Each seed's statistic.
    replicates : ndarray
        The bootstrap replicates (NaN where undefined).
    sd : float
        The standard deviation of the replicates on the statistic's scale (corrected for
        resampling few seeds): what the interval's half-width is ``t`` times.
    dof : int
        Student's degrees of freedom: seeds - 1 (0: one seed, the normal quantile).
    scale : (low, high) or None
        The bounds whose scale (:func:`to_scale`) the interval was built on: the range, or None
        (the plain scale) for an unbounded statistic or an estimate that sits on a bound of its
        range, where logit and log have no finite value (the interval is then clipped to the
        range).
    """

    estimate: float
    ci: list
    undefined: float
    per_seed: list
    replicates: np.ndarray
    sd: float
    dof: int
    #: The bounds whose scale the interval was built on (:func:`to_scale`); None: the plain scale.
    scale: tuple | None = None

    @property
    def width(self) -> float:
        return float(self.ci[1] - self.ci[0])


def check_range(rng) -> tuple[float, float] | None:
    """``rng`` as ``(low, high)`` floats (infinite where open), or None for an unbounded statistic.

    Examples
    --------
    >>> from unravel.study.intervals import check_range
    >>> check_range([0, 1]), check_range(None), check_range([0, None])
    ((0.0, 1.0), None, (0.0, inf))
    """
    if rng is None:
        return None
    if not isinstance(rng, (list, tuple)) or len(rng) != 2:
        raise ArgumentError(f"range={rng!r}: give [low, high] (None for an open end) or None.")
    lo = -math.inf if rng[0] is None else float(rng[0])
    hi = math.inf if rng[1] is None else float(rng[1])
    if not lo < hi:
        raise ArgumentError(f"range={rng!r}: low must lie below high.")
    return lo, hi


def _kind(bounds) -> str:
    if bounds is None:
        return "plain"
    lo, hi = bounds
    if math.isfinite(lo) and math.isfinite(hi):
        return "logit"
    return "log" if math.isfinite(lo) and lo >= 0 else "plain"


def to_scale(values, bounds):
    """``values`` on the scale of a statistic with ``bounds`` (``(low, high)`` or None): the logit
    of the position between two finite bounds (a share, an accuracy, a rank percentile); the log
    of a positive quantity (low >= 0, no upper bound: a ratio, a steepness >= 1); the values
    themselves otherwise. Values at a bound are moved 1e-6 of the way in (of the width, or 1e-6
    for a positive quantity at 0), so the map stays finite.

    Examples
    --------
    >>> from unravel.study.intervals import to_scale, from_scale
    >>> import numpy as np
    >>> v = to_scale(np.array([0.0, 0.5, 0.9]), (0.0, 1.0))
    >>> float(v[1]), np.round(from_scale(v, (0.0, 1.0)), 6).tolist()
    (0.0, [1e-06, 0.5, 0.9])
    >>> float(to_scale([np.e], (1.0, np.inf))[0])
    1.0
    """
    x = np.asarray(values, float)
    kind = _kind(bounds)
    if kind == "logit":
        lo, hi = bounds
        eps = 1e-6 * (hi - lo)
        u = (np.clip(x, lo + eps, hi - eps) - lo) / (hi - lo)
        return np.log(u) - np.log1p(-u)
    if kind == "log":
        return np.log(np.maximum(x, max(bounds[0], 1e-6)))
    return x


def from_scale(values, bounds):
    """The inverse of :func:`to_scale`."""
    y = np.asarray(values, float)
    kind = _kind(bounds)
    if kind == "logit":
        lo, hi = bounds
        return lo + (hi - lo) / (1 + np.exp(-y))
    if kind == "log":
        return np.exp(y)
    return y


def _slope(x: float, bounds) -> float:
    """The derivative of :func:`to_scale` at ``x``."""
    kind = _kind(bounds)
    if kind == "logit":
        lo, hi = bounds
        return (hi - lo) / ((x - lo) * (hi - x))
    return 1.0 / x if kind == "log" else 1.0


def _t(p: float, dof: int) -> float:
    from scipy.stats import norm, t

    return float(t.ppf(p, dof)) if dof >= 1 else float(norm.ppf(p))


def tail_p_value(interval: "Interval", margin: float, side: str) -> float:
    """The one-sided p-value against "the effect lies on ``side`` (``"above"`` or ``"below"``)
    of ``margin``", from the same t statistic on the statistic's scale as the interval, so that
    ``p < (1 - level) / 2`` exactly when the interval lies wholly on ``side``. 1 when undefined.

    Examples
    --------
    >>> import numpy as np
    >>> from unravel.study.intervals import Interval, tail_p_value
    >>> r = Interval(1.0, [0.8, 1.2], 0.0, [0.9, 1.0, 1.1], np.zeros(1), 0.05, 2)
    >>> tail_p_value(r, 0.5, "above") < 0.01, tail_p_value(r, 0.5, "below") > 0.99
    (True, True)
    """
    from scipy.stats import norm, t

    if not (math.isfinite(interval.estimate) and math.isfinite(interval.sd)) or interval.sd <= 0:
        return 1.0
    c = float(to_scale([interval.estimate], interval.scale)[0])
    m = float(to_scale([margin], interval.scale)[0])
    z = (c - m) / interval.sd if side == "above" else (m - c) / interval.sd
    dof = interval.dof
    return float(t.sf(z, dof)) if dof >= 1 else float(norm.sf(z))


def _as_dict(trials):
    if isinstance(trials, Trials):
        return {None: trials}, True
    if isinstance(trials, Mapping) and trials and all(isinstance(t, Trials) for t in trials.values()):
        return dict(trials), False
    raise ArgumentError("bootstrap needs a Trials or a mapping of names to Trials.")


def _call(stat, frames, single):
    try:
        v = stat(frames[None] if single else frames)
    except (ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError):
        return math.nan
    v = float(v) if v is not None else math.nan
    return v if math.isfinite(v) else math.nan


def _within(stat, tdict, single, seed, n_boot, rng, weights):
    """``[n_boot]`` statistics of one seed with its examples and draws resampled (the net fixed)."""
    parts = {k: (t, t._by_seed.get(seed, np.array([], int))) for k, t in tdict.items()}
    values, groups = {}, {}
    for k, (t, rows) in parts.items():
        if t.items is not None and len(rows):
            w = weights[t.items.shape[1]]
            values[k] = (t.items[rows] @ w) / w.sum(0, keepdims=True)
        if t.draws and len(rows):
            groups[k] = clusters(t, rows)
    out = np.empty(n_boot)
    for b in range(n_boot):
        frames = {}
        for k, (t, rows) in parts.items():
            order = np.arange(len(rows))
            if k in groups:
                order = np.concatenate([np.concatenate([g[i] for i in rng.integers(0, len(g), len(g))])
                                        for g in groups[k]])
            part = t.frame.take(rows[order])
            part.index = pd.RangeIndex(len(part))
            if k in values:
                part[t.value] = values[k][order, b]
            frames[k] = part
        out[b] = _call(stat, frames, single)
    return out


def bootstrap(stat: Callable, trials, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
              range=None) -> Interval:  # noqa: A002 - the claim field's name
    """The estimate of ``stat`` (mean over seeds) and its hierarchical bootstrap interval.

    Parameters
    ----------
    stat : callable
        ``stat(frame) -> float`` on one seed's rows (or ``stat({name: frame})`` when ``trials``
        is a mapping). A NaN or infinite result (or a ``ZeroDivisionError``) means *undefined*.
        A statistic wrapped in :func:`~unravel.study.stats.per_seed` works too.
    trials : Trials or mapping of str to Trials
        Trials of one mapping share their example weights (paired).
    n_boot : int
    level : float
        Nominal coverage of the interval.
    seed : int
        Seeds the resampling.
    range : [low, high] or None
        The values the statistic can take (None at an open end): a seed's value outside it is a
        bug in the statistic and raises; the interval is kept inside it.

    Returns
    -------
    Interval
        Its ``ci`` is ``[nan, nan]`` when the estimate is undefined, or the statistic is
        undefined in more than ``(1 - level) / 2`` of the replicates.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import Trials
    >>> from unravel.study.intervals import bootstrap
    >>> rng = np.random.default_rng(0)
    >>> items = rng.random((3, 2000)) < 0.3
    >>> t = Trials(pd.DataFrame({"seed": [0, 1, 2], "error": items.mean(1)}), items)
    >>> r = bootstrap(lambda f: f.error.mean(), t, n_boot=200, range=[0, 1])
    >>> bool(r.ci[0] <= r.estimate <= r.ci[1]), bool(0 < r.ci[0] < 0.3 < r.ci[1] < 1)
    (True, True)
    """
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ArgumentError(f"n_boot={n_boot!r}: must be an integer >= 10.")
    if not 0 < level < 1:
        raise ArgumentError(f"level={level!r}: must lie in (0, 1).")
    bounds = check_range(range)
    tdict, single = _as_dict(trials)
    seeds = list(dict.fromkeys(s for t in tdict.values() for s in t.seeds))
    if not seeds:
        raise ArgumentError("bootstrap got no rows.")
    S, alpha = len(seeds), (1 - level) / 2
    nan_ci = [math.nan, math.nan]
    theta = [_call(stat, {k: t.frame.take(t._by_seed.get(s, np.array([], int))).reset_index(drop=True)
                          for k, t in tdict.items()}, single) for s in seeds]
    if bounds is not None:
        for s, v in zip(seeds, theta):
            if math.isfinite(v) and not bounds[0] - 1e-9 <= v <= bounds[1] + 1e-9:
                raise ArgumentError(f"the statistic gave {v:g} on seed {s}, outside its range {list(range)}: the "
                                    "statistic or its range is wrong")
        theta = [min(max(v, bounds[0]), bounds[1]) if math.isfinite(v) else v for v in theta]
    estimate = float(np.mean(theta)) if all(math.isfinite(v) for v in theta) else math.nan
    if math.isnan(estimate):
        return Interval(estimate, nan_ci, 1.0, theta, np.full(n_boot, math.nan), math.nan, S - 1)
    rng = np.random.default_rng(seed)
    weights = {}
    for t in tdict.values():
        if t.items is not None and t.items.shape[1] not in weights:
            w = rng.poisson(1.0, size=(t.items.shape[1], n_boot)).astype(np.float32)
            w[:, w.sum(0) == 0] = 1.0
            weights[t.items.shape[1]] = w
    varies = any(t.items is not None or t.draws for t in tdict.values())
    within = np.array([_within(stat, tdict, single, s, n_boot, rng, weights) if varies else np.full(n_boot, v)
                       for s, v in zip(seeds, theta)])  # [S, n_boot]
    if bounds is not None:
        within = np.clip(within, *bounds)
    picks = rng.integers(0, S, size=(n_boot, S)) if S >= 2 else np.zeros((n_boot, 1), int)
    reps = within[picks, np.arange(n_boot)[:, None]].mean(1)
    undefined = float(np.isnan(reps).mean())
    dof = S - 1
    if undefined > alpha:
        return Interval(estimate, nan_ci, undefined, theta, reps, math.nan, dof)
    scale = bounds
    if bounds is not None and any(math.isfinite(b) and abs(estimate - b) <= 1e-9 * max(1.0, abs(b)) for b in bounds):
        scale = None  # the estimate sits on a bound: no finite logit or log there
    finite = reps[~np.isnan(reps)]
    sd = float(np.std(finite, ddof=1)) * (math.sqrt(S / (S - 1)) if S >= 2 else 1.0) if finite.size >= 2 else 0.0
    sd *= _slope(estimate, scale)  # the delta method: the standard deviation on the statistic's scale
    center = float(to_scale([estimate], scale)[0])
    half = _t(1 - alpha, dof) * sd
    lo, hi = (float(v) for v in from_scale([center - half, center + half], scale))
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    if sd == 0:
        lo = hi = estimate
    return Interval(estimate, [min(lo, estimate), max(hi, estimate)], undefined, theta, reps, sd, dof, scale)
