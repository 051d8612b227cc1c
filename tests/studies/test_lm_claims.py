"""The lm-ensemble claims on synthetic trials with known effects: each must come out supported,
contradicted and inconclusive where the data say so."""

import numpy as np
import pandas as pd
import pytest

from unravel.studies.lm_ensemble.claims import retained_accuracy
from unravel.study.stats import Trials
from unravel.studies.lm_ensemble import claims

B = 100  # bootstrap resamples


def _flags(rng, rate, n):
    w = np.zeros(n, bool)
    w[: int(round(rate * n))] = True
    rng.shuffle(w)
    return w


def _layers(errors, base=0.4, seeds=(0, 1, 2), n=2000, jitter=0.005):
    """Per seed a baseline row and one row per layer (or adjacent pair) with these error rates,
    backed by per-token flags; each seed's rates shifted by a small amount."""
    rng = np.random.default_rng(0)
    rows, items = [], []
    for s in seeds:
        shift = jitter * (s - 1)
        for v, e in [(-1, base)] + list(enumerate(errors)):
            rows.append({"seed": s, "variant": v, "layer": v})
            items.append(_flags(rng, e + shift, n))
    items = np.array(items)
    return Trials(pd.DataFrame(rows).assign(error=items.mean(1)), items)


def test_retained_accuracy_is_accuracy_over_the_baseline():
    t = _layers([0.7, 0.52], seeds=(0,), jitter=0)
    assert np.allclose(retained_accuracy(t.frame), [0.3 / 0.6, 0.48 / 0.6])


@pytest.mark.parametrize("first, verdict", [(0.9, "supported"), (0.45, "contradicted"), (0.7, "inconclusive")])
def test_first_layer(first, verdict):
    c = claims.claim_first_layer(_layers([first, 0.42, 0.43, 0.5]), n_boot=B)
    assert c["verdict"] == verdict, c
    assert c["margin"] == 0.5 and c["direction"] == "below" and c["paper"]["where"].startswith("Lad")
    assert set(c["measured"]["retained_by_layer"]) == {0, 1, 2, 3}


def test_first_layer_needs_two_seeds_and_its_preconditions():
    c = claims.claim_first_layer(_layers([0.9, 0.42], seeds=(0,)), n_boot=B)
    assert c["verdict"] == "inconclusive" and "one training seed" in c["why"]
    c = claims.claim_first_layer(_layers([0.9, 0.42]), n_boot=B, requires=[(False, "did not train")])
    assert c["verdict"] == "inconclusive" and c["why"] == "did not train"


@pytest.mark.parametrize("middle, verdict", [(0.42, "supported"), (0.8, "contradicted"), (0.568, "inconclusive")])
def test_middle_layers(middle, verdict):
    # layer 0 and the last layer are catastrophic and must not count
    c = claims.claim_middle_layers(_layers([0.95, middle, middle + 0.01, middle - 0.01, 0.95]), 5, n_boot=B)
    assert c["verdict"] == verdict, c
    assert c["measured"]["middle_layers"] == [1, 2, 3]


def test_middle_layers_need_a_middle():
    c = claims.claim_middle_layers(_layers([0.9, 0.9]), 2, n_boot=B)
    assert c["verdict"] == "inconclusive" and "no middle layer" in c["why"]


@pytest.mark.parametrize("swap, verdict", [(0.41, "supported"), (0.9, "contradicted"), (0.568, "inconclusive")])
def test_middle_swaps(swap, verdict):
    # 6 layers: pairs 0-1 .. 4-5; the middle ones are 1-2, 2-3, 3-4 (the first and last pairs move
    # the first or the last layer and must not count)
    c = claims.claim_middle_swaps(_layers([0.95, swap, swap, swap, 0.95]), 6, n_boot=B)
    assert c["verdict"] == verdict, c
    assert c["measured"]["swapped_pairs"] == [[1, 2], [2, 3], [3, 4]]
    c = claims.claim_middle_swaps(_layers([0.5, 0.5]), 3, n_boot=B)
    assert c["verdict"] == "inconclusive" and "no two adjacent middle layers" in c["why"]


@pytest.mark.parametrize("shallow, deep, verdict", [(0.6, 0.42, "supported"), (0.42, 0.6, "contradicted"),
                                                    (0.5, 0.5, "inconclusive")])
def test_deeper_prunable(shallow, deep, verdict):
    # layers 1, 2 are the shallower middle half of 6, layers 3, 4 the deeper; 0 and 5 do not count
    c = claims.claim_deeper_prunable(_layers([0.99, shallow, shallow, deep, deep, 0.2]), 6, n_boot=B)
    assert c["verdict"] == verdict, c
    assert (c["measured"]["shallower"], c["measured"]["deeper"]) == ([1, 2], [3, 4])
    assert c["paper"]["where"].startswith("Gromov")


def test_claims_check_their_columns():
    with pytest.raises(ValueError, match="needs columns"):
        claims.claim_first_layer(Trials(pd.DataFrame({"seed": [0], "error": [0.1]})))
