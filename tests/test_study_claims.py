"""The claims framework (unravel.study.claims): judge and the papers registry, on synthetic trials."""

import pandas as pd
import pytest

from unravel.errors import ArgumentError
from unravel.study import PAPERS, judge, per_seed, register_paper
from unravel.study.stats import Trials

B = 200
SEEDS = (0, 1, 2)


def _moved(trials, requires=()):
    """The mean path length grows over training: the last record's minus the first's."""
    def moved(g):
        by = g.groupby("epoch").mean_length.mean().sort_index()
        return float(by.iloc[-1] - by.iloc[0])

    return judge("moves", "The mean length grows", "here", per_seed(moved), trials, margin=0.0, direction="above",
                 effect="last minus first", extra=requires, n_boot=B)


def _alike(trials):
    def gap(g):
        r = {m: float((x.mean_length / x.units).mean()) for m, x in g.groupby("model")}
        return r["se_resnet"] - r["resnet"]

    return judge("alike", "Alike", "here", per_seed(gap), trials, margin=0.05, direction="within", effect="gap",
                 n_boot=B)


def test_seed_disagreement_is_inconclusive():
    f = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2, 3, 3], "epoch": [0, 1] * 4,
                      "mean_length": [2.0, 3.0, 3.0, 2.0, 2.0, 3.1, 3.0, 1.9]})
    c = _moved(Trials(f))
    assert c["verdict"] == "inconclusive" and c["ci"][0] < 0 < c["ci"][1]
    assert _moved(Trials(f.assign(mean_length=[2.0, 3.0, 2.0, 3.1, 2.0, 2.9, 2.1, 3.0])))["verdict"] == "supported"
    # seeds that agree exactly: a zero-width interval decides nothing
    same = _moved(Trials(f.assign(mean_length=[2.0, 3.0] * 4)))
    assert same["verdict"] == "inconclusive" and "no variation" in same["why"]


def test_extra_preconditions_make_a_claim_inconclusive():
    f = pd.DataFrame({"seed": [0, 1, 2, 3], "epoch": 0, "mean_length": 1.0}).pipe(
        lambda d: pd.concat([d, d.assign(epoch=1, mean_length=[3.0, 3.1, 2.9, 3.0])]))
    assert _moved(Trials(f))["verdict"] == "supported"
    c = _moved(Trials(f), requires=[(False, "too small to tell")])
    assert c["verdict"] == "inconclusive" and c["why"] == "too small to tell" and c["estimate"] == 2.0


def test_within_is_an_equivalence_test_on_the_signed_difference():
    # differences +0.06, -0.06, +0.06 per seed: the mean is 0.02, well inside the margin, but the
    # seeds disagree; the absolute difference would have said "contradicted"
    rows = [{"seed": s, "model": m, "mean_length": v, "units": 10} for s, d in zip(SEEDS, (0.6, -0.6, 0.6))
            for m, v in (("resnet", 5.0), ("se_resnet", 5.0 + d))]
    c = _alike(Trials(pd.DataFrame(rows)))
    assert c["estimate"] == pytest.approx(0.02) and c["verdict"] == "inconclusive"
    far = [{**r, "mean_length": r["mean_length"] + (3.0 if r["model"] == "se_resnet" else 0)} for r in rows]
    assert _alike(Trials(pd.DataFrame(far)))["verdict"] == "contradicted"


def test_one_seed_without_anything_to_resample_is_inconclusive():
    f = pd.DataFrame({"seed": 0, "model": ["resnet", "se_resnet"], "mean_length": [5.0, 2.0], "units": 10})
    c = _alike(Trials(f))
    assert c["verdict"] == "inconclusive" and "one training seed" in c["why"]


def test_papers_register_once_and_show_beside_the_claim():
    register_paper("test-paper-claim", where="Fig. 9", note="ours")
    register_paper("test-paper-claim", where="Fig. 9", note="ours")  # the same entry again: nothing
    with pytest.raises(ArgumentError, match="has a paper entry already"):
        register_paper("test-paper-claim", where="Fig. 10", note="another")
    f = pd.DataFrame({"seed": [0, 1], "epoch": 0, "mean_length": 1.0})
    c = judge("test-paper-claim", "s", "here", per_seed(lambda g: 1.0), Trials(f), margin=0.0, direction="above",
              effect="e", n_boot=B)
    assert c["paper"] == {"where": "Fig. 9", "value": None, "note": "ours"} == dict(PAPERS["test-paper-claim"])
