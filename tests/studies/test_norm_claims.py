"""The norm-preservation claims on synthetic per-unit spectra with known effects: each must come
out supported, contradicted and inconclusive where the data say so, and never pool identity
with transition units."""

import numpy as np
import pandas as pd
import pytest

from unravel.study.stats import Trials
from unravel.studies.norm_preservation import claims

B = 100  # bootstrap resamples: enough for these clear-cut cases, fast
SEEDS = (0, 1, 2)


def _units(levels, seeds=SEEDS, n_units=6, examples=4, seed_sd=0.0, rng=0):
    """Per-unit trials: ``levels`` maps (model, depth, transition) to the units' dev level; each
    seed moves a level by N(0, seed_sd); units scatter by +-0.005, examples by N(0, 0.002)."""
    rng = np.random.default_rng(rng)
    rows, items = [], []
    for seed in seeds:
        unit = {}
        for (model, depth, transition), level in levels.items():
            shift = rng.normal(0, seed_sd) if seed_sd else 0.0
            for _ in range(2 if transition else n_units):
                u = unit.setdefault((model, depth), 0)
                unit[(model, depth)] += 1
                value = max(level + shift + rng.uniform(-0.005, 0.005), 0.0)
                ex = np.maximum(value + rng.normal(0, 0.002, examples), 0.0)
                rows.append({"seed": seed, "model": model, "depth": depth, "unit": u, "transition": transition})
                items.append(ex)
    items = np.array(items)
    return Trials(pd.DataFrame(rows).assign(dev=items.mean(1)), items, value="dev")


def _verdict(claim, trials, **kw):
    return claim(trials, n_boot=B, **kw)["verdict"]


def test_identity_near_one_three_ways():
    near = {("residual", 110, False): 0.03}
    assert _verdict(claims.claim_identity_near_one, _units(near)) == "supported"
    assert _verdict(claims.claim_identity_near_one, _units({("residual", 110, False): 0.3})) == "contradicted"
    noisy = _units({("residual", 110, False): 0.1}, seed_sd=0.05)
    assert _verdict(claims.claim_identity_near_one, noisy) == "inconclusive"
    one = claims.claim_identity_near_one(_units(near, seeds=(0,)), n_boot=B)
    assert one["verdict"] == "inconclusive" and "one training seed" in one["why"]


def test_identity_claims_never_pool_transition_units():
    base = {("residual", 20, False): 0.05, ("residual", 110, False): 0.05}
    with_transitions = {**base, ("residual", 20, True): 3.0, ("residual", 110, True): 3.0}
    a = claims.claim_identity_near_one(_units(base), n_boot=B)
    b = claims.claim_identity_near_one(_units(with_transitions), n_boot=B)
    assert a["verdict"] == b["verdict"] == "supported"
    # the same identity units, whatever transitions sit beside them: the same estimate
    assert b["estimate"] == pytest.approx(a["estimate"], abs=0.01)
    # a pooled mean would fall with depth (2 transitions among 8 units at depth 20, among 56 at
    # 110); identity units that do not change with depth must not make "deeper concentrates" true
    many = {("residual", 20, False): 0.1, ("residual", 20, True): 3.0}
    t = _units(many, n_units=6)
    deep = _units({("residual", 110, False): 0.1, ("residual", 110, True): 3.0}, n_units=54, rng=1)
    pooled = Trials(pd.concat([t.frame, deep.frame], ignore_index=True), np.concatenate([t.items, deep.items]),
                    value="dev")
    means = pooled.frame.groupby("depth").dev.mean()
    assert means[20] > 2 * means[110]  # what the old, pooled measure would have seen
    c = claims.claim_deeper_concentrates(pooled, n_boot=B)
    assert c["verdict"] != "supported" and abs(c["estimate"]) < 0.01


@pytest.mark.parametrize("shallow, deep, verdict", [(0.2, 0.05, "supported"), (0.05, 0.2, "contradicted")])
def test_deeper_concentrates(shallow, deep, verdict):
    t = _units({("residual", 20, False): shallow, ("residual", 56, False): 0.1, ("residual", 110, False): deep})
    c = claims.claim_deeper_concentrates(t, n_boot=B)
    assert c["verdict"] == verdict
    assert c["estimate"] == pytest.approx(shallow - deep, abs=0.01)
    assert list(c["measured"]["median_by_depth"]) == [20, 56, 110]


def test_deeper_concentrates_needs_two_depths_and_a_clear_gap():
    assert _verdict(claims.claim_deeper_concentrates, _units({("residual", 20, False): 0.1})) == "inconclusive"
    same = _units({("residual", 20, False): 0.1, ("residual", 110, False): 0.1}, seed_sd=0.03)
    assert _verdict(claims.claim_deeper_concentrates, same) == "inconclusive"


def test_transition_farther_takes_the_worst_depth():
    levels = {("residual", 20, False): 0.15, ("residual", 20, True): 0.5,
              ("residual", 110, False): 0.05, ("residual", 110, True): 0.45}
    c = claims.claim_transition_farther(_units(levels), n_boot=B)
    assert c["verdict"] == "supported" and c["estimate"] == pytest.approx(0.35, abs=0.01)
    # one depth where transitions are the closer ones decides it
    flipped = {**levels, ("residual", 110, True): 0.01}
    assert _verdict(claims.claim_transition_farther, _units(flipped)) == "contradicted"
    even = {("residual", 20, False): 0.2, ("residual", 20, True): 0.2}
    assert _verdict(claims.claim_transition_farther, _units(even, seed_sd=0.05)) == "inconclusive"


def test_plain_farther():
    levels = {("residual", 20, False): 0.1, ("plain", 20, False): 9.2, ("residual", 56, False): 0.05,
              ("plain", 56, False): 8.0}
    assert _verdict(claims.claim_plain_farther, _units(levels)) == "supported"
    closer = {**levels, ("plain", 56, False): 0.01}
    assert _verdict(claims.claim_plain_farther, _units(closer)) == "contradicted"
    alone = claims.claim_plain_farther(_units({("residual", 20, False): 0.1}), n_boot=B)
    assert alone["verdict"] == "inconclusive" and "no depth has both" in alone["why"]


def test_procrustes_transition_claims():
    levels = {("residual", 110, False): 0.05, ("residual", 110, True): 0.45, ("procrustes", 110, False): 0.05,
              ("procrustes", 110, True): 0.0}
    t = _units(levels)
    assert _verdict(claims.claim_procrustes_transitions, t) == "supported"
    assert _verdict(claims.claim_procrustes_near_one, t) == "supported"
    worse = _units({**levels, ("procrustes", 110, True): 0.8})
    assert _verdict(claims.claim_procrustes_transitions, worse) == "contradicted"
    assert _verdict(claims.claim_procrustes_near_one, worse) == "contradicted"
    none = claims.claim_procrustes_near_one(_units({("residual", 110, True): 0.4}), n_boot=B)
    assert none["verdict"] == "inconclusive" and "no Procrustes net" in none["why"]


def _errors(rates, n=2000, seeds=SEEDS):
    """Test-error trials: rates maps (model, depth) to a list of per-seed error rates, backed by
    per-example wrong flags."""
    rng = np.random.default_rng(0)
    rows, items = [], []
    for i, seed in enumerate(seeds):
        for (model, depth), by_seed in rates.items():
            w = np.zeros(n, bool)
            w[: int(round(by_seed[i] * n))] = True
            rng.shuffle(w)
            rows.append({"seed": seed, "model": model, "depth": depth})
            items.append(w)
    items = np.array(items)
    return Trials(pd.DataFrame(rows).assign(error=items.mean(1)), items)


@pytest.mark.parametrize("procrustes, verdict", [
    ([0.09, 0.10, 0.095], "supported"),     # better: within the 2-point margin of not worse
    ([0.20, 0.21, 0.22], "contradicted"),   # ten points worse
    ([0.11, 0.16, 0.12], "inconclusive"),   # about the margin, and the seeds disagree
])
def test_procrustes_not_worse_is_a_non_inferiority_test(procrustes, verdict):
    t = _errors({("residual", 110): [0.10, 0.105, 0.10], ("procrustes", 110): procrustes}, n=8000)
    c = claims.claim_procrustes_not_worse(t, n_boot=B)
    assert c["verdict"] == verdict and c["margin"] == 0.02 and c["direction"] == "below"
    assert c["estimate"] == pytest.approx(np.mean(procrustes) - np.mean([0.10, 0.105, 0.10]), abs=1e-3)


def test_procrustes_not_worse_needs_a_trained_resnet():
    t = _errors({("residual", 110): [0.85, 0.86, 0.88], ("procrustes", 110): [0.5, 0.5, 0.5]})
    c = claims.claim_procrustes_not_worse(t, n_boot=B)
    assert c["verdict"] == "inconclusive" and "did not train" in c["why"]


def test_every_claim_names_its_paper_and_its_rule():
    levels = {("residual", 20, False): 0.1, ("residual", 20, True): 0.5, ("plain", 20, False): 9.0,
              ("residual", 56, False): 0.05, ("residual", 56, True): 0.5, ("procrustes", 56, True): 0.0}
    t = _units(levels)
    got = [f(t, n_boot=B) for f in (claims.claim_identity_near_one, claims.claim_deeper_concentrates,
                                    claims.claim_transition_farther, claims.claim_plain_farther,
                                    claims.claim_procrustes_transitions, claims.claim_procrustes_near_one)]
    got.append(claims.claim_procrustes_not_worse(_errors({("residual", 56): [0.1] * 3,
                                                         ("procrustes", 56): [0.1] * 3}), n_boot=B))
    for c in got:
        assert c["paper"] and "TPAMI" in c["paper"]["where"] and c["rule"].startswith("supported if")
        assert c["seeds"] == list(SEEDS) and "|" not in c["effect"]
    assert len({c["id"] for c in got}) == 7
