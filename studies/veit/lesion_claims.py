"""The Veit lesion claims: single deletions, deletions of k units, swaps and projection units
(Veit et al. 2016, Sec. 4, Fig. 3 and 5), each a plain function of measured trials.

Each ``claim_*`` returns a claim dict (see :mod:`unravel.study.claims`); the verdicts say nothing
about whether the nets are deep or trained long enough to stand for the paper's ResNet-110.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from unravel.study.claims import check_columns, judge
from unravel.study.stats import Trials, per_seed

from .papers import VEIT

__all__ = ["claim_single_deletions", "claim_single_deletions_vs_plain", "claim_smooth_growth",
           "claim_projection_units", "independent_prediction", "unit_stages", "stage_increases"]


def unit_stages(frame: pd.DataFrame) -> pd.Series:
    """The stage of each single-deletion row: a projection unit opens a stage (the units before
    the first projection unit are stage 0). Rows are one seed's ``delete_each`` rows; the
    baseline row (``variant == -1``) gets -1.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.lesion_claims import unit_stages
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


def stage_increases(frame: pd.DataFrame) -> pd.DataFrame:
    """Veit Fig. 3 as stated, per model, seed and stage: the median and the largest error
    increase over the non-downsampling units (and which unit gives the largest). ``frame``
    holds ``delete_each`` rows with their baseline rows (columns seed, variant, units,
    projection, error; optionally model).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.lesion_claims import stage_increases
    >>> f = pd.DataFrame({"seed": 0, "variant": range(-1, 4), "units": ["", "0", "1", "2", "3"],
    ...                   "projection": [False, False, False, True, False], "error": [0.1, 0.1, 0.5, 0.6, 0.1]})
    >>> stage_increases(f)[["stage", "median_increase", "max_increase", "worst_unit"]].values.tolist()
    [[0, 0.2, 0.4, '1'], [1, 0.0, 0.0, '3']]
    """
    keys = ["seed"] + (["model"] if "model" in frame.columns else [])
    rows = []
    for key, g in frame.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        inc, _ = _increases(g)
        for stage, h in inc[~inc.projection].groupby("stage"):
            worst = h.increase.idxmax()
            rows.append({**dict(zip(keys, key)), "stage": int(stage), "units": len(h),
                         "median_increase": float(h.increase.median()), "max_increase": float(h.increase.max()),
                         "worst_unit": str(h.units[worst])})
    return pd.DataFrame(rows)


def _trained(frame, chance, label):
    worst = float(frame.loc[frame.variant == -1, "error"].max())
    return worst < chance / 2, (f"{label} did not train: its baseline error {worst:.3f} is not below half the chance "
                                f"error {chance:.2f}")


def claim_single_deletions(each: Trials, *, margin: float = 0.02, chance: float = 0.9,
                           n_boot: int = 1000, requires=()) -> dict:
    """Deleting a single non-downsampling unit leaves the error near the baseline (Veit Fig. 3).

    Effect: the median error increase over the identity (non-projection) units of each stage;
    the worst stage's median, averaged over seeds. The claim holds if it lies below ``margin``
    (default 0.02, two percentage points). ``measured`` gives each stage's median, 90th
    percentile and maximum (Fig. 3 as stated: deleting *any* such unit; the maximum and its
    unit over all seeds' rows, per stage). ``each`` holds one model's ``delete_each`` rows (with their baseline row) per seed.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.studies.veit.lesion_claims import claim_single_deletions
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "variant": range(-1, 4), "units": ["", "0", "1", "2", "3"],
    ...                   "projection": [False, False, False, True, False],
    ...                   "error": [0.05, 0.055, 0.06, 0.3, 0.05]})
    >>> claim_single_deletions(Trials(pd.concat([f, f.assign(seed=1)])), n_boot=50)["verdict"]
    'inconclusive'
    """
    check_columns(each.frame, ["seed", "variant", "units", "projection", "error"], "claim_single_deletions")
    each = _with_stages(each)
    f = each.frame

    def worst_stage_median(g):
        inc, _ = _increases(g)
        ident = inc[~inc.projection]
        return ident.groupby("stage").increase.median().max()

    parts = [_increases(g)[0] for _, g in f.groupby("seed")]
    inc = pd.concat(parts, ignore_index=True)
    ident = inc[~inc.projection]
    by_stage = ident.groupby("stage").increase
    measured = {"baseline_error": float(f.loc[f.variant == -1, "error"].mean()),
                "median_increase_by_stage": {int(k): float(v) for k, v in by_stage.median().items()},
                # Veit Fig. 3 says *any* such deletion: the largest increase of each stage beside its median
                "max_increase_by_stage": {int(k): float(v) for k, v in by_stage.max().items()},
                "worst_unit_by_stage": {int(k): str(ident.loc[v, "units"]) for k, v in by_stage.idxmax().items()},
                "p90_increase_by_stage": {int(k): float(v) for k, v in by_stage.quantile(0.9).items()},
                "median_increase": float(ident.increase.median()), "p90_increase": float(ident.increase.quantile(0.9)),
                "largest_increase": float(inc.increase.max()),
                "identity_units": int(ident.units.nunique()),
                "projection_units": int(inc[inc.projection].units.nunique())}
    return judge("single-deletions", "Deleting a single non-downsampling unit leaves the error near the baseline",
                  f"{VEIT}, Fig. 3", per_seed(worst_stage_median), each, margin=margin, direction="below",
                  effect="the worst stage's median error increase", measured=measured, extra=requires, n_boot=n_boot,
                  range=[-1, 1],
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
    >>> from unravel.studies.veit.lesion_claims import claim_single_deletions_vs_plain
    >>> from unravel.study.stats import Trials
    >>> rows = [(m, v, e) for m, es in [("residual", [0.1, 0.12, 0.11]), ("plain", [0.1, 0.8, 0.9])]
    ...         for v, e in zip([-1, 0, 1], es)]
    >>> f = pd.DataFrame(rows, columns=["model", "variant", "error"])
    >>> claim_single_deletions_vs_plain(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1)])), n_boot=50)["verdict"]
    'inconclusive'
    """
    f = each.frame
    check_columns(f, ["seed", "model", "variant", "error"], "claim_single_deletions_vs_plain")

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
    return judge("single-deletions-vs-plain", "Deleting a single unit hurts a residual net far less than a plain net",
                  f"{VEIT}, Fig. 3", per_seed(gap), each, margin=margin, direction="above",
                  effect="plain minus residual mean error increase", measured=measured, extra=requires, n_boot=n_boot,
                  range=[-2, 2],
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
    >>> from unravel.studies.veit.lesion_claims import claim_smooth_growth
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": 0, "k": [0, 1, 2, 4, 8], "error": [0.1, 0.15, 0.2, 0.3, 0.5]})
    >>> c = claim_smooth_growth(Trials(pd.concat([f, f.assign(seed=1)]), draws=["k"]), n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (1.0, 'inconclusive')
    """
    f = trials.frame
    check_columns(f, ["seed", x, "error"], "claim_smooth_growth")
    curve = _curve(f, x)
    info = {"x": [float(v) for v in curve.index], "mean_error": [round(float(v), 4) for v in curve]}
    info.update(measured or {})
    return judge(cid, statement, source, lambda fr: _steepness(_curve(fr, x)), trials, margin=margin,
                  direction="below", effect="the steepest step's slope over the average slope", measured=info,
                  extra=requires, n_boot=n_boot, paper_key=cid, range=[1, None])


def independent_prediction(each: pd.DataFrame, deleted: pd.DataFrame) -> pd.DataFrame:
    """What k-unit deletions would give if single deletions acted independently: the accuracy
    after deleting a set S predicted as ``acc0 * prod(acc_i / acc0 for i in S)`` from the
    single-deletion accuracies ``acc_i``, for the very sets drawn (``units`` column).

    Returns ``deleted`` with a column ``predicted_error``; rows are matched by ``seed`` (and
    ``model`` when both frames have it).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.veit.lesion_claims import independent_prediction
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
    >>> from unravel.studies.veit.lesion_claims import claim_projection_units
    >>> from unravel.study.stats import Trials
    >>> err = [0.02] + [0.03] * 5 + [0.4] + [0.03] * 5
    >>> f = pd.DataFrame({"seed": 0, "variant": range(-1, 11), "units": [""] + [str(i) for i in range(11)],
    ...                   "projection": [False] * 6 + [True] + [False] * 5, "error": err})
    >>> claim_projection_units(Trials(f), n_boot=50)["estimate"]
    1.0
    """
    check_columns(each.frame, ["seed", "variant", "units", "projection", "error"], "claim_projection_units")
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
    return judge(name, "Deleting a projection unit hurts more than deleting another unit of its stage"
                  + (f" ({label} shortcuts)" if label else ""), f"{VEIT}, Sec. 4.1", per_seed(stat), each,
                  margin=margin, direction="above", effect="the projection units' rank percentile within their stage",
                  measured={"rank_percentiles": [round(float(r), 3) for r in ranks], "permutation_p": p,
                            "projection_units_ranked": len(ranks)},
                  requires=[(bool(ranks), "no projection unit opens a stage of two or more units"),
                            _trained(f, chance, "the net")], extra=requires, n_boot=n_boot,
                  paper_key="projection-units", range=[0, 1], check=bool(label))
