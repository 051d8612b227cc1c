"""Effect estimates, bootstrap confidence intervals and three-valued verdicts.

A claim is judged by an **effect estimate**, its **confidence interval** and a stated **margin**:
the claim says the effect lies above (or below) the margin. It is *supported* when the whole
interval lies on the claimed side, *contradicted* when the whole interval lies on the other side,
and *inconclusive* otherwise, or when the effect is undefined on the data (a curve that never
rises, a net that never trained).

Intervals (:func:`bootstrap`) combine the levels a study's measurements vary on: **seeds** (whole
training runs: the standard error of the per-seed estimates, with Student's t), and, with the
trained nets fixed, **test examples** (per-item outcomes reweighted with Poisson(1) weights, the
same weights for every row of every seed, so comparisons stay paired) and **draws** (rows, or
clusters of rows, exchangeable within a group, such as the random k-unit deletions of one k).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["VERDICTS", "Trials", "trials_from", "subset", "bootstrap", "per_seed", "decide", "make_claim"]

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
        replacement inside each group. None: rows are fixed.
    cluster : str, optional
        With ``draws``: a column naming which rows belong together (one random subnetwork measured
        at every epoch, say); whole clusters are resampled instead of rows.

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
    cluster: str | None = None
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
        if self.cluster is not None and not self.draws:
            raise ArgumentError("Trials.cluster needs draws (the groups its clusters are drawn within).")
        needed = [*(self.draws or ()), *([self.cluster] if self.cluster else [])]
        missing = [c for c in needed if c not in self.frame.columns]
        if missing:
            raise ArgumentError(f"Trials.draws names columns the frame lacks: {missing}.")
        self._by_seed = {s: np.flatnonzero(self.frame.seed.to_numpy() == s) for s in self.frame.seed.unique()}

    @property
    def seeds(self) -> list:
        """The seeds of the rows, in order of appearance."""
        return list(self._by_seed)


def trials_from(parts, **kw) -> Trials:
    """Trials from a list of ``(frame, items or None)``: the frames concatenated, their items
    stacked when every part has them; ``kw`` as for :class:`Trials`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import trials_from
    >>> t = trials_from([(pd.DataFrame({"seed": [0], "error": [0.5]}), np.array([[1, 0]])),
    ...                  (pd.DataFrame({"seed": [1], "error": [0.0]}), np.array([[0, 0]]))])
    >>> len(t.frame), t.items.shape
    (2, (2, 2))
    """
    frame = pd.concat([f for f, _ in parts], ignore_index=True)
    items = np.concatenate([w for _, w in parts]) if all(w is not None for _, w in parts) else None
    return Trials(frame, items, **kw)


def subset(trials: Trials, mask, **kw) -> Trials:
    """The rows of ``trials`` where ``mask`` holds, with their items; ``value`` and ``draws``
    kept unless ``kw`` gives others.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.stats import Trials, subset
    >>> t = Trials(pd.DataFrame({"seed": [0, 1], "error": [0.5, 0.1]}))
    >>> subset(t, [False, True]).frame.error.tolist()
    [0.1]
    """
    mask = np.asarray(mask, bool)
    return Trials(trials.frame[mask], None if trials.items is None else trials.items[mask],
                  value=kw.pop("value", trials.value), draws=kw.pop("draws", trials.draws))


def _as_dict(trials):
    if isinstance(trials, Trials):
        return {None: trials}, True
    if isinstance(trials, Mapping) and all(isinstance(t, Trials) for t in trials.values()):
        return dict(trials), False
    raise ArgumentError("bootstrap needs a Trials or a mapping of names to Trials.")


def _call(stat, frames, single):
    try:
        v = stat(frames[None] if single else frames)
    except (ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError):
        return math.nan
    v = float(v) if v is not None else math.nan
    return v if math.isfinite(v) else math.nan


def _t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def _clusters(t: Trials, rows: np.ndarray) -> list:
    """The resampling groups of one seed's rows: per group of ``draws``, a list of clusters (row
    positions within ``rows``) that are drawn with replacement."""
    sub = t.frame.iloc[rows]
    out = []
    for ix in sub.groupby(list(t.draws), sort=False).indices.values():
        ix = np.asarray(ix)
        if t.cluster is None:
            out.append([np.array([i]) for i in ix])
        else:
            ids = sub[t.cluster].to_numpy()[ix]
            out.append([ix[ids == c] for c in dict.fromkeys(ids)])
    return out


def bootstrap(stat: Callable, trials, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
              scale: str = "linear"):
    """The estimate of ``stat`` and its confidence interval over seeds, test examples and draws.

    With two or more seeds the interval is ``estimate +- t * sqrt(se_seeds**2 + se_within**2)``:
    ``se_seeds`` is the standard error of ``stat`` computed on each seed alone (seeds are whole
    training runs; ``t`` is Student's quantile with ``seeds - 1`` degrees of freedom, so three
    seeds give wide intervals, as they should); ``se_within`` is the bootstrap standard deviation
    of ``stat`` when the test examples (Poisson(1) weights, one weight vector per resample shared by
    every row of every seed, since all seeds are measured on the same examples) and the draws
    (rows, or ``cluster`` groups of rows, within each ``draws`` group) are resampled with the
    trained nets fixed. Adding both is conservative. With one seed the interval is the percentile
    interval of the within resamples: conditional on that one trained net.

    Parameters
    ----------
    stat : callable
        ``stat(frame) -> float`` (or ``stat({name: frame}) -> float`` when ``trials`` is a
        mapping). It must handle frames of one seed and of several (see :func:`per_seed`). A NaN or
        infinite result (or a ``ZeroDivisionError``) means *undefined*.
    trials : Trials or mapping of str to Trials
        Trials of one mapping share their example weights (paired).
    n_boot : int
    level : float
        Coverage of the interval.
    seed : int
        Seeds the resampling.
    scale : {"linear", "log"}
        ``"log"`` for a statistic that is positive by definition (a share, a ratio of lengths): the
        interval is built for ``log(stat)`` and mapped back, so it stays positive and is
        multiplicative (``estimate * exp(+-half)``); a value <= 0 counts as undefined.

    Returns
    -------
    (estimate, [low, high], undefined_share)
        ``estimate`` is NaN when ``stat`` is undefined on the data; the interval is ``[nan, nan]``
        when the estimate or a seed's estimate is undefined, or ``stat`` is undefined in more than
        ``(1 - level) / 2`` of the within resamples.

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
    >>> est, (lo, hi), _ = bootstrap(lambda f: f.error.mean(), t, scale="log")
    >>> 0 < lo < 0.3 < hi
    True
    """
    if scale not in ("linear", "log"):
        raise ArgumentError(f"scale={scale!r}: give 'linear' or 'log'.")
    if scale == "log":
        def log_stat(frames, _stat=stat):
            v = _stat(frames)
            return math.log(v) if v is not None and math.isfinite(v) and v > 0 else math.nan

        est, ci, undefined = bootstrap(log_stat, trials, n_boot=n_boot, level=level, seed=seed)
        return math.exp(est) if math.isfinite(est) else est, [math.exp(v) for v in ci], undefined
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
    S, alpha = len(seeds), (1 - level) / 2
    nan_ci = [math.nan, math.nan]
    if math.isnan(estimate):
        return estimate, nan_ci, 1.0
    se_seeds = 0.0
    if S >= 2:
        theta = [_call(stat, {k: t.frame[t.frame.seed == s] for k, t in tdict.items()}, single) for s in seeds]
        if any(math.isnan(v) for v in theta):
            return estimate, nan_ci, 1.0
        se_seeds = float(np.std(theta, ddof=1) / math.sqrt(S))
    rng = np.random.default_rng(seed)
    varies = any(t.items is not None or t.draws for t in tdict.values())
    reps = np.full(n_boot, estimate)
    if varies:
        weights = {}  # items per row -> [n_items, n_boot], shared by every seed (the same examples)
        values = {}  # (trials, seed) -> resampled values of its rows, [rows, n_boot]
        for k, t in tdict.items():
            if t.items is not None:
                n = t.items.shape[1]
                if n not in weights:
                    w = rng.poisson(1.0, size=(n, n_boot)).astype(np.float32)
                    w[:, w.sum(0) == 0] = 1.0
                    weights[n] = w
                for s, rows in t._by_seed.items():
                    values[(k, s)] = (t.items[rows] @ weights[n]) / weights[n].sum(0, keepdims=True)
        groups = {(k, s): _clusters(t, rows) for k, t in tdict.items() if t.draws for s, rows in t._by_seed.items()}
        for b in range(n_boot):
            out = {}
            for k, t in tdict.items():
                idx, vals = [], []
                for s, rows in t._by_seed.items():
                    order = np.arange(len(rows))
                    if t.draws:
                        order = np.concatenate([np.concatenate([g[i] for i in rng.integers(0, len(g), len(g))])
                                                for g in groups[(k, s)]])
                    idx.append(rows[order])
                    if t.items is not None:
                        vals.append(values[(k, s)][order, b])
                part = t.frame.take(np.concatenate(idx))
                part.index = pd.RangeIndex(len(part))
                if t.items is not None:
                    part[t.value] = np.concatenate(vals)
                out[k] = part
            reps[b] = _call(stat, out, single)
    undefined = float(np.isnan(reps).mean())
    if undefined > alpha:
        return estimate, nan_ci, undefined
    finite = reps[~np.isnan(reps)]
    if S >= 2:
        half = _t_quantile(1 - alpha, S - 1) * math.sqrt(se_seeds ** 2 + float(np.std(finite)) ** 2)
        return estimate, [estimate - half, estimate + half], undefined
    # one seed: percentile interval; an undefined resample counts against both bounds
    k = int(np.isnan(reps).sum())
    lo = float(np.quantile(np.concatenate([finite, np.full(k, -np.inf)]), alpha, method="lower"))
    hi = float(np.quantile(np.concatenate([finite, np.full(k, np.inf)]), 1 - alpha, method="higher"))
    return estimate, [lo, hi], undefined


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
    """The verdict on "the effect lies ``direction`` ``margin``" from its interval
    (``"within"``: the effect lies between ``-margin`` and ``margin``, an equivalence claim).

    Examples
    --------
    >>> from unravel.study.stats import decide
    >>> decide(0.3, [0.2, 0.4], 0.1, "above"), decide(0.3, [0.2, 0.4], 0.5, "above")
    ('supported', 'contradicted')
    >>> decide(0.3, [0.05, 0.4], 0.1, "above"), decide(float("nan"), [0, 1], 0.1, "below")
    ('inconclusive', 'inconclusive')
    """
    if direction not in ("above", "below", "within"):
        raise ArgumentError(f"direction={direction!r}; allowed: above, below, within.")
    lo, hi = (float(v) for v in ci)
    if any(math.isnan(v) for v in (estimate, lo, hi)):
        return "inconclusive"
    if direction == "within":  # equivalence: the effect lies in (-margin, margin)
        if -margin < lo and hi < margin:
            return "supported"
        return "contradicted" if lo > margin or hi < -margin else "inconclusive"
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
    if direction == "within":
        rule = (f"supported if the {level:.0%} interval of {effect} lies within (-{margin:g}, {margin:g}), "
                f"contradicted if it lies wholly outside")
        why = {"supported": "the whole interval lies within the margins",
               "contradicted": "the whole interval lies outside the margins",
               "inconclusive": "the interval crosses a margin"}[verdict]
    else:
        other = "above" if direction == "below" else "below"
        rule = (f"supported if the {level:.0%} interval of {effect} lies {direction} {margin:g}, contradicted if it "
                f"lies {other}")
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
