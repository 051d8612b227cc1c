"""Claims and their statistics on synthetic trials with known effects: every claim must come
out supported, contradicted and inconclusive where the data say so."""

import math
from math import comb

import numpy as np
import pandas as pd
import pytest

from unravel.studies.veit.lesion_claims import (claim_projection_units, claim_single_deletions, claim_single_deletions_vs_plain, claim_smooth_growth, independent_prediction, unit_stages)
from unravel.studies.veit.path_claims import (claim_effective_fraction, claim_exponential_decay, claim_mean_length_below,
                                              claim_window_stays, effective_windows, finding_net_mean_length)
from unravel.study.intervals import bootstrap
from unravel.study.stats import Trials, per_seed

B = 100  # bootstrap resamples: enough for these clear-cut cases, fast


def _flags(rng, rate, n):
    """n per-example wrong flags with exactly round(rate * n) wrong, shuffled."""
    w = np.zeros(n, bool)
    w[: int(round(rate * n))] = True
    rng.shuffle(w)
    return w


def _each(rates_by_seed, base, projection=(), n=2000, model="residual"):
    """delete_each-like trials: per seed a baseline row and one row per unit with the given
    error rates, backed by per-example flags."""
    rng = np.random.default_rng(0)
    rows, items = [], []
    for seed, rates in rates_by_seed.items():
        b = _flags(rng, base, n)
        rows.append({"seed": seed, "model": model, "variant": -1, "k": 0, "units": "", "projection": False})
        items.append(b)
        for i, r in enumerate(rates):
            rows.append({"seed": seed, "model": model, "variant": i, "k": 1, "units": str(i),
                         "projection": i in projection})
            items.append(_flags(rng, r, n))
    items = np.array(items)
    return Trials(pd.DataFrame(rows).assign(error=items.mean(1)), items)


def _merge(*trials):
    return Trials(pd.concat([t.frame for t in trials], ignore_index=True), np.concatenate([t.items for t in trials]))


def test_trials_are_checked():
    with pytest.raises(ValueError, match="seed"):
        Trials(pd.DataFrame({"error": [0.1]}))
    with pytest.raises(ValueError, match="shape"):
        Trials(pd.DataFrame({"seed": [0], "error": [0.1]}), np.zeros((2, 5), bool))
    with pytest.raises(ValueError, match="draws"):
        Trials(pd.DataFrame({"seed": [0], "error": [0.1]}), draws=["k"])


# ------------------------------------------------------------------------------------------
# Veit et al.: lesions

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("rise, verdict", [(0.003, "supported"), (0.08, "contradicted"), (0.02, "inconclusive")])
def test_single_deletions_judged_in_absolute_terms(rise, verdict):
    # one projection unit opening stage 1, whose big damage must not count
    rates = [0.05 + rise] * 4 + [0.6] + [0.05 + rise] * 4
    t = _each({s: rates for s in SEEDS}, 0.05, projection={4}, n=8000)
    c = claim_single_deletions(t, n_boot=B)
    assert c["verdict"] == verdict, c
    assert c["estimate"] == pytest.approx(rise, abs=1e-9)
    assert c["ci"][0] <= c["estimate"] <= c["ci"][1]
    assert set(c["measured"]["median_increase_by_stage"]) == {0, 1}
    assert c["measured"]["largest_increase"] == pytest.approx(0.55, abs=1e-9)
    assert c["seeds"] == list(SEEDS) and c["paper"]["where"].endswith("Fig. 3(a)")


def test_single_deletions_report_each_stage_max_beside_its_median():
    """Fig. 3 as stated (any deletion): one stage-0 unit raising the error by 0.5 leaves the
    median near the baseline but is the stage's maximum."""
    rates = [0.05, 0.55, 0.05, 0.05] + [0.6] + [0.06] * 4
    t = _each({s: rates for s in SEEDS}, 0.05, projection={4})
    m = claim_single_deletions(t, n_boot=B)["measured"]
    assert m["median_increase_by_stage"][0] == pytest.approx(0.0, abs=0.02)  # flags drawn at these rates
    assert m["max_increase_by_stage"][0] == pytest.approx(0.5, abs=0.03)
    assert m["max_increase_by_stage"][1] == pytest.approx(0.01, abs=0.03)
    assert m["worst_unit_by_stage"][0] == "1"


def test_single_deletions_of_an_untrained_net_are_inconclusive():
    t = _each({s: [0.86] * 5 for s in SEEDS}, 0.85)
    c = claim_single_deletions(t, n_boot=B)
    assert c["verdict"] == "inconclusive" and "did not train" in c["why"]


def test_residual_against_plain_needs_both_nets_trained():
    res = _each({s: [0.06] * 6 for s in SEEDS}, 0.05)
    plain = _each({s: [0.85] * 6 for s in SEEDS}, 0.05, model="plain")
    c = claim_single_deletions_vs_plain(_merge(res, plain), n_boot=B)
    assert c["verdict"] == "supported" and c["estimate"] == pytest.approx(0.79, abs=1e-9)
    same = _each({s: [0.08] * 6 for s in SEEDS}, 0.05, model="plain")
    assert claim_single_deletions_vs_plain(_merge(res, same), n_boot=B)["verdict"] == "contradicted"
    # the demo's case: a barely trained plain net (baseline 0.48) cannot lose much
    weak = _each({s: [0.6] * 6 for s in SEEDS}, 0.48, model="plain")
    c = claim_single_deletions_vs_plain(_merge(res, weak), n_boot=B)
    assert c["verdict"] == "inconclusive" and "plain net did not train" in c["why"]


def _curve_trials(means_by_k, draws=8, spread=0.0, seeds=SEEDS):
    rng = np.random.default_rng(3)
    rows = [{"seed": s, "k": k, "variant": -1 if k == 0 else 1,
             "error": m + (spread * rng.standard_normal() if k else 0)}
            for s in seeds for k, m in means_by_k.items() for _ in range(1 if k == 0 else draws)]
    return Trials(pd.DataFrame(rows), draws=["k"])


def test_smooth_growth_straight_line_cliff_and_flat():
    ks = [0, 1, 2, 4, 8, 16]
    line = claim_smooth_growth(_curve_trials({k: 0.02 + 0.02 * k for k in ks}, spread=0.01), n_boot=B)
    # each seed's own curve (noisy draws: the steepest step is a little steeper than the line)
    assert line["verdict"] == "supported" and line["estimate"] == pytest.approx(1.0, abs=0.25)
    assert line["estimate"] == pytest.approx(np.mean(line["measured"]["per_seed"]))
    assert 1 <= line["ci"][0] <= line["estimate"] <= line["ci"][1] and line["range"] == [1, None]
    cliff = claim_smooth_growth(_curve_trials({k: 0.02 if k == 0 else 0.85 for k in ks}, spread=0.01),
                                      n_boot=B)
    assert cliff["verdict"] == "contradicted" and cliff["estimate"] > 10
    flat = claim_smooth_growth(_curve_trials({k: 0.02 for k in ks}), n_boot=B)
    assert flat["verdict"] == "inconclusive" and flat["estimate"] is None


def test_smooth_growth_with_noisy_draws_near_the_margin_is_inconclusive():
    ks = [0, 1, 2, 3, 4]
    # steepest slope three times the average, draws spread widely
    means = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.4}
    c = claim_smooth_growth(_curve_trials({k: m + 0.1 * k for k, m in means.items()}, spread=0.3, draws=3),
                                  n_boot=B)
    assert c["verdict"] == "inconclusive", c


def test_independent_prediction_multiplies_single_deletion_accuracies():
    each = pd.DataFrame({"seed": 0, "variant": [-1, 0, 1, 2], "units": ["", "0", "1", "2"],
                         "error": [0.1, 0.28, 0.1, 0.55]})
    rnd = pd.DataFrame({"seed": 0, "variant": [0, 1], "k": [2, 3], "units": ["0,2", "0,1,2"], "error": [0.7, 0.8]})
    got = independent_prediction(each, rnd).predicted_error.to_numpy()
    brute = [1 - 0.9 * (0.72 / 0.9) * (0.45 / 0.9), 1 - 0.9 * (0.72 / 0.9) * (0.9 / 0.9) * (0.45 / 0.9)]
    np.testing.assert_allclose(got, brute)


@pytest.mark.parametrize("proj_error, verdict", [(0.15, "supported"), (0.051, "contradicted")])
def test_projection_units_ranked_within_their_stage(proj_error, verdict):
    stage = [0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13]
    rates = stage + [proj_error] + stage + [proj_error] + stage
    t = _each({s: rates for s in SEEDS}, 0.05, projection={8, 17})
    c = claim_projection_units(t, n_boot=B)
    assert c["verdict"] == verdict, c
    assert c["measured"]["projection_units_ranked"] == 6
    if verdict == "supported":
        # every projection unit ranks first: exact p = 9**-6 = 2e-6, below Monte Carlo resolution
        assert c["estimate"] == 1.0 and c["measured"]["permutation_p"] == pytest.approx(1 / 20001)
    else:
        assert c["estimate"] == 0.0 and c["measured"]["permutation_p"] == 1.0


def test_projection_units_without_projection_are_inconclusive():
    c = claim_projection_units(_each({s: [0.1] * 5 for s in SEEDS}, 0.05), n_boot=B)
    assert c["verdict"] == "inconclusive" and "no projection unit" in c["why"]


def test_unit_stages_follow_unit_order_not_row_order():
    f = pd.DataFrame({"variant": [2, -1, 0, 1], "units": ["2", "", "0", "1"],
                      "projection": [False, False, False, True]})
    assert unit_stages(f).tolist() == [1, -1, 0, 1]


# ------------------------------------------------------------------------------------------
# Veit et al.: paths


def _paths(n, weight, seeds=SEEDS, examples=64, noise=0.05):
    """Per-example squared norms of each length's part: ``weight(k)`` times a positive per-example
    factor (so every example decays alike)."""
    rng = np.random.default_rng(4)
    rows, items = [], []
    for s in seeds:
        factor = np.exp(noise * rng.standard_normal(examples))
        for k in range(n + 1):
            sq = weight(k) * factor
            rows.append({"seed": s, "units": n, "length": k, "count": float(comb(n, k)), "sq_norm": sq.mean()})
            items.append(sq)
    return Trials(pd.DataFrame(rows), np.array(items), value="sq_norm")


def test_exponential_decay_supported_contradicted_and_not_exponential():
    n = 12
    decays = claim_exponential_decay(_paths(n, lambda k: (comb(n, k) * 0.5 ** k) ** 2), n_boot=B)
    assert decays["verdict"] == "supported"
    assert decays["estimate"] == pytest.approx(math.log(0.5), abs=1e-6)
    grows = claim_exponential_decay(_paths(n, lambda k: (comb(n, k) * 1.5 ** k) ** 2), n_boot=B)
    assert grows["verdict"] == "contradicted"
    zigzag = claim_exponential_decay(_paths(n, lambda k: (comb(n, k) * (4.0 if k % 2 else 0.25)) ** 2),
                                           n_boot=B)
    assert zigzag["verdict"] == "inconclusive" and "variance" in zigzag["why"]


def _by_seed(n, weights):
    """Path trials whose seed s has the weights ``weights[s]`` (seeds that differ)."""
    parts = [_paths(n, w, seeds=(s,)) for s, w in enumerate(weights)]
    return Trials(pd.concat([p.frame for p in parts], ignore_index=True), np.concatenate([p.items for p in parts]),
                  value="sq_norm")


def test_mean_length_and_effective_fraction_of_a_shallow_gradient():
    n = 54  # the fraction of all paths is compared with Veit's only at his n
    shallow = _paths(n, lambda k: 1.0 if 1 <= k <= 3 else 0.0)
    c = claim_mean_length_below(shallow, n, n_boot=B)
    # every seed and every resample gives exactly the same: no variation measured decides nothing
    assert c["verdict"] == "inconclusive" and "no variation" in c["why"] and c["estimate"] == pytest.approx(2 / 27)
    assert c["measured"]["windows"][0] == [1, 3] and c["measured"]["widths"][0] == 3
    assert c["measured"]["mean_length_over_n"] == pytest.approx(2 / 54)
    assert c["measured"]["veit_window"] == [5, 17] and c["measured"]["veit_units"] == 54
    f = claim_effective_fraction(shallow, n, n_boot=B)
    assert f["estimate"] == pytest.approx(sum(comb(n, k) for k in (1, 2, 3)) / 2 ** n)
    varied = _by_seed(n, [lambda k: 1.0 if 1 <= k <= 3 else 0.0, lambda k: 1.0 if 1 <= k <= 4 else 0.0,
                          lambda k: 1.0 if 2 <= k <= 3 else 0.0])
    c = claim_mean_length_below(varied, n, n_boot=B)
    assert c["verdict"] == "supported" and 0 <= c["ci"][0] <= c["estimate"] <= c["ci"][1] <= 2
    f = claim_effective_fraction(varied, n, n_boot=B, margin=0.05)
    assert f["verdict"] == "supported" and 0 <= f["ci"][0] <= f["estimate"] <= f["ci"][1] <= 1
    # the default margin, 0.01 (about twice Veit's 0.45%): at n = 54 these windows hold ~1e-11 of all paths
    assert claim_effective_fraction(varied, n, n_boot=B)["verdict"] == "supported"
    assert f["paper"]["value"] == 0.0045
    # every path alike: the gradient sits where the paths are
    typical = _by_seed(n, [lambda k, a=a: comb(n, k) ** 2 * (1 + a * k) for a in (0.0, 0.01, 0.02)])
    assert claim_mean_length_below(typical, n, n_boot=B)["verdict"] == "contradicted"
    # every seed's window is the same set of lengths: far above the margin, but nothing varies
    f = claim_effective_fraction(typical, n, n_boot=B)
    assert f["estimate"] > 0.9 and f["verdict"] == "inconclusive" and "no variation" in f["why"]


def test_effective_fraction_is_not_compared_at_another_depth():
    n = 20
    f = claim_effective_fraction(_paths(n, lambda k: 1.0 if 1 <= k <= 3 else 0.0), n, n_boot=B)
    assert f["verdict"] == "inconclusive" and "only at n = 54" in f["why"]
    assert f["measured"]["windows"] == [[1, 3]] * len(SEEDS)


def test_claims_quoting_veit_take_the_magnitude_and_the_net_finding_the_net_quantity():
    """Rows with Veit's magnitude and the net quantity that disagree: each claim reads its own."""
    n = 54
    rows = []
    for s in SEEDS:
        for k in range(n + 1):
            rows.append({"seed": s, "units": n, "length": k, "count": float(comb(n, k)),
                         # deep: no cancellation (the seeds differ a little, so the interval has a width)
                         "magnitude": (1.0 + 0.01 * s * (k - 25)) if 20 <= k <= 30 else 0.0,
                         "sq_norm": 1.0 if k == 2 else (0.01 * (s + 1) if k == 3 else 0.0)})  # the net: short
    frame = pd.DataFrame(rows)
    veit = claim_mean_length_below(Trials(frame.drop(columns="sq_norm"), value="magnitude"), n, n_boot=B)
    assert veit["measured"]["quantity"] == "magnitude" and veit["measured"]["windows"][0] == [20, 29]
    assert veit["verdict"] == "contradicted" and veit["estimate"] == pytest.approx(25 / 27, rel=0.02)
    net = finding_net_mean_length(Trials(frame.drop(columns="magnitude"), value="sq_norm"), n, n_boot=B)
    assert net["id"] == "net-mean-length" and net["paper"] is None
    assert net["measured"]["quantity"] == "sq_norm" and net["verdict"] == "supported"
    assert net["estimate"] == pytest.approx(2 / 27, rel=0.1)  # length 2, and a little of length 3


def test_effective_windows_are_comparable_across_depth():
    rows = [{"seed": 0, "units": n, "length": k, "count": float(comb(n, k)), "magnitude": 1.0 if k <= n // 3 else 0.0}
            for n in (9, 27) for k in range(n + 1)]
    w = effective_windows(pd.DataFrame(rows), mass=1.0)
    assert [(x["units"], x["low"], x["high"], x["width"]) for x in w] == [(9, 0, 3, 4), (27, 0, 9, 10)]
    assert [x["mean_length_over_n"] for x in w] == pytest.approx([1.5 / 9, 4.5 / 27])


def test_effective_fraction_interval_stays_positive_when_seeds_disagree():
    n = 20
    one = _paths(n, lambda k: 1.0 if 1 <= k <= 2 else 0.0, seeds=(0,))
    two = _paths(n, lambda k: 1.0 if 2 <= k <= 5 else 0.0, seeds=(1,))
    both = Trials(pd.concat([one.frame, two.frame], ignore_index=True), np.concatenate([one.items, two.items]),
                  value="sq_norm")
    f = claim_effective_fraction(both, n, n_boot=B)
    assert 0 < f["ci"][0] < f["estimate"] < f["ci"][1]


def test_window_stays_or_grows_with_depth():
    def sweep(weight):
        parts = [_paths(n, lambda k, n=n: weight(n, k)) for n in (9, 27, 54)]
        return Trials(pd.concat([p.frame for p in parts], ignore_index=True),
                      np.concatenate([p.items for p in parts]), value="sq_norm")

    stays = claim_window_stays(sweep(lambda n, k: 1.0 if 2 <= k <= 4 else 0.0), n_boot=B)
    assert stays["verdict"] == "supported" and stays["estimate"] == pytest.approx(0.0, abs=1e-9)
    grows = claim_window_stays(sweep(lambda n, k: comb(n, k) ** 2), n_boot=B)
    assert grows["verdict"] == "contradicted" and grows["estimate"] == pytest.approx(1.0, abs=0.01)


# ------------------------------------------------------------------------------------------
# The framework under the Veit claims


def test_one_seed_is_inconclusive_even_with_examples_to_resample():
    t = _each({0: [0.051] * 6}, 0.05)
    c = claim_single_deletions(t, n_boot=B)
    assert c["verdict"] == "inconclusive" and "one training seed" in c["why"] and c["ci"][1] < 0.02


def test_clusters_resample_whole_curves():
    f = pd.DataFrame({"seed": 0, "unit": 1, "draw": [0, 0, 1, 1], "epoch": [0, 1, 0, 1], "error": [0.9, 0.1, 0.5, 0.5]})
    t = Trials(f, draws=["unit"], cluster="draw")
    seen = set()
    for b in range(5):
        bootstrap(lambda g: seen.add(tuple(g.error)) or 0.0, t, n_boot=20, seed=b)
    # a resampled curve is a whole draw: error pairs (0.9, 0.1) and (0.5, 0.5) are never split
    assert all(len(v) % 2 == 0 and all(v[i:i + 2] in ((0.9, 0.1), (0.5, 0.5)) for i in range(0, len(v), 2))
               for v in seen)
    with pytest.raises(ValueError, match="cluster needs draws"):
        Trials(f, cluster="draw")
