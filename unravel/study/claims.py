"""Claims: the verdict on each published claim, as a plain function of measured trials.

Each ``claim_*`` takes :class:`~unravel.study.stats.Trials` (tidy rows with a ``seed`` column and,
where the study kept them, per-example outcomes) and returns a dict: ``id``, ``statement``,
``source``, ``effect`` (what is estimated), ``estimate``, ``ci`` (95%, bootstrap over seeds, test
examples and draws), ``margin`` and ``direction`` (the claim says the effect lies above or below the
margin), ``paper`` (the paper's own figure for this quantity, where it gives one), ``seeds``,
``rule``, ``verdict`` (``"supported"``, ``"contradicted"`` or ``"inconclusive"``), ``why`` and
``measured`` (supporting numbers). An effect that is undefined on the data, or a precondition that
fails (a net that did not train), gives ``"inconclusive"``, never a verdict either way. Every
``claim_*`` takes ``requires``, more preconditions ``(ok, reason)`` (a study's scale, say).

The margins are stated choices (see each function); the verdicts say nothing about whether the
models are large or trained long enough to stand for the papers' models: the reports state the
settings next to every verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from .stats import Trials, bootstrap, make_claim, per_seed

__all__ = ["claim_single_deletions", "claim_single_deletions_vs_plain", "claim_smooth_growth",
           "claim_projection_units", "claim_exponential_decay", "claim_mean_length_below",
           "claim_effective_fraction", "claim_window_stays", "claim_shallow_first", "claim_mean_length_moves",
           "claim_dense_shallower", "claim_alike", "independent_prediction", "unit_stages", "PAPERS"]

VEIT = "Veit, Wilber & Belongie, NeurIPS 2016"
SSF = "Shallow subnetwork first, Neural Networks 148 (2022)"
NORM = "Zaeemzadeh, Rahnavard & Shah, IEEE TPAMI 43(11) (2021)"

#: What each paper reports for the quantity a claim measures: ``where`` (figure or section),
#: ``value`` (a number when the paper states one, else None) and ``note`` (its setting, in words).
PAPERS = {
    "single-deletions": {"where": f"{VEIT}, Sec. 4.1, Fig. 3(a)", "value": None,
                         "note": "ResNet-110 on CIFAR-10: deleting any single non-downsampling block leaves the "
                                 "test error close to the unlesioned network's; downsampling blocks hurt more"},
    "single-deletions-vs-plain": {"where": f"{VEIT}, Sec. 4.1, Fig. 3(a)", "value": None,
                                  "note": "VGG-15 on CIFAR-10: deleting any single layer drops it to chance "
                                          "(error about 0.9), unlike ResNet-110"},
    "smooth-growth": {"where": f"{VEIT}, Sec. 4.2, Fig. 5(a)", "value": None,
                      "note": "ResNet-110 on CIFAR-10: the error grows smoothly as more blocks are deleted"},
    "reorder-smooth": {"where": f"{VEIT}, Sec. 4.3, Fig. 5(b)", "value": None,
                       "note": "ResNet-110 on CIFAR-10: the error grows smoothly as more blocks are swapped "
                               "(Kendall's tau falls)"},
    "projection-units": {"where": f"{VEIT}, Sec. 4.1, Fig. 3", "value": None,
                         "note": "deleting a downsampling block hurts more than deleting another block"},
    "exponential-decay": {"where": f"{VEIT}, Sec. 5.2, Fig. 6(b)", "value": None,
                          "note": "ResNet-110: the gradient magnitude of a path decreases exponentially with the "
                                  "number of blocks it goes through"},
    "mean-length": {"where": f"{VEIT}, Sec. 5.3, Fig. 6(c)", "value": None,
                    "note": "ResNet-110 (54 blocks): almost all of the gradient comes from paths 5 to 17 blocks "
                            "long, while the typical path is 27 long"},
    "effective-fraction": {"where": f"{VEIT}, Sec. 5.3", "value": 0.0045,
                           "note": "ResNet-110 (54 blocks): the effective paths, 5 to 17 blocks long, are 0.45% "
                                   "of all paths"},
    "window-stays": {"where": f"{VEIT}, Sec. 5.3", "value": None,
                     "note": "the effective paths are relatively shallow: short compared with the network's depth"},
    "shallow-first": {"where": f"{SSF}, abstract", "value": None,
                      "note": "residual networks learn their shallow subnetworks first"},
    "mean-length-moves": {"where": f"{SSF}, abstract", "value": None,
                          "note": "the gradient flows mostly through shallow paths early in training"},
    "dense-shallower": {"where": f"{SSF}, abstract", "value": None,
                        "note": "DenseNets are compared with ResNets in the same analysis"},
    "se-alike": {"where": f"{SSF}, abstract", "value": None,
                 "note": "squeeze-and-excitation ResNets behave like ResNets"},
    # Zaeemzadeh et al.'s abstract: "We prove that the skip connections in the residual blocks
    # facilitate preserving the norm of the gradient [...] as more residual blocks are stacked, the
    # norm-preservation of the network is enhanced [...] making the ResNet's transition layers extra
    # norm-preserving [...] the learning dynamics and the classification performance of ResNet can
    # be improved by making it even more norm preserving."
    "identity-near-one": {"where": f"{NORM}, abstract and theory of identity blocks", "value": None,
                          "note": "identity skip connections preserve the norm of the gradient: the singular values "
                                  "of a residual block's Jacobian lie in [1 - delta, 1 + delta] when its residual "
                                  "branch is small"},
    "deeper-concentrates": {"where": f"{NORM}, abstract", "value": None,
                            "note": "as more residual blocks are stacked, the norm-preservation of the network is "
                                    "enhanced"},
    "transition-farther": {"where": f"{NORM}, transition blocks", "value": None,
                           "note": "the transition blocks, which change resolution and width, are the ones that are "
                                   "not norm-preserving (what Procrustes ResNets fix)"},
    "plain-farther": {"where": f"{NORM}, abstract", "value": None,
                      "note": "norm preservation comes from the identity skip connections: without them a block is "
                              "not norm-preserving"},
    "procrustes-transitions": {"where": f"{NORM}, Procrustes ResNets", "value": None,
                               "note": "regularising the singular values of the convolution operator makes the "
                                       "transition layers norm-preserving"},
    "procrustes-near-one": {"where": f"{NORM}, Procrustes ResNets", "value": None,
                            "note": "the transition layers' convolutions are made norm-preserving"},
    "procrustes-not-worse": {"where": f"{NORM}, abstract and experiments", "value": None,
                             "note": "making ResNet more norm-preserving improves its learning dynamics and "
                                     "classification performance (the authors' code repository reports CIFAR-10 test "
                                     "error 4.75% for ProcResNet-166 against 5.46% for ResNet-164)"},
}


def _paper(cid):
    return dict(PAPERS[cid]) if cid in PAPERS else None


def _seeds(*trials):
    return sorted({int(s) for t in trials for s in t.frame.seed.unique()})


def _judge(cid, statement, source, stat, trials, *, margin, direction, effect, measured=None, requires=(),
           n_boot=1000, boot_seed=0, paper_key=None, extra=(), scale="linear"):
    est, ci, undefined = bootstrap(stat, trials, n_boot=n_boot, seed=boot_seed, scale=scale)
    parts = list(trials.values() if isinstance(trials, dict) else [trials])
    seeds = _seeds(*parts)
    requires = [*requires, *extra,
                (len(seeds) >= 2, "one training seed: the interval covers the test examples and draws of one trained "
                                  "net, not the variation between training runs; run two or more seeds")]
    return make_claim(cid, statement, source, estimate=est, ci=ci, margin=margin, direction=direction, effect=effect,
                      seeds=seeds, paper=_paper(paper_key or cid), measured=measured, requires=requires,
                      undefined=undefined)


def _check_columns(frame, columns, what):
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArgumentError(f"{what} needs columns {', '.join(columns)}; missing: {', '.join(missing)}.")


# ------------------------------------------------------------------------------------------
# Veit et al.: lesions


def unit_stages(frame: pd.DataFrame) -> pd.Series:
    """The stage of each single-deletion row: a projection unit opens a stage (the units before
    the first projection unit are stage 0). Rows are one seed's ``delete_each`` rows; the
    baseline row (``variant == -1``) gets -1.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.claims import unit_stages
    >>> f = pd.DataFrame({"variant": [-1, 0, 1, 2, 3], "units": ["", "0", "1", "2", "3"],
    ...                   "projection": [False, False, False, True, False]})
    >>> unit_stages(f).tolist()
    [-1, 0, 0, 1, 1]
    """
    units = frame.variant >= 0
    idx = pd.to_numeric(frame.units.where(units, "-1")).astype(int)
    order = idx[units].sort_values()
    stage = frame.projection[order.index].astype(int).cumsum()
    out = pd.Series(-1, index=frame.index)
    out[order.index] = stage.to_numpy()
    return out


def _with_stages(trials: Trials) -> Trials:
    """The trials with a ``stage`` column (per seed and model), computed once before resampling."""
    f = trials.frame
    keys = ["seed"] + (["model"] if "model" in f.columns else [])
    stage = pd.concat([unit_stages(g) for _, g in f.groupby(keys, sort=False)]).reindex(f.index)
    return Trials(f.assign(stage=stage), trials.items, value=trials.value, draws=trials.draws)


def _increases(g):
    variant, error = g.variant.to_numpy(), g.error.to_numpy(float)
    base = float(error[variant == -1].mean())
    units = g[variant >= 0]
    if "stage" not in g.columns:
        units = units.assign(stage=unit_stages(g)[units.index])
    return units.assign(increase=error[variant >= 0] - base), base


def _trained(frame, chance, label):
    worst = float(frame.loc[frame.variant == -1, "error"].max())
    return worst < chance / 2, (f"{label} did not train: its baseline error {worst:.3f} is not below half the chance "
                                f"error {chance:.2f}")


def claim_single_deletions(each: Trials, *, margin: float = 0.02, chance: float = 0.9,
                           n_boot: int = 1000, requires=()) -> dict:
    """Deleting a single non-downsampling unit leaves the error near the baseline (Veit Fig. 3).

    Effect: the median error increase over the identity (non-projection) units of each stage;
    the worst stage's median, averaged over seeds. The claim holds if it lies below ``margin``
    (default 0.02, two percentage points). ``measured`` gives each stage's median and 90th
    percentile. ``each`` holds one model's ``delete_each`` rows (with their baseline row) per seed.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study import claim_single_deletions
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "variant": range(-1, 4), "units": ["", "0", "1", "2", "3"],
    ...                   "projection": [False, False, False, True, False],
    ...                   "error": [0.05, 0.055, 0.06, 0.3, 0.05]})
    >>> claim_single_deletions(Trials(pd.concat([f, f.assign(seed=1)])), n_boot=50)["verdict"]
    'supported'
    """
    _check_columns(each.frame, ["seed", "variant", "units", "projection", "error"], "claim_single_deletions")
    each = _with_stages(each)
    f = each.frame

    def worst_stage_median(g):
        inc, _ = _increases(g)
        ident = inc[~inc.projection]
        return ident.groupby("stage").increase.median().max()

    parts = [_increases(g)[0] for _, g in f.groupby("seed")]
    inc = pd.concat(parts)
    ident = inc[~inc.projection]
    by_stage = ident.groupby("stage").increase
    measured = {"baseline_error": float(f.loc[f.variant == -1, "error"].mean()),
                "median_increase_by_stage": {int(k): float(v) for k, v in by_stage.median().items()},
                "p90_increase_by_stage": {int(k): float(v) for k, v in by_stage.quantile(0.9).items()},
                "median_increase": float(ident.increase.median()), "p90_increase": float(ident.increase.quantile(0.9)),
                "largest_increase": float(inc.increase.max()),
                "identity_units": int(ident.units.nunique()),
                "projection_units": int(inc[inc.projection].units.nunique())}
    return _judge("single-deletions", "Deleting a single non-downsampling unit leaves the error near the baseline",
                  f"{VEIT}, Fig. 3", per_seed(worst_stage_median), each, margin=margin, direction="below",
                  effect="the worst stage's median error increase", measured=measured, extra=requires, n_boot=n_boot,
                  requires=[_trained(f, chance, "the net")])


def claim_single_deletions_vs_plain(each: Trials, *, margin: float = 0.1, chance: float = 0.9,
                                    n_boot: int = 1000, requires=()) -> dict:
    """Deleting a single unit hurts a residual net far less than a plain net (Veit Fig. 3).

    Effect: the plain net's mean error increase over its units minus the residual net's, averaged
    over seeds; the claim holds above ``margin`` (0.1). ``each`` holds both nets' ``delete_each``
    rows with a ``model`` column (``residual``, ``plain``). Inconclusive if either net's baseline
    error is not below half the chance error (a net that did not train cannot lose much).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_single_deletions_vs_plain
    >>> from unravel.study.stats import Trials
    >>> rows = [(m, v, e) for m, es in [("residual", [0.1, 0.12, 0.11]), ("plain", [0.1, 0.8, 0.9])]
    ...         for v, e in zip([-1, 0, 1], es)]
    >>> f = pd.DataFrame(rows, columns=["model", "variant", "error"])
    >>> claim_single_deletions_vs_plain(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1)])), n_boot=50)["verdict"]
    'supported'
    """
    f = each.frame
    _check_columns(f, ["seed", "model", "variant", "error"], "claim_single_deletions_vs_plain")

    def mean_increase(g):
        v, e = g.variant.to_numpy(), g.error.to_numpy(float)
        return e[v >= 0].mean() - e[v == -1].mean()

    def gap(g):
        m, v, e = g.model.to_numpy(), g.variant.to_numpy(), g.error.to_numpy(float)
        inc = {name: e[(m == name) & (v >= 0)].mean() - e[(m == name) & (v == -1)].mean()
               for name in ("plain", "residual")}
        return inc["plain"] - inc["residual"]

    measured = {f"{m}_{k}": float(v) for m in ("residual", "plain")
                for k, v in (("baseline_error", f[(f.model == m) & (f.variant == -1)].error.mean()),
                             ("mean_increase", per_seed(mean_increase)(f[f.model == m])))}
    return _judge("single-deletions-vs-plain", "Deleting a single unit hurts a residual net far less than a plain net",
                  f"{VEIT}, Fig. 3", per_seed(gap), each, margin=margin, direction="above",
                  effect="plain minus residual mean error increase", measured=measured, extra=requires, n_boot=n_boot,
                  requires=[_trained(f[f.model == "residual"], chance, "the residual net"),
                            _trained(f[f.model == "plain"], chance, "the plain net")])


def _curve(frame, x):
    return frame.groupby(["seed", x]).error.mean().groupby(x).mean().sort_index()


def _steepness(curve):
    xs, ys = curve.index.to_numpy(float), curve.to_numpy(float)
    if len(xs) < 4:
        return math.nan
    rise = ys[-1] - ys[0]
    if not rise > 0:
        return math.nan
    slopes = np.diff(ys) / np.diff(xs)
    return float(slopes.max() / (rise / (xs[-1] - xs[0])))


def claim_smooth_growth(trials: Trials, *, x: str = "k", margin: float = 3.0, cid: str = "smooth-growth",
                        statement: str = "The error grows smoothly as more units are deleted (no cliff)",
                        source: str = f"{VEIT}, Fig. 5(a)", n_boot: int = 1000, measured: dict | None = None,
                        requires=()) -> dict:
    """The error grows smoothly with the number of deleted (or swapped) units (Veit Fig. 5).

    Effect: the steepest step of the mean error curve (mean over draws, then seeds, against
    ``x``, the baseline at 0 included) relative to its average slope from the first to the last
    ``x``: 1 for a straight line, large for a cliff. The claim holds below ``margin`` (3: no step
    three times steeper than the average). Undefined, so inconclusive, with fewer than four points
    or a curve that does not rise. Draws are resampled within each ``x``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_smooth_growth
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "k": [0, 1, 2, 4, 8], "error": [0.1, 0.15, 0.2, 0.3, 0.5]})
    >>> c = claim_smooth_growth(Trials(pd.concat([f, f.assign(seed=1)]), draws=["k"]), n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (1.0, 'supported')
    """
    f = trials.frame
    _check_columns(f, ["seed", x, "error"], "claim_smooth_growth")
    curve = _curve(f, x)
    info = {"x": [float(v) for v in curve.index], "mean_error": [round(float(v), 4) for v in curve]}
    info.update(measured or {})
    return _judge(cid, statement, source, lambda fr: _steepness(_curve(fr, x)), trials, margin=margin,
                  direction="below", effect="the steepest step's slope over the average slope", measured=info,
                  extra=requires, n_boot=n_boot, paper_key=cid)


def independent_prediction(each: pd.DataFrame, deleted: pd.DataFrame) -> pd.DataFrame:
    """What k-unit deletions would give if single deletions acted independently: the accuracy
    after deleting a set S predicted as ``acc0 * prod(acc_i / acc0 for i in S)`` from the
    single-deletion accuracies ``acc_i``, for the very sets drawn (``units`` column).

    Returns ``deleted`` with a column ``predicted_error``; rows are matched by ``seed`` (and
    ``model`` when both frames have it).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import independent_prediction
    >>> each = pd.DataFrame({"seed": 0, "variant": [-1, 0, 1], "units": ["", "0", "1"], "error": [0.0, 0.5, 0.5]})
    >>> rnd = pd.DataFrame({"seed": 0, "variant": [0], "k": [2], "units": ["0,1"], "error": [0.6]})
    >>> independent_prediction(each, rnd).predicted_error.tolist()
    [0.75]
    """
    keys = ["seed"] + (["model"] if "model" in each.columns and "model" in deleted.columns else [])
    out = []
    for key, g in deleted.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        e = each
        for k, v in zip(keys, key):
            e = e[e[k] == v]
        acc0 = 1.0 - float(e.loc[e.variant == -1, "error"].mean())
        acc = {int(u): 1.0 - err for u, err in zip(e.loc[e.variant >= 0, "units"], e.loc[e.variant >= 0, "error"])}

        def predict(units):
            if not units:
                return 1.0 - acc0
            p = acc0
            for u in str(units).split(","):
                p *= acc[int(u)] / acc0 if acc0 > 0 else 0.0
            return 1.0 - p
        out.append(g.assign(predicted_error=[predict(u) for u in g.units.fillna("")]))
    return pd.concat(out) if out else deleted.assign(predicted_error=[])


def _percentiles(g):
    """Within-stage rank percentile of each projection unit's error (1: the worst of its stage)."""
    inc, _ = _increases(g)
    out = []
    for _, st in inc.groupby("stage"):
        proj = st[st.projection]
        if len(proj) != 1 or len(st) < 2:
            continue
        e = float(proj.error.iloc[0])
        others = st[~st.projection].error.to_numpy(float)
        out.append(((others < e).sum() + 0.5 * (others == e).sum()) / len(others))
    return out


def claim_projection_units(each: Trials, *, margin: float = 0.5, chance: float = 0.9, n_boot: int = 1000,
                           label: str = "", permutations: int = 20000, requires=()) -> dict:
    """Deleting a projection (downsampling) unit hurts more than deleting the other units of its
    stage (Veit Sec. 4.1).

    Effect: each projection unit's rank percentile among the units of the stage it opens (1: it
    hurts most, 0.5: a random unit), averaged over projection units and seeds; the claim holds
    above ``margin`` (0.5). ``measured`` adds a one-sided permutation p-value (the projection
    units' ranks against uniformly random ranks within their stages).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_projection_units
    >>> from unravel.study.stats import Trials
    >>> err = [0.02] + [0.03] * 5 + [0.4] + [0.03] * 5
    >>> f = pd.DataFrame({"seed": 0, "variant": range(-1, 11), "units": [""] + [str(i) for i in range(11)],
    ...                   "projection": [False] * 6 + [True] + [False] * 5, "error": err})
    >>> claim_projection_units(Trials(f), n_boot=50)["estimate"]
    1.0
    """
    _check_columns(each.frame, ["seed", "variant", "units", "projection", "error"], "claim_projection_units")
    each = _with_stages(each)
    f = each.frame
    ranks, sizes = [], []
    for _, g in f.groupby("seed"):
        inc, _ = _increases(g)
        for _, st in inc.groupby("stage"):
            if int(st.projection.sum()) == 1 and len(st) >= 2:
                sizes.append(len(st))
        ranks += _percentiles(g)
    p = math.nan
    if ranks:
        rng = np.random.default_rng(0)
        null = np.mean([rng.integers(0, m, permutations) / (m - 1) for m in sizes], axis=0)
        # Monte Carlo p-value, counting the observed arrangement (never 0: at least 1 / (N + 1))
        p = float(((null >= np.mean(ranks) - 1e-12).sum() + 1) / (permutations + 1))

    def stat(g):
        r = _percentiles(g)
        return float(np.mean(r)) if r else math.nan

    name = "projection-units" + (f"-{label}" if label else "")
    return _judge(name, "Deleting a projection unit hurts more than deleting another unit of its stage"
                  + (f" ({label} shortcuts)" if label else ""), f"{VEIT}, Sec. 4.1", per_seed(stat), each,
                  margin=margin, direction="above", effect="the projection units' rank percentile within their stage",
                  measured={"rank_percentiles": [round(float(r), 3) for r in ranks], "permutation_p": p,
                            "projection_units_ranked": len(ranks)},
                  requires=[(bool(ranks), "no projection unit opens a stage of two or more units"),
                            _trained(f, chance, "the net")], extra=requires, n_boot=n_boot,
                  paper_key="projection-units")


# ------------------------------------------------------------------------------------------
# Veit et al.: path lengths


def _norms(g):
    """Per length (sorted): counts and gradient magnitudes from ``sq_norm`` (mean per-example
    squared norm of the length's part, proportional to the squared norm of the batch's part)."""
    g = g.sort_values("length")
    return g.length.to_numpy(float), g["count"].to_numpy(float), np.sqrt(np.maximum(g.sq_norm.to_numpy(float), 0))


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
    >>> from unravel.study import claim_exponential_decay
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(6), "count": 1, "sq_norm": [4.0 ** -k for k in range(6)]})
    >>> c = claim_exponential_decay(Trials(pd.concat([f, f.assign(seed=1)]), value="sq_norm"), n_boot=20)
    >>> round(c["estimate"], 3), c["verdict"]
    (-0.693, 'supported')
    """
    f = paths.frame
    _check_columns(f, ["seed", "length"] + (["per_path_norm"] if "per_path_norm" in f.columns else
                                             ["count", "sq_norm"]), "claim_exponential_decay")
    r2 = float(np.mean([_decay(g)[1] for _, g in f.groupby("seed")]))
    slope = per_seed(lambda g: _decay(g)[0])(f)
    info = {"r2": r2, "factor_per_length": math.exp(slope) if math.isfinite(slope) else None}
    info.update(measured or {})
    return _judge("exponential-decay", "The gradient magnitude per path decays exponentially with its length",
                  f"{VEIT}, Fig. 6(b)", per_seed(lambda g: _decay(g)[0]), paths, margin=0.0, direction="below",
                  effect="the log-linear slope of magnitude per path against length", measured=info,
                  extra=requires, n_boot=n_boot,
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


def claim_mean_length_below(paths: Trials, n: int, *, margin: float = 0.8,
                           n_boot: int = 1000, requires=()) -> dict:
    """The gradient comes mostly from paths far shorter than the typical path (Veit Fig. 6(c)).

    Effect: the magnitude-weighted mean path length divided by ``n / 2`` (the typical path's
    length); the claim holds below ``margin`` (0.8).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_mean_length_below
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(5), "count": [1, 4, 6, 4, 1], "sq_norm": [1.0, 4.0, 1.0, 0, 0]})
    >>> claim_mean_length_below(Trials(f, value="sq_norm"), n=4, n_boot=20)["estimate"]
    0.5
    """
    f = paths.frame
    _check_columns(f, ["seed", "length", "count", "sq_norm"], "claim_mean_length_below")
    mean = per_seed(_mean_length)(f)
    return _judge("mean-length", "The gradient comes mostly from paths far shorter than the typical path",
                  f"{VEIT}, Fig. 6(c)", per_seed(lambda g: _mean_length(g) / (n / 2)), paths, margin=margin,
                  direction="below", effect="the gradient's mean path length over n/2",
                  measured={"gradient_mean_length": mean, "typical_path_length": n / 2, "units": n},
                  extra=requires, n_boot=n_boot, scale="log")


def claim_effective_fraction(paths: Trials, n: int, *, mass: float = 0.9, margin: float = 0.05,
                             n_boot: int = 1000, requires=()) -> dict:
    """Only a small fraction of all paths carries the gradient (Veit Sec. 5.3: 0.45% at n = 54).

    Effect: the fraction of all ``2**n`` paths whose lengths lie in the shortest window of
    lengths holding ``mass`` of the gradient magnitude; the claim holds below ``margin`` (0.05).

    Examples
    --------
    >>> import pandas as pd
    >>> from math import comb
    >>> from unravel.study import claim_effective_fraction
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "length": range(11), "count": [comb(10, k) for k in range(11)],
    ...                   "sq_norm": [1.0, 4.0] + [0.0] * 9})
    >>> round(claim_effective_fraction(Trials(f, value="sq_norm"), n=10, n_boot=20)["estimate"], 4)
    0.0107
    """
    f = paths.frame
    _check_columns(f, ["seed", "length", "count", "sq_norm"], "claim_effective_fraction")
    windows = [_window(g, mass) for _, g in f.groupby("seed")]
    return _judge("effective-fraction", "Only a small fraction of all paths carries the gradient",
                  f"{VEIT}, Sec. 5.3", per_seed(lambda g: _window(g, mass)[2]), paths, margin=margin,
                  direction="below", effect=f"the share of all paths in the window holding {mass:.0%} of the gradient",
                  measured={"windows": [[a, b] for a, b, _ in windows], "units": n, "mass": mass},
                  extra=requires, n_boot=n_boot, scale="log")


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
    >>> from unravel.study import claim_window_stays
    >>> from unravel.study.stats import Trials
    >>> rows = [(n, k, 1, 1.0 if k in (1, 2) else 0.0) for n in (9, 27, 54) for k in range(n + 1)]
    >>> f = pd.DataFrame(rows, columns=["units", "length", "count", "sq_norm"]).assign(seed=0)
    >>> round(claim_window_stays(Trials(f, value="sq_norm"), n_boot=20)["estimate"], 6)
    0.0
    """
    f = paths.frame
    _check_columns(f, ["seed", "units", "length", "count", "sq_norm"], "claim_window_stays")

    def slope(g):
        by_n = g.groupby("units").apply(_mean_length, include_groups=False)
        if len(by_n) < 2 or not (by_n > 0).all():
            return math.nan
        return float(np.polyfit(np.log(by_n.index.to_numpy(float)), np.log(by_n.to_numpy(float)), 1)[0])

    means = f.groupby(["units", "seed"]).apply(_mean_length, include_groups=False).groupby("units").mean()
    return _judge("window-stays", "The effective paths stay short as the network gets deeper", f"{VEIT}, Sec. 5.3",
                  per_seed(slope), paths, margin=margin, direction="below",
                  effect="the slope of log mean gradient path length against log n",
                  measured={"gradient_mean_length_by_units": {int(k): float(v) for k, v in means.items()}},
                  extra=requires, n_boot=n_boot)


# ------------------------------------------------------------------------------------------
# Shallow subnetworks first


def _half_time(curve: pd.Series) -> float:
    """Fractional epoch at which the error first covers half its way from start to end (NaN if
    it never falls)."""
    e = curve.sort_index()
    start, end = float(e.iloc[0]), float(e.iloc[-1])
    if not start > end:
        return math.nan
    target = start - 0.5 * (start - end)
    xs, ys = e.index.to_numpy(float), e.to_numpy(float)
    for i in range(1, len(ys)):
        if ys[i] <= target:
            return float(xs[i - 1] + (ys[i - 1] - target) / max(ys[i - 1] - ys[i], 1e-12) * (xs[i] - xs[i - 1]))
    return float(xs[-1])


def _half_times(g):
    by = g.groupby(["subnetwork_units", "epoch"]).error.mean()
    return {int(k): _half_time(by.loc[k]) for k in sorted(g.subnetwork_units.unique())}


def claim_shallow_first(subnetworks: Trials, *, margin: float = 0.0,
                           n_boot: int = 1000, requires=()) -> dict:
    """Shallow subnetworks reach low error before deep ones (SSF).

    Effect: the epoch at which the largest subnetwork's error covers half its fall minus that of
    the smallest (positive: shallow first), averaged over seeds; the claim holds above ``margin``
    (0). The half-way epoch is measured against each curve's own fall, so a subnetwork that
    stalls high can still count as early: ``measured`` gives the curves' start and end errors.
    Undefined (inconclusive) when a curve never falls. Rows: ``seed, epoch, subnetwork_units,
    draw, error``; pass ``Trials(frame, draws=["subnetwork_units"], cluster="draw")`` so that each
    random subnetwork's whole curve is resampled.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_shallow_first
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "epoch": [0, 1, 2] * 2, "subnetwork_units": [1] * 3 + [8] * 3,
    ...                   "error": [0.9, 0.2, 0.2, 0.9, 0.8, 0.2]})
    >>> f = pd.concat([f.assign(draw=0), f.assign(draw=1, seed=1)])
    >>> claim_shallow_first(Trials(f, draws=["subnetwork_units"], cluster="draw"), n_boot=20)["verdict"]
    'supported'
    """
    f = subnetworks.frame
    _check_columns(f, ["seed", "epoch", "subnetwork_units", "error"], "claim_shallow_first")

    def gap(g):
        t = _half_times(g)
        ks = sorted(t)
        return t[ks[-1]] - t[ks[0]]

    pooled = f.groupby(["subnetwork_units", "epoch"]).error.mean()
    units = sorted(f.subnetwork_units.unique())
    times = {int(k): _half_time(pooled.loc[k]) for k in units}
    ends = {int(k): [round(float(pooled.loc[k].sort_index().iloc[i]), 4) for i in (0, -1)] for k in units}
    return _judge("shallow-first",
                  "Shallow subnetworks learn before deep ones (each covers half its fall in error earlier)", SSF,
                  per_seed(gap),
                  subnetworks, margin=margin, direction="above",
                  effect="the largest minus the smallest subnetwork's half-way epoch",
                  measured={"half_way_epoch_by_units": times, "first_and_last_error_by_units": ends},
                  extra=requires, n_boot=n_boot)


def claim_mean_length_moves(records: Trials, *, margin: float = 0.0,
                           n_boot: int = 1000, requires=()) -> dict:
    """Over training the gradient's mean path length grows: shallow terms are learned first (SSF).

    Effect: the mean length at the last record minus at the first, averaged over seeds; the
    claim holds above ``margin`` (0). Rows: ``seed, epoch, mean_length``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_mean_length_moves
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "epoch": [0, 1] * 2, "mean_length": [2.0, 3.0, 2.1, 3.2]})
    >>> claim_mean_length_moves(Trials(f), n_boot=20)["verdict"]
    'supported'
    """
    f = records.frame
    _check_columns(f, ["seed", "epoch", "mean_length"], "claim_mean_length_moves")

    def moved(g):
        by = g.groupby("epoch").mean_length.mean().sort_index()
        return float(by.iloc[-1] - by.iloc[0])

    by_epoch = f.groupby("epoch").mean_length.mean().sort_index()
    return _judge("mean-length-moves", "The gradient's mean path length grows over training (shallow terms first)",
                  SSF, per_seed(moved), records, margin=margin, direction="above",
                  effect="the last minus the first record's mean path length",
                  measured={"by_epoch": [round(float(v), 3) for v in by_epoch]}, extra=requires, n_boot=n_boot)


def _relative(g, model):
    r = g[g.model == model]
    return float((r.mean_length / r.units).mean())


def claim_dense_shallower(frame: Trials, *, margin: float = 0.05,
                           n_boot: int = 1000, requires=()) -> dict:
    """DenseNet's effective paths are shallower than ResNet's relative to depth (SSF).

    Effect: ResNet's mean path length over its units minus DenseNet's; the claim holds above
    ``margin`` (0.05, the same margin :func:`claim_alike` uses, so the two cannot both hold for
    one gap). Rows: ``seed, model`` (``resnet``, ``densenet``), ``mean_length``, ``units``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_dense_shallower
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["resnet", "densenet"] * 2,
    ...                   "mean_length": [5.0, 2.0, 5.2, 2.1], "units": 10})
    >>> claim_dense_shallower(Trials(f), n_boot=20)["verdict"]
    'supported'
    """
    f = frame.frame
    _check_columns(f, ["seed", "model", "mean_length", "units"], "claim_dense_shallower")
    return _judge("dense-shallower", "DenseNet's effective paths are shallower than ResNet's", SSF,
                  per_seed(lambda g: _relative(g, "resnet") - _relative(g, "densenet")), frame, margin=margin,
                  direction="above", effect="ResNet's minus DenseNet's mean path length over units",
                  measured={"resnet_relative": _relative(f, "resnet"), "densenet_relative": _relative(f, "densenet")},
                  extra=requires, n_boot=n_boot)


def claim_alike(frame: Trials, *, margin: float = 0.05,
                           n_boot: int = 1000, requires=()) -> dict:
    """SE-ResNets and ResNets behave alike: an equivalence test on the signed difference of their
    mean path lengths over units, supported when its interval lies within (-``margin``,
    ``margin``) (0.05), contradicted when it lies wholly outside. Rows: ``seed, model``
    (``resnet``, ``se_resnet``), ``mean_length``, ``units``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import claim_alike
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["resnet", "se_resnet"] * 2,
    ...                   "mean_length": [5.0, 5.1, 5.0, 5.1], "units": 10})
    >>> round(claim_alike(Trials(f), n_boot=20)["estimate"], 3)
    0.01
    """
    f = frame.frame
    _check_columns(f, ["seed", "model", "mean_length", "units"], "claim_alike")
    return _judge("se-alike", "SE-ResNets and ResNets behave alike", SSF,
                  per_seed(lambda g: _relative(g, "se_resnet") - _relative(g, "resnet")), frame, margin=margin,
                  direction="within", effect="SE-ResNet's minus ResNet's mean path length over units",
                  measured={"resnet_relative": _relative(f, "resnet"), "se_resnet_relative": _relative(f, "se_resnet")},
                  extra=requires, n_boot=n_boot)
