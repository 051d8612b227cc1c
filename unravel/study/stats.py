"""Effect estimates, bootstrap confidence intervals and three-valued verdicts.

A claim is judged by an **effect estimate**, its **confidence interval** and a stated **margin**:
the claim says the effect lies above (or below) the margin. It is *supported* when the whole
interval lies on the claimed side, *contradicted* when the whole interval lies on the other side,
and *inconclusive* otherwise, or when the effect is undefined on the data (a curve that never
rises, a net that never trained).

Intervals come from a hierarchical percentile bootstrap (:func:`bootstrap`) over the levels a
study's measurements vary on: **seeds** (whole training runs, resampled with replacement), **test
examples** (per-item outcomes, reweighted with Poisson(1) weights, the same weights for every row of
one seed so paired comparisons stay paired), and **draws** (rows exchangeable within a group, such
as the random k-unit deletions of one k, resampled within their group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["VERDICTS", "Trials", "bootstrap", "decide", "make_claim"]

#: The three verdicts a claim can get.
VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclass
class Trials:
    """Measured rows and, optionally, the per-item outcomes behind each row's value.

    Parameters
    ----------
    frame : DataFrame
        One row per measurement, with a ``seed`` column (the training run it comes from).
    items : ndarray, optional
        ``[len(frame), n_items]``: the per-item outcomes (for example wrong-prediction flags per
        test example) whose mean is the row's ``value``. Every row of one seed must have the same
        items (the same test examples), so that resampling them keeps comparisons paired.
    value : str
        The column that ``items`` averages to (replaced in each bootstrap resample).
    draws : sequence of str, optional
        Columns whose groups (within a seed) hold exchangeable draws: rows are resampled with
        replacement inside each group. None: rows are fixed (units of a net, say).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import Trials
    >>> t = Trials(pd.DataFrame({"seed": [0, 0], "error": [0.5, 0.0]}),
    ...            np.array([[1, 0], [0, 0]], bool))
    >>> t.frame.error.tolist()
    [0.5, 0.0]
    """

    frame: pd.DataFrame
    items: np.ndarray | None = None
    value: str = "error"
    draws: Sequence[str] | None = None
    _by_seed: dict = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.frame, pd.DataFrame) or "seed" not in self.frame.columns:
            raise ArgumentError("Trials needs a DataFrame with a 'seed' column.")
        self.frame = self.frame.reset_index(drop=True)
        if self.items is not None:
            items = np.asarray(self.items)
            if items.ndim != 2 or items.shape[0] != len(self.frame):
                raise ArgumentError(f"Trials.items must have shape [rows={len(self.frame)}, items]; got "
                                    f"{items.shape}.")
            if self.value not in self.frame.columns:
                raise ArgumentError(f"Trials.value {self.value!r} is not a column of the frame.")
            self.items = items.astype(np.float32)
        missing = [c for c in (self.draws or ()) if c not in self.frame.columns]
        if missing:
            raise ArgumentError(f"Trials.draws names columns the frame lacks: {missing}.")
        self._by_seed = {s: np.flatnonzero(self.frame.seed.to_numpy() == s) for s in self.frame.seed.unique()}

    @property
    def seeds(self) -> list:
        """The seeds of the rows, in order of appearance."""
        return list(self._by_seed)


def _as_dict(trials):
    if isinstance(trials, Trials):
        return {None: trials}, True
    if isinstance(trials, Mapping) and all(isinstance(t, Trials) for t in trials.values()):
        return dict(trials), False
    raise ArgumentError("bootstrap needs a Trials or a mapping of names to Trials.")


def _call(stat, frames, single):
    try:
        v = stat(frames[None] if single else frames)
    except (ZeroDivisionError, FloatingPointError, ValueError, KeyError, IndexError):
        return math.nan
    v = float(v) if v is not None else math.nan
    return v if math.isfinite(v) else math.nan


def bootstrap(stat: Callable, trials, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
              resample_seeds: bool = True):
    """The point estimate of ``stat`` and its percentile-bootstrap confidence interval.

    Parameters
    ----------
    stat : callable
        ``stat(frame) -> float`` (or ``stat({name: frame}) -> float`` when ``trials`` is a
        mapping). It must average over the frame's seeds itself (see :func:`per_seed`). In a
        resample, a seed drawn twice appears as two seeds (labels ``0, 1, ...``). A NaN or
        infinite result (or a ``ValueError``/``ZeroDivisionError``) means *undefined*.
    trials : Trials or mapping of str to Trials
        Trials of one mapping share their seed and example resampling (paired).
    n_boot : int
    level : float
        Coverage of the interval.
    seed : int
        Seeds the resampling.
    resample_seeds : bool
        Resample whole seeds (with one seed, only its examples and draws vary).

    Returns
    -------
    (estimate, [low, high], undefined_share)
        ``estimate`` is NaN when ``stat`` is undefined on the data; the interval is ``[nan, nan]``
        when the estimate is undefined or ``stat`` is undefined in more than ``(1 - level) / 2`` of
        the resamples (so it cannot bound the effect).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import Trials, bootstrap
    >>> rng = np.random.default_rng(0)
    >>> items = rng.random((1, 2000)) < 0.3
    >>> t = Trials(pd.DataFrame({"seed": [0], "error": items.mean(1)}), items)
    >>> est, (lo, hi), _ = bootstrap(lambda f: f.error.mean(), t)
    >>> lo < 0.3 < hi and hi - lo < 0.06
    True
    """
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ArgumentError(f"n_boot={n_boot!r}: must be an integer >= 10.")
    if not 0 < level < 1:
        raise ArgumentError(f"level={level!r}: must lie in (0, 1).")
    tdict, single = _as_dict(trials)
    frames = {k: t.frame for k, t in tdict.items()}
    estimate = _call(stat, frames, single)
    seeds = list(dict.fromkeys(s for t in tdict.values() for s in t.seeds))
    if not seeds:
        raise ArgumentError("bootstrap got no rows.")
    rng = np.random.default_rng(seed)
    S = len(seeds)
    picks = rng.integers(0, S, size=(n_boot, S)) if resample_seeds and S > 1 else np.tile(np.arange(S), (n_boot, 1))
    # per (seed, number of items): Poisson(1) weights for every (replicate, copy)
    weights: dict = {}

    def weights_of(s, n):
        if (s, n) not in weights:
            w = rng.poisson(1.0, size=(n, n_boot * S)).astype(np.float32)
            w[:, w.sum(0) == 0] = 1.0
            weights[(s, n)] = w
        return weights[(s, n)]

    # per trials and seed: resampled values of its rows, [rows, n_boot * S]
    values = {}
    for k, t in tdict.items():
        for s, rows in t._by_seed.items():
            if t.items is not None:
                w = weights_of(s, t.items.shape[1])
                values[(k, s)] = (t.items[rows] @ w) / w.sum(0, keepdims=True)
    groups = {}
    for k, t in tdict.items():
        for s, rows in t._by_seed.items():
            if t.draws:
                sub = t.frame.iloc[rows]
                groups[(k, s)] = [np.asarray(ix) for ix in sub.groupby(list(t.draws), sort=False).indices.values()]
    reps = np.empty(n_boot)
    for b in range(n_boot):
        out = {}
        for k, t in tdict.items():
            idx, labels, vals = [], [], []
            for j, si in enumerate(picks[b]):
                s = seeds[si]
                rows = t._by_seed.get(s)
                if rows is None:
                    continue
                order = np.arange(len(rows))
                if t.draws:
                    order = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups[(k, s)]])
                idx.append(rows[order])
                labels.append(np.full(len(order), j))
                if t.items is not None:
                    vals.append(values[(k, s)][order, b * S + j])
            part = t.frame.take(np.concatenate(idx))
            part.index = pd.RangeIndex(len(part))
            part["seed"] = np.concatenate(labels)
            if t.items is not None:
                part[t.value] = np.concatenate(vals)
            out[k] = part
        reps[b] = _call(stat, out, single)
    undefined = float(np.isnan(reps).mean())
    alpha = (1 - level) / 2
    if math.isnan(estimate) or undefined > alpha:
        return estimate, [math.nan, math.nan], undefined
    finite = reps[~np.isnan(reps)]
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return estimate, [float(lo), float(hi)], undefined


def per_seed(fn: Callable) -> Callable:
    """``fn(frame of one seed) -> float`` made into a statistic over all seeds: the mean of its
    value per seed (NaN if any seed's is undefined).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.stats import per_seed
    >>> per_seed(lambda f: f.error.max())(pd.DataFrame({"seed": [0, 0, 1], "error": [0.1, 0.3, 0.5]}))
    0.4
    """
    def stat(frame):
        vals = [float(fn(g)) for _, g in frame.groupby("seed", sort=False)]
        return float(np.mean(vals)) if vals and all(math.isfinite(v) for v in vals) else math.nan
    return stat


def decide(estimate: float, ci, margin: float, direction: str) -> str:
    """The verdict on "the effect lies ``direction`` ``margin``" from its interval.

    Examples
    --------
    >>> from unravel.study.stats import decide
    >>> decide(0.3, [0.2, 0.4], 0.1, "above"), decide(0.3, [0.2, 0.4], 0.5, "above")
    ('supported', 'contradicted')
    >>> decide(0.3, [0.05, 0.4], 0.1, "above"), decide(float("nan"), [0, 1], 0.1, "below")
    ('inconclusive', 'inconclusive')
    """
    if direction not in ("above", "below"):
        raise ArgumentError(f"direction={direction!r}; allowed: above, below.")
    lo, hi = (float(v) for v in ci)
    if any(math.isnan(v) for v in (estimate, lo, hi)):
        return "inconclusive"
    above, below = lo > margin, hi < margin
    if direction == "above":
        return "supported" if above else "contradicted" if below else "inconclusive"
    return "supported" if below else "contradicted" if above else "inconclusive"


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def make_claim(cid: str, statement: str, source: str, *, estimate: float, ci, margin: float, direction: str,
               effect: str, seeds, paper: dict | None = None, measured: dict | None = None,
               requires: Sequence[tuple[bool, str]] = (), undefined: float = 0.0, level: float = 0.95) -> dict:
    """A claim's record: its effect, interval, margin, rule, the paper's figure and the verdict.

    ``requires`` lists preconditions ``(ok, reason)``: if one fails, the verdict is inconclusive
    and ``why`` gives the reason. Non-finite numbers are written as None (JSON null).

    Examples
    --------
    >>> from unravel.study.stats import make_claim
    >>> c = make_claim("x", "X is small", "a paper", estimate=0.01, ci=[0.0, 0.02], margin=0.05,
    ...                direction="below", effect="error increase", seeds=[0, 1])
    >>> c["verdict"], c["rule"]
    ('supported', 'supported if the 95% interval of error increase lies below 0.05, contradicted if it lies above')
    """
    verdict = decide(estimate, ci, margin, direction)
    other = "above" if direction == "below" else "below"
    rule = (f"supported if the {level:.0%} interval of {effect} lies {direction} {margin:g}, contradicted if it lies "
            f"{other}")
    why = {"supported": f"the whole interval lies {direction} the margin",
           "contradicted": f"the whole interval lies {other} the margin",
           "inconclusive": "the interval contains the margin"}[verdict]
    if math.isnan(float(estimate)):
        why = f"{effect} is undefined on this data"
    elif any(math.isnan(float(v)) for v in ci):
        why = f"{effect} is undefined in {undefined:.0%} of the bootstrap resamples"
    failed = [reason for ok, reason in requires if not ok]
    if failed:
        verdict, why = "inconclusive", "; ".join(failed)
    return _clean({"id": cid, "statement": statement, "source": source, "effect": effect, "estimate": float(estimate),
                   "ci": [float(v) for v in ci], "level": level, "margin": margin, "direction": direction,
                   "paper": paper, "seeds": list(seeds), "rule": rule, "verdict": verdict, "why": why,
                   "measured": dict(measured or {})})
