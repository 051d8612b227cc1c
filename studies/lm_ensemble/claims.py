"""Claims about language models' layers: the verdicts of the ``lm-ensemble`` study, as plain
functions of measured trials (see :mod:`unravel.study.claims` for the conventions).

Every claim here is about **retained accuracy**: the next-token accuracy of the lesioned model over
the unlesioned model's (1: nothing lost), the measure Lad et al. report. Trials hold one model's
rows per seed: a baseline row (``variant == -1``) and one row per lesion with a ``layer`` column
(the deleted layer, or the first layer of a swapped adjacent pair) and an ``error`` column (the
share of test tokens predicted wrongly), with per-item outcomes where the study kept them. The
margins are stated choices, written down before the data were seen; nothing here checks that a
model is large or trained long enough to stand for the papers' models.
"""

from __future__ import annotations

import math

import numpy as np

from unravel.study.claims import check_columns, judge
from unravel.study.stats import Trials, per_seed

__all__ = ["claim_first_layer", "claim_middle_layers", "claim_middle_swaps", "claim_deeper_prunable",
           "retained_accuracy", "LAD", "GROMOV", "PAPERS"]

LAD = "Lad, Gurnee & Tegmark 2024, \"The Remarkable Robustness of LLMs: Stages of Inference?\" (arXiv:2406.19384)"
GROMOV = "Gromov et al. 2024, \"The Unreasonable Ineffectiveness of the Deeper Layers\" (arXiv:2403.17887)"

#: Claim id -> what the papers report (see :func:`unravel.study.register_paper`).
PAPERS = {
    "first-layer": {"where": f"{LAD}, Sec. 3", "value": None,
                    "note": "GPT-2 and Pythia models: deleting the first layer is catastrophic, unlike deleting a "
                            "middle layer"},
    "middle-layers": {"where": f"{LAD}, abstract", "value": None,
                      "note": "deleting or swapping single layers retains 72-95% of the original models' prediction "
                              "accuracy without fine-tuning (GPT-2, Pythia, Phi; 6 to 48 layers)"},
    "middle-swaps": {"where": f"{LAD}, abstract", "value": None,
                     "note": "swapping adjacent middle layers is tolerated: it retains 72-95% of the prediction "
                             "accuracy, as deletion does"},
    "deeper-prunable": {"where": f"{GROMOV}, Sec. 4", "value": None,
                        "note": "open-weight LLMs (Llama-2, Qwen, Mistral, Phi): the deeper layers can be removed "
                                "(up to about half of them) with little loss, the shallower ones cannot"},
    "lm-smooth-growth": {"where": "Veit, Wilber & Belongie, NeurIPS 2016, Sec. 4.2, Fig. 5(a)", "value": None,
                         "note": "ResNet-110 on CIFAR-10: the error grows smoothly as more blocks are deleted "
                                 "(tested here on a transformer's units)"},
}


def retained_accuracy(frame, layers=None) -> np.ndarray:
    """Per lesion row of one seed (optionally only rows whose ``layer`` is in ``layers``): its
    accuracy over the baseline row's, in row order.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.lm_ensemble.claims import retained_accuracy
    >>> f = pd.DataFrame({"variant": [-1, 0, 1], "layer": [-1, 0, 1], "error": [0.5, 0.75, 0.6]})
    >>> retained_accuracy(f).round(3).tolist(), retained_accuracy(f, [1]).round(3).tolist()
    ([0.5, 0.8], [0.8])
    """
    v, e = frame.variant.to_numpy(), frame.error.to_numpy(float)
    base = 1.0 - float(e[v == -1].mean())
    keep = v >= 0
    if layers is not None:
        keep &= np.isin(frame.layer.to_numpy(), list(layers))
    acc = 1.0 - e[keep]
    return acc / base if base > 0 else np.full(acc.shape, math.nan)


def _per_layer(f):
    """Mean retained accuracy per layer, over seeds (for ``measured``)."""
    vals = {}
    for _, g in f.groupby("seed"):
        for layer, r in zip(g.layer[g.variant >= 0], retained_accuracy(g)):
            vals.setdefault(int(layer), []).append(float(r))
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(vals.items())}


def _middle(n_layers):
    return list(range(1, n_layers - 1))


def claim_first_layer(layers: Trials, *, margin: float = 0.5, n_boot: int = 1000, requires=()) -> dict:
    """Deleting the first layer is catastrophic (Lad et al. 2024).

    Effect: the accuracy retained after deleting layer 0 (attention and MLP together), averaged
    over seeds; the claim holds below ``margin`` (0.5: the model loses at least half its
    accuracy).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.lm_ensemble.claims import claim_first_layer
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"variant": [-1, 0, 1, 2], "layer": [-1, 0, 1, 2], "error": [0.4, 0.9, 0.45, 0.5]})
    >>> c = claim_first_layer(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1, error=f.error + 0.01)])),
    ...                       n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.16, 'supported')
    """
    f = layers.frame
    check_columns(f, ["seed", "variant", "layer", "error"], "claim_first_layer")

    def stat(g):
        r = retained_accuracy(g, [0])
        return float(r.mean()) if r.size else math.nan

    return judge("first-layer", "Deleting the first layer is catastrophic", LAD, per_seed(stat), layers,
                  margin=margin, direction="below", effect="the accuracy retained after deleting layer 0",
                  measured={"retained_by_layer": _per_layer(f)}, extra=requires, n_boot=n_boot, range=[0, None])


def claim_middle_layers(layers: Trials, n_layers: int, *, margin: float = 0.72, n_boot: int = 1000,
                        requires=()) -> dict:
    """Deleting a single middle layer costs little (Lad et al. 2024).

    Effect: the median, over the middle layers (all but the first and the last), of the accuracy
    retained after deleting that one layer, averaged over seeds; the claim holds above ``margin``
    (0.72: the low end of Lad et al.'s 72-95% retained). Inconclusive with fewer than three layers.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.lm_ensemble.claims import claim_middle_layers
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"variant": range(-1, 4), "layer": range(-1, 4), "error": [0.4, 0.9, 0.42, 0.45, 0.7]})
    >>> c = claim_middle_layers(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1)])), 4, n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.942, 'inconclusive')
    """
    f = layers.frame
    check_columns(f, ["seed", "variant", "layer", "error"], "claim_middle_layers")
    middle = _middle(n_layers)

    def stat(g):
        r = retained_accuracy(g, middle)
        return float(np.median(r)) if r.size else math.nan

    return judge("middle-layers", "Deleting a single middle layer costs little", LAD, per_seed(stat), layers,
                  margin=margin, direction="above",
                  effect="the median accuracy retained after deleting one middle layer",
                  measured={"middle_layers": middle, "retained_by_layer": _per_layer(f)},
                  extra=[*requires, (n_layers >= 3, f"{n_layers} layers have no middle layer")], n_boot=n_boot,
                  range=[0, None], scale={"layers": n_layers})


def claim_middle_swaps(swaps: Trials, n_layers: int, *, margin: float = 0.72, n_boot: int = 1000,
                       requires=()) -> dict:
    """Swapping two adjacent middle layers is tolerated (Lad et al. 2024).

    Effect: the median, over the swaps of adjacent layers ``(l, l + 1)`` that leave the first and
    the last layer in place, of the accuracy retained, averaged over seeds; the claim holds above
    ``margin`` (0.72, the low end of Lad et al.'s 72-95%). Rows' ``layer`` is ``l``. Inconclusive with fewer than four layers.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.lm_ensemble.claims import claim_middle_swaps
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"variant": range(-1, 4), "layer": range(-1, 4), "error": [0.4, 0.8, 0.41, 0.42, 0.6]})
    >>> c = claim_middle_swaps(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1)])), 5, n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.975, 'inconclusive')
    """
    f = swaps.frame
    check_columns(f, ["seed", "variant", "layer", "error"], "claim_middle_swaps")
    pairs = list(range(1, n_layers - 2))

    def stat(g):
        r = retained_accuracy(g, pairs)
        return float(np.median(r)) if r.size else math.nan

    return judge("middle-swaps", "Swapping two adjacent middle layers is tolerated", LAD, per_seed(stat), swaps,
                  margin=margin, direction="above",
                  effect="the median accuracy retained after swapping two adjacent middle layers",
                  measured={"swapped_pairs": [[p, p + 1] for p in pairs],
                            "retained_by_first_layer_of_pair": _per_layer(f)},
                  extra=[*requires, (n_layers >= 4, f"{n_layers} layers have no two adjacent middle layers")],
                  n_boot=n_boot, range=[0, None], scale={"layers": n_layers})


def _halves(n_layers):
    """The shallower and the deeper half of the middle layers (first and last left out)."""
    middle = _middle(n_layers)
    cut = n_layers // 2
    return [m for m in middle if m < cut], [m for m in middle if m >= cut]


def claim_deeper_prunable(layers: Trials, n_layers: int, *, margin: float = 0.0, n_boot: int = 1000,
                          requires=()) -> dict:
    """The deeper half of the layers is more prunable than the shallower half (Gromov et al. 2024).

    Effect: the mean accuracy retained after deleting one layer of the deeper half minus that of
    the shallower half (layers ``< n_layers // 2``), the first and the last layer left out (the
    first is :func:`claim_first_layer`'s; Gromov et al. keep the last), averaged over seeds; the
    claim holds above ``margin`` (0). Inconclusive with fewer than four layers.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.lm_ensemble.claims import claim_deeper_prunable
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"variant": range(-1, 6), "layer": range(-1, 6),
    ...                   "error": [0.4, 0.9, 0.6, 0.55, 0.42, 0.41, 0.7]})
    >>> c = claim_deeper_prunable(Trials(pd.concat([f.assign(seed=0), f.assign(seed=1)])), 6, n_boot=50)
    >>> round(c["estimate"], 3), c["verdict"]
    (0.267, 'inconclusive')
    """
    f = layers.frame
    check_columns(f, ["seed", "variant", "layer", "error"], "claim_deeper_prunable")
    shallow, deep = _halves(n_layers)

    def stat(g):
        s, d = retained_accuracy(g, shallow), retained_accuracy(g, deep)
        return float(d.mean() - s.mean()) if s.size and d.size else math.nan

    return judge("deeper-prunable", "The deeper layers are more prunable than the shallower ones", GROMOV,
                  per_seed(stat), layers, margin=margin, direction="above",
                  effect="deeper minus shallower mean accuracy retained after deleting one layer",
                  measured={"shallower": shallow, "deeper": deep, "retained_by_layer": _per_layer(f)},
                  extra=[*requires, (bool(shallow and deep), f"{n_layers} layers leave no middle layer in one half")],
                  n_boot=n_boot, scale={"layers": n_layers})
