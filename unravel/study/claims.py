"""Claims: the verdict on each published claim, as a plain function of tidy frames.

Each ``claim_*`` takes the frames a study measured (or synthetic ones) and returns a dict: id,
statement, source, the measured numbers, a boolean verdict and the rule that gave it. They do not
check that the frames come from models large or trained enough for the verdict to be evidence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["claim_single_deletions", "claim_smooth_growth", "claim_projection_hurts", "claim_exponential_decay",
           "claim_mean_length_below", "claim_shallow_first", "claim_mean_length_moves", "claim_dense_shallower",
           "claim_alike", "claim_residual_closer", "claim_deeper_closer"]

VEIT = "Veit, Wilber & Belongie, NeurIPS 2016"
SSF = "Shallow subnetwork first, Neural Networks 148 (2022)"
NORM = "Zaeemzadeh, Rahnavard & Shah, IEEE TPAMI 43(11) (2021)"


def _claim(cid, statement, source, measured, verdict, rule):
    return {"id": cid, "statement": statement, "source": source, "measured": measured, "verdict": bool(verdict),
            "rule": rule}


def claim_single_deletions(residual: pd.DataFrame, plain: pd.DataFrame, factor: float = 0.5) -> dict:
    """Single deletions hurt the residual net far less than the plain net: the residual net's
    mean error increase is below ``factor`` times the plain net's (delete_each frames).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_single_deletions
    >>> def frame(base, errors):
    ...     return pd.DataFrame({"variant": range(-1, len(errors)), "error": [base, *errors]})
    >>> claim_single_deletions(frame(0.1, [0.12, 0.11]), frame(0.1, [0.8, 0.9]))["verdict"]
    True
    """
    def increase(df):
        base = float(df.loc[df.variant == -1, "error"].iloc[0])
        return float(df.loc[df.variant >= 0, "error"].mean() - base), base

    r, rb = increase(residual)
    p, pb = increase(plain)
    return _claim("single-deletions", "Deleting a single unit hurts a residual net far less than a plain net",
                  f"{VEIT}, Fig. 3",
                  {"residual_baseline_error": rb, "residual_mean_increase": r, "plain_baseline_error": pb,
                   "plain_mean_increase": p},
                  r < factor * p, f"residual mean increase < {factor} x plain mean increase")


def claim_smooth_growth(frame: pd.DataFrame, share: float = 0.5) -> dict:
    """Error grows smoothly with k: no single step between consecutive k (k = 0 being the
    baseline) makes more than ``share`` of the total rise of the mean error.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_smooth_growth
    >>> claim_smooth_growth(pd.DataFrame({"k": [0, 1, 2, 3], "error": [0.1, 0.2, 0.3, 0.4]}))["verdict"]
    True
    """
    mean = frame.groupby("k").error.mean().sort_index()
    steps = mean.diff().dropna()
    rise = float(mean.iloc[-1] - mean.iloc[0])
    biggest = float(steps.max()) if len(steps) else 0.0
    verdict = len(steps) >= 3 and rise > 0 and biggest <= share * rise
    return _claim("smooth-growth", "Error grows smoothly as more units are deleted (no cliff)", f"{VEIT}, Fig. 5a",
                  {"ks": mean.index.tolist(), "mean_error": [round(float(e), 4) for e in mean], "total_rise": rise,
                   "largest_step": biggest},
                  verdict, f"at least three steps, a positive rise, and no step above {share} of the rise")


def claim_projection_hurts(frame: pd.DataFrame) -> dict:
    """Deleting a projection (downsampling) unit hurts more than deleting an identity unit.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_projection_hurts
    >>> frame = pd.DataFrame({"variant": [-1, 0, 1], "error": [0.1, 0.5, 0.12],
    ...                       "projection": [False, True, False]})
    >>> claim_projection_hurts(frame)["measured"]
    {'projection_mean_error': 0.5, 'identity_mean_error': 0.12}
    """
    units = frame[frame.variant >= 0]
    proj, ident = units[units.projection], units[~units.projection]
    if proj.empty or ident.empty:
        return _claim("projection-units", "Projection units hurt more when deleted than identity units",
                      f"{VEIT}, Sec. 4.2", {"projection_units": len(proj), "identity_units": len(ident)}, False,
                      "needs both kinds of unit")
    p, i = float(proj.error.mean()), float(ident.error.mean())
    return _claim("projection-units", "Projection units hurt more when deleted than identity units",
                  f"{VEIT}, Sec. 4.2", {"projection_mean_error": p, "identity_mean_error": i}, p > i,
                  "mean error after deleting a projection unit > after deleting an identity unit")


def claim_exponential_decay(frame: pd.DataFrame, min_r2: float = 0.8) -> dict:
    """Per-path gradient magnitude decays exponentially with length: a log-linear fit of
    ``per_path_norm`` against length has a negative slope and R^2 >= ``min_r2``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_exponential_decay
    >>> frame = pd.DataFrame({"length": range(6), "per_path_norm": [2.0 ** -k for k in range(6)]})
    >>> round(claim_exponential_decay(frame)["measured"]["factor_per_length"], 3)
    0.5
    """
    d = frame[frame.per_path_norm > 0]
    x, y = d.length.to_numpy(float), np.log(d.per_path_norm.to_numpy(float))
    if len(x) < 3:
        return _claim("exponential-decay", "Gradient magnitude per path decays exponentially with length",
                      f"{VEIT}, Fig. 6(a)", {"lengths_fitted": len(x)}, False, "needs three lengths")
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    return _claim("exponential-decay", "Gradient magnitude per path decays exponentially with length",
                  f"{VEIT}, Fig. 6(a)", {"slope_log_per_length": float(slope), "r2": float(r2),
                                         "factor_per_length": float(math.exp(slope))},
                  slope < 0 and r2 >= min_r2, f"log-linear fit: slope < 0 and R^2 >= {min_r2}")


def claim_mean_length_below(frame: pd.DataFrame, n: int, factor: float = 0.8) -> dict:
    """The gradient-weighted mean path length lies well below n/2: below ``factor * n/2``,
    weighting each length by its total magnitude (``norm``).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_mean_length_below
    >>> frame = pd.DataFrame({"length": range(5), "norm": [1.0, 2.0, 1.0, 0.0, 0.0]})
    >>> claim_mean_length_below(frame, n=4)["measured"]["gradient_mean_length"]
    1.0
    """
    w = frame.norm.to_numpy(float)
    mean = float((w * frame.length.to_numpy(float)).sum() / w.sum())
    return _claim("mean-length", "The gradient comes mostly from paths far shorter than the typical path",
                  f"{VEIT}, Sec. 4.1", {"gradient_mean_length": mean, "mean_path_length": n / 2, "units": n},
                  mean < factor * n / 2, f"magnitude-weighted mean length < {factor} x n/2")


def _half_time(series: pd.Series) -> float:
    """Fractional epoch at which the error first covers half its way from start to end."""
    e = series.sort_index()
    start, end = float(e.iloc[0]), float(e.iloc[-1])
    target = start - 0.5 * (start - end)
    if start <= end:
        return float("inf")  # never improved
    xs, ys = e.index.to_numpy(float), e.to_numpy(float)
    for i in range(1, len(ys)):
        if ys[i] <= target:
            return float(xs[i - 1] + (ys[i - 1] - target) / max(ys[i - 1] - ys[i], 1e-12) * (xs[i] - xs[i - 1]))
    return float(xs[-1])


def claim_shallow_first(frame: pd.DataFrame) -> dict:
    """Shallow subnetworks reach low error before deep ones: the half-way time of the smallest
    subnetwork is earlier than that of the largest (subnetworks_frame of a tracker).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_shallow_first
    >>> frame = pd.DataFrame({"epoch": [0, 1, 2] * 2, "subnetwork_units": [1] * 3 + [8] * 3,
    ...                       "error": [0.9, 0.2, 0.2, 0.9, 0.8, 0.2]})
    >>> claim_shallow_first(frame)["verdict"]
    True
    """
    by_k = frame.groupby(["subnetwork_units", "epoch"]).error.mean()
    ks = sorted(frame.subnetwork_units.unique())
    times = {int(k): _half_time(by_k.loc[k]) for k in ks}
    shallow, deep = times[ks[0]], times[ks[-1]]
    return _claim("shallow-first", "Shallow subnetworks reach low error before deep ones", SSF,
                  {"half_way_epoch_by_units": times}, shallow < deep,
                  "epoch at which the error covers half its fall: smallest subnetwork < largest")


def claim_mean_length_moves(frame: pd.DataFrame) -> dict:
    """Over training the gradient's mean path length grows (low-degree terms are learned first,
    so the shallow paths' share of the gradient falls): last > first (tracker frame, wrt units).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_mean_length_moves
    >>> claim_mean_length_moves(pd.DataFrame({"epoch": [0, 1], "mean_length": [2.0, 3.0]}))["verdict"]
    True
    """
    by_epoch = frame.groupby("epoch").mean_length.mean().sort_index()
    first, last = float(by_epoch.iloc[0]), float(by_epoch.iloc[-1])
    return _claim("mean-length-moves", "The gradient's mean path length grows over training (shallow terms first)",
                  SSF, {"mean_length_first": first, "mean_length_last": last,
                        "by_epoch": [round(float(v), 3) for v in by_epoch]}, last > first,
                  "mean length of the unit-parameter gradient at the last record > at the first")


def claim_dense_shallower(res: float, res_n: int, dense: float, dense_n: int) -> dict:
    """DenseNet's effective paths are shallower than ResNet's, relative to depth: the mean path
    length divided by the number of units is smaller for the DenseNet.

    Examples
    --------
    >>> from unravel.study import claim_dense_shallower
    >>> claim_dense_shallower(res=5.0, res_n=10, dense=2.0, dense_n=10)["verdict"]
    True
    """
    return _claim("dense-shallower", "DenseNet's effective paths are shallower than ResNet's", SSF,
                  {"resnet_mean_length": res, "resnet_units": res_n, "densenet_mean_length": dense,
                   "densenet_units": dense_n, "resnet_relative": res / res_n, "densenet_relative": dense / dense_n},
                  dense / dense_n < res / res_n, "mean length / units: DenseNet < ResNet")


def claim_alike(a: float, a_n: int, b: float, b_n: int, tolerance: float = 0.1) -> dict:
    """SE-ResNets behave like ResNets: their relative mean path lengths differ by less than
    ``tolerance``.

    Examples
    --------
    >>> from unravel.study import claim_alike
    >>> round(claim_alike(5.0, 10, 5.5, 10)["measured"]["difference"], 3)
    0.05
    """
    diff = abs(a / a_n - b / b_n)
    return _claim("se-alike", "SE-ResNets and ResNets behave alike", SSF,
                  {"resnet_relative": a / a_n, "se_resnet_relative": b / b_n, "difference": diff},
                  diff < tolerance, f"|relative mean lengths| differ by < {tolerance}")


def _log_dev(frame):
    return frame.assign(dev=np.abs(np.log(frame.ratio.clip(lower=1e-300))))


def claim_residual_closer(frame: pd.DataFrame) -> dict:
    """Residual ratios are closer to 1 than plain ones at every depth: mean ``|log ratio|``
    (norm_ratios frames with columns family, depth).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_residual_closer
    >>> frame = pd.DataFrame({"family": ["residual", "plain"], "depth": [8, 8], "ratio": [1.1, 3.0]})
    >>> claim_residual_closer(frame)["verdict"]
    True
    """
    d = _log_dev(frame).groupby(["depth", "family"]).dev.mean().unstack()
    ok = bool((d["residual"] < d["plain"]).all())
    return _claim("residual-closer", "Residual nets preserve the gradient norm better than plain nets", NORM,
                  {"mean_abs_log_ratio": {int(k): {c: round(float(v), 4) for c, v in row.items()}
                                          for k, row in d.iterrows()}}, ok,
                  "mean |log ratio| residual < plain at every depth")


def claim_deeper_closer(frame: pd.DataFrame) -> dict:
    """Deeper residual nets preserve the norm better: mean ``|log ratio|`` of the deepest residual
    net < that of the shallowest.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_deeper_closer
    >>> frame = pd.DataFrame({"family": ["residual"] * 2, "depth": [8, 20], "ratio": [1.5, 1.1]})
    >>> claim_deeper_closer(frame)["verdict"]
    True
    """
    d = _log_dev(frame[frame.family == "residual"]).groupby("depth").dev.mean().sort_index()
    return _claim("deeper-closer", "Deeper residual nets preserve the gradient norm better still", NORM,
                  {"mean_abs_log_ratio_by_depth": {int(k): round(float(v), 4) for k, v in d.items()}},
                  float(d.iloc[-1]) < float(d.iloc[0]), "mean |log ratio|: deepest residual < shallowest")

