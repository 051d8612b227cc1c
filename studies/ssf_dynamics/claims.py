"""Claims of the shallow-subnetwork-first paper, as plain functions of measured trials.

Each ``claim_*`` takes :class:`~unravel.study.stats.Trials` and returns a claim dict with a
three-valued verdict (see :mod:`unravel.study.claims` for the fields). Times are in epochs of
training (fractional: step / steps per epoch), so records at log-spaced steps in the first epoch
resolve the start of training. It does not check that the nets are large or trained long enough
to stand for the paper's.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from unravel.study.claims import check_columns, judge
from unravel.study.stats import Trials, per_seed

__all__ = ["claim_subnetworks_first", "claim_shallow_nets_first", "claim_short_paths_early",
           "claim_histograms_differ", "claim_histograms_alike", "half_way_time", "total_variation", "TV_MARGIN",
           "SSF", "PAPERS"]

#: The one margin on the total-variation distance between two nets' path-length histograms:
#: above it they differ (DenseNet against ResNet), below it they are alike (SE-ResNet against
#: ResNet). 0.1: at most a tenth of the gradient's magnitude sits at other lengths.
TV_MARGIN = 0.1

SSF = "Shallow subnetwork first, Neural Networks 148 (2022)"

#: What the abstract says for each claim (the paper's words paraphrased; it gives no number).
PAPERS = {
    "subnetworks-first": {"where": f"{SSF}, abstract", "value": None,
                          "note": "residual-like networks learn through their shallow subnetworks first: the "
                                  "shallow subnetworks are trained first"},
    "shallow-nets-first": {"where": f"{SSF}, abstract", "value": None,
                           "note": "the shallow subnetworks are trained first (here: shallow nets trained alone, "
                                   "against the deep one)"},
    "short-paths-early": {"where": f"{SSF}, abstract", "value": None,
                          "note": "early in training the gradient is dominated by short paths"},
    "dense-differs": {"where": f"{SSF}, abstract", "value": None,
                      "note": "DenseNets behave differently from ResNets"},
    "se-alike": {"where": f"{SSF}, abstract", "value": None,
                 "note": "squeeze-and-excitation ResNets behave like ResNets"},
}


def _claim(cid, statement, stat, trials, **kw):
    """:func:`~unravel.study.claims.judge` with this paper as the source."""
    return judge(cid, statement, SSF, stat, trials, **kw)


def half_way_time(times, errors) -> float:
    """When an error curve first covers half its way from its first to its last value, by
    linear interpolation between records; NaN if the curve does not fall.

    Examples
    --------
    >>> from unravel.studies.ssf_dynamics.claims import half_way_time
    >>> half_way_time([0, 1, 2, 4], [0.9, 0.7, 0.3, 0.1])
    1.5
    >>> half_way_time([0, 1], [0.5, 0.6])
    nan
    """
    order = np.argsort(np.asarray(times, float), kind="stable")
    xs, ys = np.asarray(times, float)[order], np.asarray(errors, float)[order]
    if len(ys) < 2 or not ys[0] > ys[-1]:
        return math.nan
    target = ys[0] - 0.5 * (ys[0] - ys[-1])
    for i in range(1, len(ys)):
        if ys[i] <= target:
            return float(xs[i - 1] + (ys[i - 1] - target) / max(ys[i - 1] - ys[i], 1e-12) * (xs[i] - xs[i - 1]))
    return float(xs[-1])


def _half_times(g, by):
    curves = g.groupby([by, "epochs"]).error.mean()
    return {int(k): half_way_time(curves.loc[k].index, curves.loc[k].to_numpy()) for k in sorted(g[by].unique())}


def _ends(g, by):
    curves = g.groupby([by, "epochs"]).error.mean()
    return {int(k): [round(float(curves.loc[k].sort_index().iloc[i]), 4) for i in (0, -1)] for k in sorted(g[by].unique())}


def claim_subnetworks_first(subnetworks: Trials, *, margin: float = 0.0, n_boot: int = 1000, requires=()) -> dict:
    """Small subnetworks of the network being trained learn before large ones (SSF).

    Effect: the epoch at which the largest subnetwork's error (mean over its draws) covers half
    its fall, minus the smallest's, averaged over seeds; the claim holds above ``margin`` (0
    epochs). Each curve is measured against its own fall, so a subnetwork that stalls high can
    still be early: ``measured`` gives each curve's first and last error. Undefined
    (inconclusive) where a curve does not fall. Rows: ``seed, epochs, subnetwork_units, draw,
    error``; pass ``Trials(frame, items, draws=["subnetwork_units"], cluster="draw")`` so that
    each draw's whole curve is resampled, with the test examples.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.ssf_dynamics.claims import claim_subnetworks_first
    >>> from unravel.study.stats import Trials
    >>> curves = {2: [0.9, 0.3, 0.25, 0.2], 9: [0.9, 0.8, 0.4, 0.1]}
    >>> f = pd.DataFrame([{"seed": s, "epochs": t, "subnetwork_units": k, "draw": 0, "error": e + 0.01 * s}
    ...                   for s in (0, 1) for k, es in curves.items() for t, e in zip([0, 0.1, 1, 2], es)])
    >>> claim_subnetworks_first(Trials(f, draws=["subnetwork_units"], cluster="draw"), n_boot=20)["verdict"]
    'inconclusive'
    """
    f = subnetworks.frame
    check_columns(f, ["seed", "epochs", "subnetwork_units", "error"], "claim_subnetworks_first")

    def gap(g):
        t = _half_times(g, "subnetwork_units")
        ks = sorted(t)
        return t[ks[-1]] - t[ks[0]] if len(ks) >= 2 else math.nan

    return _claim("subnetworks-first", "Small subnetworks of the training network learn before large ones "
                  "(each covers half its fall in error earlier; BN statistics recalibrated)", per_seed(gap),
                  subnetworks, margin=margin, direction="above",
                  effect="the largest minus the smallest subnetwork's half-way time (epochs)",
                  measured={"half_way_epochs_by_units": _half_times(f, "subnetwork_units"),
                            "first_and_last_error_by_units": _ends(f, "subnetwork_units")},
                  extra=requires, n_boot=n_boot)


def claim_shallow_nets_first(curves: Trials, *, margin: float = 0.0, n_boot: int = 1000, requires=()) -> dict:
    """A shallower net trained alone learns sooner than a deeper one, trained the same way (SSF,
    the second operationalisation).

    Effect: the deepest net's half-way time (epochs) minus the shallowest's, averaged over seeds;
    the claim holds above ``margin`` (0). Rows: ``seed, epochs, units`` (the net's number of
    units), ``error``; per-example outcomes as items where kept.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.ssf_dynamics.claims import claim_shallow_nets_first
    >>> from unravel.study.stats import Trials
    >>> curves = {3: [0.9, 0.4, 0.3, 0.3], 9: [0.9, 0.8, 0.3, 0.1]}
    >>> f = pd.DataFrame([{"seed": s, "epochs": t, "units": k, "error": e + 0.01 * s}
    ...                   for s in (0, 1) for k, es in curves.items() for t, e in zip([0, 0.1, 1, 2], es)])
    >>> round(claim_shallow_nets_first(Trials(f), n_boot=20)["estimate"], 3)
    0.58
    """
    f = curves.frame
    check_columns(f, ["seed", "epochs", "units", "error"], "claim_shallow_nets_first")

    def gap(g):
        t = _half_times(g, "units")
        ks = sorted(t)
        return t[ks[-1]] - t[ks[0]] if len(ks) >= 2 else math.nan

    return _claim("shallow-nets-first", "A shallower net trained alone learns sooner than a deeper one",
                  per_seed(gap), curves, margin=margin, direction="above",
                  effect="the deepest minus the shallowest net's half-way time (epochs)",
                  measured={"half_way_epochs_by_units": _half_times(f, "units"),
                            "first_and_last_error_by_units": _ends(f, "units")}, extra=requires, n_boot=n_boot)


def claim_short_paths_early(records: Trials, *, margin: float = 0.05, n_boot: int = 1000, requires=()) -> dict:
    """Early in training the gradient runs through shorter paths than later (SSF).

    Effect: the gradient's mean path length (units' parameters only) at the last record minus at
    the first, over the number of units, averaged over seeds; the claim holds above ``margin``
    (0.05: the mean moves by a twentieth of the depth or more). Rows: ``seed, epochs,
    mean_length, units``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.ssf_dynamics.claims import claim_short_paths_early
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "epochs": [0, 5] * 2, "mean_length": [2.0, 4.0, 2.1, 4.2],
    ...                   "units": 10})
    >>> c = claim_short_paths_early(Trials(f), n_boot=20)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.205, 'supported')
    """
    f = records.frame
    check_columns(f, ["seed", "epochs", "mean_length", "units"], "claim_short_paths_early")

    def moved(g):
        by = g.groupby("epochs").mean_length.mean().sort_index()
        return float(by.iloc[-1] - by.iloc[0]) / float(g.units.iloc[0])

    by = f.groupby("epochs").mean_length.mean().sort_index()
    return _claim("short-paths-early", "Early in training the gradient runs through shorter paths than later",
                  per_seed(moved), records, margin=margin, direction="above",
                  effect="the last minus the first record's mean path length, over the units",
                  measured={"mean_length_by_epochs": {round(float(k), 4): round(float(v), 3) for k, v in by.items()},
                            "units": int(f.units.iloc[0])}, extra=requires, n_boot=n_boot, range=[-1, 1])


def total_variation(p, q) -> float:
    """Half the L1 distance between two histograms, each normalised to sum 1 (0: equal, 1:
    disjoint); histograms of different lengths are padded with zeros.

    Examples
    --------
    >>> from unravel.studies.ssf_dynamics.claims import total_variation
    >>> total_variation([0.5, 0.5], [0.5, 0.25, 0.25])
    0.25
    """
    p, q = np.asarray(p, float), np.asarray(q, float)
    K = max(len(p), len(q))
    p, q = np.pad(p, (0, K - len(p))), np.pad(q, (0, K - len(q)))
    if not (p.sum() > 0 and q.sum() > 0):
        return math.nan
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def _histograms(g, model):
    """step -> histogram (share by length) of one model in one seed's rows."""
    h = g[g.model == model].pivot_table(index="step", columns="length", values="share", aggfunc="mean")
    return h.fillna(0.0)


def _tv_by_step(g, a, b):
    ha, hb = _histograms(g, a), _histograms(g, b)
    steps = ha.index.intersection(hb.index)
    return pd.Series([total_variation(ha.loc[s].to_numpy(), hb.loc[s].to_numpy()) for s in steps], index=steps,
                     dtype=float)


def _mean_tv(g, a, b):
    tv = _tv_by_step(g, a, b)
    return float(tv.mean()) if len(tv) else math.nan


def _between_seeds(f, model):
    """The mean TV distance between two seeds' histograms of one model: what seeds alone give."""
    seeds = sorted(f.seed.unique())
    vals = []
    for s, t in itertools.combinations(seeds, 2):
        g = pd.concat([f[(f.seed == s) & (f.model == model)].assign(model="x"),
                       f[(f.seed == t) & (f.model == model)].assign(model="y")])
        vals.append(_mean_tv(g, "x", "y"))
    return float(np.mean(vals)) if vals else math.nan


def _histogram_claim(cid, statement, histograms, a, b, margin, direction, n_boot, requires):
    f = histograms.frame
    check_columns(f, ["seed", "model", "step", "length", "share", "units"], f"claim for {a} against {b}")
    units = {m: int(f[f.model == m].units.iloc[0]) for m in (a, b) if (f.model == m).any()}
    floor = _between_seeds(f, a)
    tv = f.groupby("seed").apply(lambda g: _tv_by_step(g, a, b), include_groups=False)
    by_step = tv.groupby(level=-1).mean() if isinstance(tv, pd.Series) else tv.mean()
    rel = {m: float((f[f.model == m].groupby(["seed", "step"]).apply(
        lambda g: float((g.share * g.length).sum()), include_groups=False)).mean() / units[m]) for m in units}
    pre = [(len(units) == 2 and units.get(a) == units.get(b),
            f"the two nets must have as many units to compare histograms length by length; got {units}"),
           (not floor >= margin, f"{a}'s histograms differ between seeds by {floor:.3f} on average, not less than "
                                 f"the margin {margin}: the margin cannot tell nets apart")]
    return _claim(cid, statement, per_seed(lambda g: _mean_tv(g, a, b)), histograms, margin=margin,
                  direction=direction, effect=f"the total-variation distance between {a}'s and {b}'s path-length "
                                              "histograms, mean over records",
                  measured={"tv_by_step": {int(k): round(float(v), 4) for k, v in by_step.items()},
                            f"{a}_between_seeds_tv": floor, "mean_length_over_units": rel, "units": units},
                  requires=pre, extra=requires, n_boot=n_boot, range=[0, 1])


def claim_histograms_differ(histograms: Trials, a: str = "resnet", b: str = "densenet", *, margin: float = TV_MARGIN,
                            n_boot: int = 1000, requires=()) -> dict:
    """Two nets' gradients are spread differently over path lengths: DenseNet against ResNet
    (SSF).

    Effect: per seed, the total-variation distance (:func:`total_variation`) between the two
    nets' normalised path-length histograms of the units' parameter gradient at each record,
    averaged over the records both have, then over seeds. The claim holds above ``margin``
    (:data:`TV_MARGIN`, the margin :func:`claim_histograms_alike` uses, so "different" and
    "alike" cannot both hold). Inconclusive when the nets have different numbers of units, or
    when ``a``'s own seeds differ by the margin or more. ``measured`` gives each net's mean
    length over its units (the direction of a difference). Rows: ``seed, model, step, length,
    share, units``.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.ssf_dynamics.claims import claim_histograms_differ
    >>> from unravel.study.stats import Trials
    >>> hist = {"resnet": [0.1, 0.3, 0.4, 0.2], "densenet": [0.6, 0.3, 0.1, 0.0]}
    >>> f = pd.DataFrame([{"seed": s, "model": m, "step": 0, "length": k, "share": v, "units": 3}
    ...                   for s in (0, 1, 2) for m, h in hist.items() for k, v in enumerate(h)])
    >>> c = claim_histograms_differ(Trials(f), n_boot=20)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.5, 'inconclusive')
    """
    return _histogram_claim("dense-differs", f"{_name(b)}'s gradient is spread over path lengths differently from "
                            f"{_name(a)}'s", histograms, a, b, margin, "above", n_boot, requires)


def claim_histograms_alike(histograms: Trials, a: str = "resnet", b: str = "se_resnet", *, margin: float = TV_MARGIN,
                           n_boot: int = 1000, requires=()) -> dict:
    """Two nets' gradients are spread alike over path lengths: SE-ResNet against ResNet (SSF),
    an equivalence test on the whole histogram.

    Effect: as :func:`claim_histograms_differ`; the claim holds below ``margin``
    (:data:`TV_MARGIN`).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.ssf_dynamics.claims import claim_histograms_alike
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame([{"seed": s, "model": m, "step": 0, "length": k, "share": v + (0.01 * s if k == 0 else 0),
    ...                    "units": 3} for s in (0, 1, 2) for m in ("resnet", "se_resnet")
    ...                   for k, v in enumerate([0.1, 0.3, 0.4, 0.2])])
    >>> claim_histograms_alike(Trials(f), n_boot=20)["verdict"]
    'inconclusive'
    """
    return _histogram_claim("se-alike", f"{_name(b)}'s gradient is spread over path lengths like {_name(a)}'s",
                            histograms, a, b, margin, "below", n_boot, requires)


def _name(model):
    return {"resnet": "ResNet", "densenet": "DenseNet", "se_resnet": "SE-ResNet"}.get(model, model)
