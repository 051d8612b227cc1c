"""The Veit path claims: the gradient per path length decays exponentially, and the effective
paths are short and few (Veit et al. 2016, Sec. 5, Fig. 6), each a plain function of trials.

The claims that quote the paper take Veit's *magnitude* (number of paths x mean norm of one path's
gradient: a ``magnitude`` column, from :func:`unravel.attribution.path_magnitudes`); they also
accept the exact *net* quantity (the norm of the sum of a length's path gradients: ``sq_norm``,
its mean squared norm per example), which no paper measured and which the study reports as its
own finding (:func:`finding_net_mean_length`). See ``docs/concepts.md`` for the two.
"""

from __future__ import annotations

import math

import numpy as np

from unravel.study.claims import check_columns, judge
from unravel.study.stats import Trials, per_seed

from .papers import VEIT

__all__ = ["claim_exponential_decay", "claim_mean_length_below", "claim_effective_fraction", "claim_window_stays",
           "finding_net_mean_length", "effective_windows", "VEIT_WINDOW", "VEIT_UNITS"]

#: Veit et al. Sec. 5.3: the effective paths of ResNet-110 (54 units) are 5 to 17 blocks long.
VEIT_WINDOW = (5, 17)
VEIT_UNITS = 54


def _quantity(f) -> str:
    """The column a frame carries its quantity in: ``magnitude`` (Veit's) or ``sq_norm`` (net)."""
    return "magnitude" if "magnitude" in f.columns else "sq_norm"


def _norms(g):
    """Per length (sorted): counts and what each length carries: Veit's ``magnitude`` where the
    rows have it, else the net quantity from ``sq_norm`` (mean per-example squared norm of the
    length's part, proportional to the squared norm of the batch's part)."""
    g = g.sort_values("length")
    value = (g.magnitude.to_numpy(float) if "magnitude" in g.columns
             else np.sqrt(np.maximum(g.sq_norm.to_numpy(float), 0)))
    return g.length.to_numpy(float), g["count"].to_numpy(float), value


def _decay(g):
    if "per_path_norm" in g.columns:  # a single-path magnitude (Veit's sampling estimator)
        g = g.sort_values("length")
        L, per = g.length.to_numpy(float), g.per_path_norm.to_numpy(float)
    else:  # a length's part shared among its paths
        L, c, norm = _norms(g)
        per = np.where(c > 0, norm / np.maximum(c, 1), 0.0)
    keep = per > 0
    if keep.sum() < 3:
        return math.nan, math.nan
    x, y = L[keep], np.log(per[keep])
    slope, icpt = np.polyfit(x, y, 1)
    pred = slope * x + icpt
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    return float(slope), float(r2)


def claim_exponential_decay(paths: Trials, *, min_r2: float = 0.8, n_boot: int = 1000,
                            measured: dict | None = None, requires=()) -> dict:
    """The gradient magnitude per path decays exponentially with its length (Veit Fig. 6(b)).

    Effect: the slope of a straight-line fit of log(magnitude per path) against length (per seed,
    then averaged); the claim holds below 0. Inconclusive if the fit explains less than ``min_r2``
    of the variance (not an exponential). ``paths`` has rows ``seed, length`` and either
    ``per_path_norm`` (a single path's gradient magnitude, as Veit et al.'s sampling estimator
    measures it) or ``count, sq_norm`` (the exact length's part, shared evenly among its paths:
    ``sq_norm`` is the mean over examples of its squared norm; per-example items when kept).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.path_claims import claim_exponential_decay
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(6), "count": 1, "sq_norm": [4.0 ** -k for k in range(6)]})
    >>> c = claim_exponential_decay(Trials(pd.concat([f, f.assign(seed=1)]), value="sq_norm"), n_boot=20)
    >>> round(c["estimate"], 3), c["verdict"]
    (-0.693, 'inconclusive')
    """
    f = paths.frame
    check_columns(f, ["seed", "length"] + (["per_path_norm"] if "per_path_norm" in f.columns else
                                             ["count", "sq_norm"]), "claim_exponential_decay")
    r2 = float(np.mean([_decay(g)[1] for _, g in f.groupby("seed")]))
    slope = per_seed(lambda g: _decay(g)[0])(f)
    info = {"r2": r2, "factor_per_length": math.exp(slope) if math.isfinite(slope) else None}
    info.update(measured or {})
    return judge("exponential-decay", "The gradient magnitude per path decays exponentially with its length",
                  f"{VEIT}, Fig. 6(b)", per_seed(lambda g: _decay(g)[0]), paths, margin=0.0, direction="below",
                  effect="the log-linear slope of magnitude per path against length", measured=info,
                  extra=requires, n_boot=n_boot, check=True,
                  requires=[(not math.isfinite(r2) or r2 >= min_r2,
                             f"the log-linear fit explains {r2:.2f} of the variance, below {min_r2}")])


def _mean_length(g):
    L, _, norm = _norms(g)
    return float((norm * L).sum() / norm.sum()) if norm.sum() > 0 else math.nan


def _window(g, mass):
    L, c, norm = _norms(g)
    if not norm.sum() > 0:
        return int(L[0]), int(L[-1]), math.nan
    share = norm / norm.sum()
    K = len(share)
    for width in range(1, K + 1):
        sums = np.convolve(share, np.ones(width), "valid")
        if sums.max() >= mass * (1 - 1e-9):
            a = int(sums.argmax())
            return int(L[a]), int(L[a + width - 1]), float(c[a:a + width].sum() / c.sum())
    return int(L[0]), int(L[-1]), 1.0


def effective_windows(frame, mass: float = 0.9) -> list[dict]:
    """Per seed and depth (``units`` column, else ``n`` = the longest length), the effective
    window in terms comparable across depths: ``low``, ``high``, ``width``, ``mean_length_over_n``
    (and ``fraction_of_paths``, comparable with Veit's 0.45% only at n = 54).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.path_claims import effective_windows
    >>> f = pd.DataFrame({"seed": 0, "length": range(5), "count": [1, 4, 6, 4, 1],
    ...                   "magnitude": [1.0, 8.0, 1.0, 0, 0]})
    >>> w = effective_windows(f, 0.8)[0]
    >>> w["low"], w["high"], w["width"], w["mean_length_over_n"]
    (1, 1, 1, 0.25)
    """
    keys = ["seed"] + (["units"] if "units" in frame.columns else [])
    out = []
    for key, g in frame.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        n = int(key[1]) if len(key) > 1 else int(g.length.max())
        a, b, frac = _window(g, mass)
        out.append({"seed": int(key[0]), "units": n, "low": a, "high": b, "width": b - a + 1,
                    "mean_length_over_n": _mean_length(g) / n, "fraction_of_paths": frac})
    return out


def _window_summary(f, n, mass):
    """What the claims report about the windows, beside Veit's 5-17 of 54."""
    w = effective_windows(f, mass)
    return {"quantity": _quantity(f), "windows": [[x["low"], x["high"]] for x in w],
            "widths": [x["width"] for x in w],
            "mean_length_over_n": float(np.mean([x["mean_length_over_n"] for x in w])),
            "veit_window": list(VEIT_WINDOW), "veit_units": VEIT_UNITS, "veit_width": VEIT_WINDOW[1] - VEIT_WINDOW[0] + 1,
            "units": n, "mass": mass}


def _check(f, name, extra=()):
    check_columns(f, ["seed", "length", "count", *extra, _quantity(f)], name)


def claim_mean_length_below(paths: Trials, n: int, *, margin: float = 0.8,
                           n_boot: int = 1000, requires=()) -> dict:
    """The gradient comes mostly from paths far shorter than the typical path (Veit Fig. 6(c)).

    Effect: the magnitude-weighted mean path length divided by ``n / 2`` (the typical path's
    length); the claim holds below ``margin`` (0.8). ``paths`` has rows ``seed, length, count``
    and ``magnitude`` (Veit's quantity) or ``sq_norm`` (the net quantity). ``measured`` gives
    each seed's window, its width and the mean length over n, beside Veit's 5-17 of 54.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.path_claims import claim_mean_length_below
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(5), "count": [1, 4, 6, 4, 1], "sq_norm": [1.0, 4.0, 1.0, 0, 0]})
    >>> claim_mean_length_below(Trials(f, value="sq_norm"), n=4, n_boot=20)["estimate"]
    0.5
    """
    return _mean_length_claim(paths, n, "mean-length", "The gradient comes mostly from paths far shorter than the "
                              "typical path", f"{VEIT}, Fig. 6(c)", margin=margin, n_boot=n_boot,
                              requires=requires, name="claim_mean_length_below")


def _mean_length_claim(paths, n, cid, statement, source, *, margin, n_boot, requires, name, mass=0.9):
    f = paths.frame
    _check(f, name)
    mean = per_seed(_mean_length)(f)
    measured = {"gradient_mean_length": mean, "typical_path_length": n / 2, "units": n}
    measured.update(_window_summary(f, n, mass))
    return judge(cid, statement, source, per_seed(lambda g: _mean_length(g) / (n / 2)), paths, margin=margin,
                 direction="below", effect=f"the mean path length of the {_quantity(f).replace('sq_norm', 'net')} "
                                           "quantity over n/2",
                 measured=measured, extra=requires, n_boot=n_boot, range=[0, 2], scale={"units": n})


def finding_net_mean_length(paths: Trials, n: int, *, margin: float = 0.8, mass: float = 0.9,
                            n_boot: int = 1000, requires=()) -> dict:
    """Our finding, not a paper's: the *net* gradient (the norm of the sum of each length's path
    gradients, which cancel) comes mostly from paths far shorter than the typical path.

    Effect and ``measured`` as :func:`claim_mean_length_below`, on rows ``seed, length, count,
    sq_norm`` of the exact decomposition; no paper entry is shown beside it.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.path_claims import finding_net_mean_length
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(5), "count": [1, 4, 6, 4, 1], "sq_norm": [1.0, 4.0, 1.0, 0, 0]})
    >>> c = finding_net_mean_length(Trials(f, value="sq_norm"), n=4, n_boot=20)
    >>> c["id"], c["estimate"]
    ('net-mean-length', 0.5)
    """
    if "sq_norm" not in paths.frame.columns:
        check_columns(paths.frame, ["sq_norm"], "finding_net_mean_length")
    return _mean_length_claim(paths, n, "net-mean-length", "The net gradient (paths of one length summed, so that "
                              "they cancel) comes mostly from paths far shorter than the typical path",
                              "unravel's exact decomposition (our finding; no paper measured the net quantity)",
                              margin=margin, n_boot=n_boot, requires=requires, name="finding_net_mean_length",
                              mass=mass)


def claim_effective_fraction(paths: Trials, n: int, *, mass: float = 0.9, margin: float = 0.01,
                             n_boot: int = 1000, requires=()) -> dict:
    """Only a small fraction of all paths carries the gradient (Veit Sec. 5.3: 0.45% at n = 54).

    Effect: the fraction of all ``2**n`` paths whose lengths lie in the shortest window of
    lengths holding ``mass`` of the gradient magnitude; the claim holds below ``margin`` (0.01, about
    twice Veit's 0.45%; the spec's pre-registered definition decides in a run). Only at Veit's
    n = 54 (inconclusive otherwise): the fraction is a step function of the window's upper edge,
    not comparable across depths (compare the windows, their widths and the mean length over n in
    ``measured``).

    Examples
    --------
    >>> import pandas as pd
    >>> from math import comb
    >>> from unravel.studies.veit.path_claims import claim_effective_fraction
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(11), "count": [comb(10, k) for k in range(11)],
    ...                   "sq_norm": [1.0, 4.0] + [0.0] * 9})
    >>> c = claim_effective_fraction(Trials(f, value="sq_norm"), n=10, n_boot=20)
    >>> round(c["estimate"], 4), c["verdict"]
    (0.0107, 'inconclusive')
    """
    f = paths.frame
    _check(f, "claim_effective_fraction")
    same_n = (n == VEIT_UNITS, f"the fraction of all paths is compared with Veit's 0.45% only at n = {VEIT_UNITS} "
                               f"(here n = {n}): it is a step function of the window's upper edge, not comparable "
                               "across depths; compare the windows and the mean length over n")
    return judge("effective-fraction", "Only a small fraction of all paths carries the gradient",
                  f"{VEIT}, Sec. 5.3", per_seed(lambda g: _window(g, mass)[2]), paths, margin=margin,
                  direction="below", effect=f"the share of all paths in the window holding {mass:.0%} of the gradient",
                  measured=_window_summary(f, n, mass), extra=[*requires, same_n], n_boot=n_boot, range=[0, 1],
                  scale={"units": n})


def claim_window_stays(paths: Trials, *, margin: float = 0.5,
                           n_boot: int = 1000, requires=()) -> dict:
    """The effective paths stay short as the network gets deeper: the gradient's mean path length
    grows much slower than the number of units ``n`` (Veit: effective paths are shallow).

    Effect: the slope of log(gradient mean length) against log(n) across the depths measured (0:
    the window stays put, 1: it grows in proportion to n); the claim holds below ``margin`` (0.5).
    ``paths`` has a column ``units`` (n of each row's network).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.path_claims import claim_window_stays
    >>> from unravel.study.stats import Trials
    >>> rows = [(n, k, 1, 1.0 if k in (1, 2) else 0.0) for n in (9, 27, 54) for k in range(n + 1)]
    >>> f = pd.DataFrame(rows, columns=["units", "length", "count", "sq_norm"]).assign(seed=0)
    >>> round(claim_window_stays(Trials(f, value="sq_norm"), n_boot=20)["estimate"], 6)
    0.0
    """
    f = paths.frame
    _check(f, "claim_window_stays", ["units"])

    def slope(g):
        by_n = g.groupby("units").apply(_mean_length, include_groups=False)
        if len(by_n) < 2 or not (by_n > 0).all():
            return math.nan
        return float(np.polyfit(np.log(by_n.index.to_numpy(float)), np.log(by_n.to_numpy(float)), 1)[0])

    means = f.groupby(["units", "seed"]).apply(_mean_length, include_groups=False).groupby("units").mean()
    return judge("window-stays", "The effective paths stay short as the network gets deeper", f"{VEIT}, Sec. 5.3",
                  per_seed(slope), paths, margin=margin, direction="below",
                  effect="the slope of log mean gradient path length against log n",
                  measured={"quantity": _quantity(f),
                            "gradient_mean_length_by_units": {int(k): float(v) for k, v in means.items()},
                            "windows": effective_windows(f)},
                  extra=requires, n_boot=n_boot)
