"""Estimates and intervals on synthetic frames with known effects: the estimate is the mean of the
per-seed statistics, every interval lies inside the statistic's range and holds the estimate, a
zero-width interval decides nothing, and Holm's correction never adds a verdict."""

import math

import numpy as np
import pandas as pd
import pytest

from unravel.errors import ArgumentError
from unravel.study.claims import judge
from unravel.study.intervals import bootstrap, from_scale, to_scale
from unravel.study.stats import Trials, per_seed
from unravel.study.verdicts import decide, holm, make_claim

B = 200


def _accuracy_trials(rates_by_seed, n=400, rng=0):
    """One row per seed, its value the share of n examples right, with per-example flags."""
    rng = np.random.default_rng(rng)
    rows, items = [], []
    for s, r in rates_by_seed.items():
        w = np.zeros(n, bool)
        w[: int(round(r * n))] = True
        rng.shuffle(w)
        rows.append({"seed": s})
        items.append(w)
    items = np.array(items)
    return Trials(pd.DataFrame(rows).assign(error=items.mean(1)), items)


def _mean(g):
    return float(g.error.mean())


def test_estimate_is_the_mean_of_each_seeds_statistic_not_the_statistic_of_the_pooled_seeds():
    # a statistic that is not linear: the maximum; pooled it would be 0.9, per seed 0.5, 0.6, 0.9
    f = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "error": [0.1, 0.5, 0.2, 0.6, 0.3, 0.9]})
    r = bootstrap(lambda g: g.error.max(), Trials(f), n_boot=B)
    assert r.per_seed == [0.5, 0.6, 0.9] and r.estimate == pytest.approx(2.0 / 3)
    assert r.ci[0] <= r.estimate <= r.ci[1]


@pytest.mark.parametrize("rates", [{0: 0.02, 1: 0.05, 2: 0.01}, {0: 0.97, 1: 0.99, 2: 1.0}, {0: 0.0, 1: 0.0, 2: 0.0},
                                   {0: 0.5, 1: 0.1, 2: 0.9}])
def test_intervals_of_a_share_stay_inside_its_range_and_hold_the_estimate(rates):
    t = _accuracy_trials(rates)
    r = bootstrap(_mean, t, n_boot=B, range=[0, 1])
    assert 0 <= r.ci[0] <= r.estimate <= r.ci[1] <= 1
    # the plain t interval this replaces leaves the range for shares near a bound
    if max(rates.values()) <= 0.05 or min(rates.values()) >= 0.97:
        plain = bootstrap(_mean, t, n_boot=B)
        assert plain.ci[0] < 0 or plain.ci[1] > 1 or r.ci[1] - r.ci[0] == 0


def test_logit_scale_makes_intervals_near_a_bound_asymmetric():
    t = _accuracy_trials({0: 0.05, 1: 0.08, 2: 0.06, 3: 0.04, 4: 0.07})
    r = bootstrap(_mean, t, n_boot=B, range=[0, 1])
    lo, hi = r.ci
    assert 0 < lo < r.estimate < hi and hi - r.estimate > r.estimate - lo


def test_positive_quantity_interval_on_the_log_scale():
    f = pd.DataFrame({"seed": [0, 1, 2], "share": [1e-6, 4e-6, 2e-5]})  # spread over seeds, all positive
    r = bootstrap(per_seed(lambda g: g.share.mean()), Trials(f, value="share"), n_boot=B, range=[0, None])
    assert 0 < r.ci[0] < r.estimate < r.ci[1]
    plain = bootstrap(per_seed(lambda g: g.share.mean()), Trials(f, value="share"), n_boot=B)
    assert plain.ci[0] < 0  # what the log scale avoids


def test_scale_maps_round_trip():
    x = np.array([0.01, 0.3, 0.99])
    for bounds in [(0.0, 1.0), (-1.0, 1.0), (0.0, math.inf), (1.0, math.inf), None]:
        assert from_scale(to_scale(x + (1 if bounds == (1.0, math.inf) else 0), bounds), bounds) == \
            pytest.approx(x + (1 if bounds == (1.0, math.inf) else 0))


def test_a_statistic_outside_its_range_is_refused():
    f = pd.DataFrame({"seed": [0, 1], "error": [0.5, 1.5]})
    with pytest.raises(ArgumentError, match="outside its range"):
        bootstrap(_mean, Trials(f), n_boot=B, range=[0, 1])
    with pytest.raises(ArgumentError, match="range"):
        bootstrap(_mean, Trials(f), n_boot=B, range=[1, 0])


def test_zero_width_interval_never_decides():
    f = pd.DataFrame({"seed": [0, 1, 2], "error": [1.0, 1.0, 1.0]})
    c = judge("x", "X", "here", _mean, Trials(f), margin=0.5, direction="above", effect="x", n_boot=B, range=[0, 1])
    assert c["ci"] == [1.0, 1.0] and c["verdict"] == "inconclusive" and "no variation" in c["why"]
    assert decide(1.19e-7, [1.19e-7, 1.19e-7], 0.1, "below") == "inconclusive"
    holm([c])
    assert c["verdict_holm"] == "inconclusive"


def test_one_seed_interval_is_the_examples_only_and_inconclusive():
    t = _accuracy_trials({0: 0.1}, n=4000)
    c = judge("x", "X", "here", _mean, t, margin=0.5, direction="below", effect="x", n_boot=B, range=[0, 1])
    assert c["ci"][1] < 0.2 and c["verdict"] == "inconclusive" and "one training seed" in c["why"]


def test_undefined_statistic_gives_no_interval():
    f = pd.DataFrame({"seed": [0, 1, 2], "error": [0.1, 0.2, 0.3]})
    r = bootstrap(lambda g: math.nan, Trials(f), n_boot=B)
    assert math.isnan(r.estimate) and all(math.isnan(v) for v in r.ci)
    c = make_claim("x", "X", "p", estimate=r.estimate, ci=r.ci, margin=0, direction="above", effect="x",
                   seeds=[0, 1, 2], undefined=r.undefined)
    assert c["verdict"] == "inconclusive" and c["estimate"] is None and c["ci"] == [None, None]


def test_examples_are_resampled_paired_across_rows():
    # two nets wrong on nearly the same examples: their difference is known far more precisely
    # than either error, which only holds if both rows get the same example weights
    rng = np.random.default_rng(2)
    rows, items = [], []
    for s in range(3):
        a = rng.random(3000) < 0.3
        b = a.copy()
        b[np.flatnonzero(~a)[: 30 + 3 * s]] = True  # about one point more errors
        rows += [{"seed": s, "net": "a"}, {"seed": s, "net": "b"}]
        items += [a, b]
    items = np.array(items)
    t = Trials(pd.DataFrame(rows).assign(error=items.mean(1)), items)
    r = bootstrap(lambda g: g.error.iloc[1] - g.error.iloc[0], t, n_boot=B)
    # unpaired, the interval would be about 2 * 4.3 * sqrt(2 * 0.21 / 3000) = 0.1 wide and contain 0
    assert 0 < r.ci[0] < 0.01 < r.ci[1] < 0.025


def test_seeds_and_draws_both_widen_the_interval():
    f = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "k": 1, "error": [0.1, 0.3, 0.2, 0.4, 0.5, 0.7]})
    r = bootstrap(per_seed(_mean), Trials(f, draws=["k"]), n_boot=500)
    assert r.estimate == pytest.approx(0.3667, abs=1e-3)
    # at least as wide as Student's t over the per-seed means (0.2, 0.3, 0.6) alone
    se_seeds = np.std([0.2, 0.3, 0.6], ddof=1) / math.sqrt(3)
    assert r.ci[0] < r.estimate - 4.30 * se_seeds * 0.9 and r.ci[1] > r.estimate + 4.30 * se_seeds * 0.9


def test_coverage_of_a_known_mean_over_five_seeds():
    # 5 seeds, each N(0.3, 0.05) plus example noise: the 95% interval covers 0.3 in most of 60 runs
    rng = np.random.default_rng(7)
    covered = 0
    for rep in range(60):
        rates = {s: float(np.clip(rng.normal(0.3, 0.05), 0.01, 0.99)) for s in range(5)}
        t = _accuracy_trials(rates, n=300, rng=rep)
        r = bootstrap(_mean, t, n_boot=100, range=[0, 1], seed=rep)
        covered += r.ci[0] <= 0.3 <= r.ci[1]
    assert covered >= 54  # >= 90% of 60: far above what a percentile interval over 5 seeds gives


def test_holm_adjusts_within_a_study_and_only_removes_verdicts():
    cs = [{"kind": "claim", "verdict": "supported", "p": {"supported": p, "contradicted": 1 - p}}
          for p in (0.001, 0.013, 0.02)]
    cs.append({"kind": "check", "verdict": "supported", "p": {"supported": 0.0, "contradicted": 1.0}})
    holm(cs)
    # adjusted p: 3 * 0.001, 2 * 0.013, max(0.02, 0.026): the raw 0.013 and 0.02 would each pass 0.025
    assert [c.get("verdict_holm") for c in cs] == ["supported", "inconclusive", "inconclusive", None]
    assert cs[0]["p_holm"]["supported"] == pytest.approx(0.003) and cs[2]["p_holm"]["supported"] == pytest.approx(0.026)


def test_claim_p_values_agree_with_the_interval():
    t = _accuracy_trials({0: 0.2, 1: 0.25, 2: 0.22, 3: 0.27, 4: 0.21})
    for margin, direction in [(0.4, "below"), (0.1, "above"), (0.23, "below"), (0.1, "below")]:
        c = judge("x", "X", "here", _mean, t, margin=margin, direction=direction, effect="x", n_boot=B,
                  range=[0, 1])
        assert (c["p"]["supported"] < 0.025) == (c["verdict"] == "supported"), (margin, c)
        assert (c["p"]["contradicted"] < 0.025) == (c["verdict"] == "contradicted"), (margin, c)
