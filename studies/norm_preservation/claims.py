"""Claims of the norm-preservation study: verdicts on the Jacobian spectra of residual units.

Each ``claim_*`` takes :class:`~unravel.study.stats.Trials` of one row per trained net and unit
(columns ``seed``, ``model`` -- ``residual``, ``plain`` or ``procrustes`` --, ``depth``, ``unit``,
``transition`` and ``dev``, the median over the unit's singular values of ``|log sigma|``, averaged
over the probe examples, whose per-example values are the trials' items) and returns a claim dict
as :mod:`unravel.study.claims` describes it. A net's *identity* units are those whose shortcut is
the identity; its *transition* units change the resolution or the width. The two are never
pooled: every effect is a difference or a level of one of them. Nothing here checks that the nets
are deep or trained enough to stand for the paper's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from unravel.study.claims import check_columns, judge
from unravel.study.stats import Trials, per_seed

__all__ = ["NORM", "PAPERS", "claim_identity_near_one", "claim_deeper_concentrates", "claim_transition_farther",
           "claim_plain_farther", "claim_procrustes_transitions", "claim_procrustes_near_one",
           "claim_procrustes_not_worse", "unit_medians"]

NORM = "Zaeemzadeh, Rahnavard & Shah, IEEE TPAMI 43(11) (2021)"

#: Claim id -> what the paper reports (see :func:`unravel.study.register_paper`).
PAPERS = {
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

COLUMNS = ["seed", "model", "depth", "unit", "transition", "dev"]


def unit_medians(frame: pd.DataFrame) -> pd.Series:
    """The median ``dev`` over the units of each ``(model, depth, transition)``, one seed's rows
    or several pooled (then the median over all their units).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import unit_medians
    >>> f = pd.DataFrame({"model": "residual", "depth": 20, "transition": [False, False, False, True],
    ...                   "dev": [0.1, 0.3, 0.2, 0.9]})
    >>> unit_medians(f).round(3).to_dict()
    {('residual', 20, False): 0.2, ('residual', 20, True): 0.9}
    """
    return frame.groupby(["model", "depth", "transition"]).dev.median()


def _level(m, model, depth, transition):
    return float(m.get((model, depth, transition), math.nan))


class _Levels:
    """Medians of ``dev`` per ``(model, depth, transition)`` from integer group codes: what the
    bootstrap computes a thousand times per claim, without a pandas groupby."""

    def __init__(self, trials: Trials):
        f = trials.frame
        keys = list(zip(f.model, f.depth.astype(int), f.transition.astype(bool)))
        self.groups = list(dict.fromkeys(keys))
        code = {k: i for i, k in enumerate(self.groups)}
        self.trials = Trials(f.assign(_group=[code[k] for k in keys]), trials.items, value=trials.value,
                             draws=trials.draws, cluster=trials.cluster)

    def __call__(self, g) -> dict:
        codes, dev = g["_group"].to_numpy(), g["dev"].to_numpy(np.float64)
        return {self.groups[c]: float(np.median(dev[codes == c])) for c in np.unique(codes)}


def _depths(f, model):
    return sorted(int(d) for d in f.loc[f.model == model, "depth"].unique())


def _by_depth(f, model, transition):
    m = unit_medians(f)
    return {d: round(float(m.get((model, d, transition), math.nan)), 4) for d in _depths(f, model)}


def _within(f, band):
    """Per residual depth, the median over identity units of the share of singular values in the band."""
    g = f[(f.model == "residual") & ~f.transition.astype(bool)].groupby("depth").within.median()
    return {int(d): round(float(v), 4) for d, v in g.items()} | {"band": band}


def _frame(spectra: Trials, what):
    check_columns(spectra.frame, COLUMNS, what)
    return spectra.frame


def claim_identity_near_one(spectra: Trials, *, margin: float = 0.1, depth: int | None = None, n_boot: int = 1000,
                            measured: dict | None = None, requires=()) -> dict:
    """The singular values of an identity unit's Jacobian sit near 1 (Zaeemzadeh et al.).

    Effect: the median over the residual net's identity units of ``dev`` (the median ``|log
    sigma|`` of a unit) at ``depth`` (default the deepest residual net); the claim holds below
    ``margin`` (0.1: the typical singular value within about 10% of 1, which is the same as more
    than half of them inside the band ``|log sigma| <= 0.1``).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_identity_near_one
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": "residual", "depth": 56, "unit": [0, 1] * 2,
    ...                   "transition": False, "dev": [0.03, 0.05, 0.04, 0.05]})
    >>> claim_identity_near_one(Trials(f, value="dev"), n_boot=20)["verdict"]
    'supported'
    """
    f = _frame(spectra, "claim_identity_near_one")
    depth = max(_depths(f, "residual"), default=None) if depth is None else depth
    levels = _Levels(spectra)
    return judge("identity-near-one", "The singular values of an identity residual unit's Jacobian sit near 1",
                  f"{NORM}", per_seed(lambda g: _level(levels(g), "residual", depth, False)), levels.trials,
                  margin=margin, direction="below", effect=f"the median over identity units of median abs(log sigma) "
                  f"(residual net, depth {depth})",
                  measured={"median_by_depth": _by_depth(f, "residual", False), "depth": depth,
                            **({"share_within_band_by_depth": _within(f, margin)} if "within" in f.columns else {}),
                            **(measured or {})},
                  extra=requires, n_boot=n_boot, range=[0, None], scale={"depth": depth})


def claim_deeper_concentrates(spectra: Trials, *, margin: float = 0.0, n_boot: int = 1000, measured: dict | None = None,
                              requires=()) -> dict:
    """The deeper the residual net, the closer its identity units' singular values sit to 1.

    Effect: the shallowest residual net's median (over identity units) ``dev`` minus the deepest
    one's; the claim holds above ``margin`` (0). Undefined (inconclusive) with one depth.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_deeper_concentrates
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": "residual", "depth": [20, 110] * 2, "unit": 1,
    ...                   "transition": False, "dev": [0.2, 0.05, 0.21, 0.05]})
    >>> claim_deeper_concentrates(Trials(f, value="dev"), n_boot=20)["verdict"]
    'supported'
    """
    f = _frame(spectra, "claim_deeper_concentrates")
    depths = _depths(f, "residual")
    levels = _Levels(spectra)

    def gap(g):
        m = levels(g)
        return _level(m, "residual", depths[0], False) - _level(m, "residual", depths[-1], False) \
            if len(depths) >= 2 else math.nan

    return judge("deeper-concentrates", "The deeper the residual net, the closer its identity units' singular values "
                  "sit to 1", NORM, per_seed(gap), levels.trials, margin=margin, direction="above",
                  effect=f"the median abs(log sigma) of identity units at depth {depths[0]} minus at depth {depths[-1]}"
                  if depths else "the shallowest minus the deepest net's median abs(log sigma)",
                  measured={"median_by_depth": _by_depth(f, "residual", False), **(measured or {})},
                  extra=[*requires, (len(depths) >= 2, "one residual depth: nothing to compare")], n_boot=n_boot,
                  scale={"depth": depths[-1]} if depths else None)


def _worst_gap(m, high, low, depths):
    """The smallest, over depths, of ``level(high) - level(low)`` in the medians ``m``; each is
    ``(model, transition)``."""
    gaps = [_level(m, high[0], d, high[1]) - _level(m, low[0], d, low[1]) for d in depths]
    return min(gaps) if gaps and not any(math.isnan(v) for v in gaps) else math.nan


def claim_transition_farther(spectra: Trials, *, margin: float = 0.0, n_boot: int = 1000, measured: dict | None = None,
                             requires=()) -> dict:
    """A residual net's transition units are farther from norm-preserving than its identity units.

    Effect: the smallest, over depths, of the residual net's median ``dev`` of transition units
    minus that of identity units; the claim holds above ``margin`` (0).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_transition_farther
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0] * 3 + [1] * 3, "model": "residual", "depth": 20, "unit": [0, 1, 2] * 2,
    ...                   "transition": [False, True, False] * 2, "dev": [0.1, 0.5, 0.1, 0.1, 0.5, 0.12]})
    >>> claim_transition_farther(Trials(f, value="dev"), n_boot=20)["verdict"]
    'supported'
    """
    f = _frame(spectra, "claim_transition_farther")
    depths = _depths(f, "residual")
    levels = _Levels(spectra)
    return judge("transition-farther", "Transition units are farther from norm-preserving than identity units",
                  NORM, per_seed(lambda g: _worst_gap(levels(g), ("residual", True), ("residual", False), depths)), levels.trials,
                  margin=margin, direction="above",
                  effect="the smallest over depths of transition minus identity units' median abs(log sigma) (residual)",
                  measured={"identity_by_depth": _by_depth(f, "residual", False),
                            "transition_by_depth": _by_depth(f, "residual", True), **(measured or {})},
                  extra=requires, n_boot=n_boot, scale={"depth": max(depths)} if depths else None)


def claim_plain_farther(spectra: Trials, *, margin: float = 0.0, n_boot: int = 1000, measured: dict | None = None,
                        requires=()) -> dict:
    """Plain units ``y = F(x)`` are farther from norm-preserving than residual units ``x + F(x)``.

    Effect: the smallest, over the depths both nets have, of the plain net's median ``dev`` over
    its identity-shaped units (those that keep the shape) minus the residual net's; the claim
    holds above ``margin`` (0).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_plain_farther
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["residual", "plain"] * 2, "depth": 20, "unit": 1,
    ...                   "transition": False, "dev": [0.1, 5.0, 0.12, 5.1]})
    >>> claim_plain_farther(Trials(f, value="dev"), n_boot=20)["verdict"]
    'supported'
    """
    f = _frame(spectra, "claim_plain_farther")
    depths = sorted(set(_depths(f, "residual")) & set(_depths(f, "plain")))
    levels = _Levels(spectra)
    return judge("plain-farther", "Plain units are farther from norm-preserving than residual units", NORM,
                  per_seed(lambda g: _worst_gap(levels(g), ("plain", False), ("residual", False), depths)), levels.trials,
                  margin=margin, direction="above",
                  effect="the smallest over depths of plain minus residual identity units' median abs(log sigma)",
                  measured={"residual_by_depth": _by_depth(f, "residual", False),
                            "plain_by_depth": _by_depth(f, "plain", False), **(measured or {})},
                  extra=[*requires, (bool(depths), "no depth has both a residual and a plain net")], n_boot=n_boot,
                  check=True)


def claim_procrustes_transitions(spectra: Trials, *, margin: float = 0.0, n_boot: int = 1000,
                                 measured: dict | None = None, requires=()) -> dict:
    """A Procrustes ResNet's transition units are closer to norm-preserving than the ResNet's.

    Effect: the smallest, over the Procrustes net's depths, of the residual net's median
    transition-unit ``dev`` minus the Procrustes net's; the claim holds above ``margin`` (0).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_procrustes_transitions
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["residual", "procrustes"] * 2, "depth": 56, "unit": 9,
    ...                   "transition": True, "dev": [0.45, 0.0, 0.5, 0.0]})
    >>> claim_procrustes_transitions(Trials(f, value="dev"), n_boot=20)["verdict"]
    'supported'
    """
    f = _frame(spectra, "claim_procrustes_transitions")
    depths = sorted(set(_depths(f, "residual")) & set(_depths(f, "procrustes")))
    levels = _Levels(spectra)
    return judge("procrustes-transitions", "A Procrustes ResNet's transition units are closer to norm-preserving "
                  "than the ResNet's", NORM,
                  per_seed(lambda g: _worst_gap(levels(g), ("residual", True), ("procrustes", True), depths)), levels.trials,
                  margin=margin, direction="above",
                  effect="the smallest over depths of the ResNet's minus the Procrustes net's transition units' "
                         "median abs(log sigma)",
                  measured={"residual_by_depth": _by_depth(f, "residual", True),
                            "procrustes_by_depth": _by_depth(f, "procrustes", True), **(measured or {})},
                  extra=[*requires, (bool(depths), "no depth has both a residual and a Procrustes net")],
                  n_boot=n_boot, check=True)


def claim_procrustes_near_one(spectra: Trials, *, margin: float = 0.1, n_boot: int = 1000,
                              measured: dict | None = None, requires=()) -> dict:
    """A Procrustes ResNet's transition units are norm-preserving: the largest, over its depths,
    of the median transition-unit ``dev`` lies below ``margin`` (0.1).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_procrustes_near_one
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 1], "model": "procrustes", "depth": 56, "unit": 9,
    ...                   "transition": True, "dev": [0.01, 0.02]})
    >>> claim_procrustes_near_one(Trials(f, value="dev"), n_boot=20)["verdict"]
    'inconclusive'
    """
    f = _frame(spectra, "claim_procrustes_near_one")
    depths = _depths(f, "procrustes")
    levels = _Levels(spectra)

    def worst(g):
        m = levels(g)
        values = [_level(m, "procrustes", d, True) for d in depths]
        return max(values) if values else math.nan

    return judge("procrustes-near-one", "A Procrustes ResNet's transition units sit near 1", NORM, per_seed(worst),
                  levels.trials, margin=margin, direction="below",
                  effect="the largest over depths of the Procrustes net's transition units' median abs(log sigma)",
                  measured={"procrustes_by_depth": _by_depth(f, "procrustes", True), **(measured or {})},
                  extra=[*requires, (bool(depths), "no Procrustes net")], n_boot=n_boot, range=[0, None], check=True)


def claim_procrustes_not_worse(errors: Trials, *, margin: float = 0.02, chance: float = 0.9, n_boot: int = 1000,
                               measured: dict | None = None, requires=()) -> dict:
    """A Procrustes ResNet trains at least as well as the ResNet: a non-inferiority test on the
    test error after training.

    Effect: the Procrustes net's test error minus the residual net's (mean over the depths both
    have); the claim holds below ``margin`` (0.02, two percentage points: worse by less than that
    counts as not worse) and is contradicted when the whole interval lies above it. Rows:
    ``seed, model, depth, error`` (with per-test-example wrong flags as items, so that the
    examples are resampled paired). Inconclusive if the residual net did not train (its error not
    below half the chance error).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.studies.norm_preservation.claims import claim_procrustes_not_worse
    >>> from unravel.study.stats import Trials
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["residual", "procrustes"] * 2, "depth": 56,
    ...                   "error": [0.10, 0.09, 0.11, 0.099]})
    >>> claim_procrustes_not_worse(Trials(f), n_boot=20)["verdict"]
    'supported'
    """
    f = errors.frame
    check_columns(f, ["seed", "model", "depth", "error"], "claim_procrustes_not_worse")
    depths = sorted(set(f.loc[f.model == "residual", "depth"]) & set(f.loc[f.model == "procrustes", "depth"]))

    def gap(g):
        e = g.groupby(["model", "depth"]).error.mean()
        diffs = [e.get(("procrustes", d), math.nan) - e.get(("residual", d), math.nan) for d in depths]
        return float(np.mean(diffs)) if diffs else math.nan

    means = f.groupby(["model", "depth"]).error.mean()
    worst = float(f.loc[f.model == "residual", "error"].max()) if (f.model == "residual").any() else math.nan
    return judge("procrustes-not-worse", "A Procrustes ResNet trains at least as well as the ResNet", NORM,
                  per_seed(gap), errors, margin=margin, direction="below",
                  effect="the Procrustes minus the ResNet test error",
                  measured={"test_error": {f"{m}-{int(d)}": round(float(v), 4) for (m, d), v in means.items()},
                            **(measured or {})},
                  extra=[*requires, (bool(depths), "no depth has both a residual and a Procrustes net"),
                         (worst < chance / 2, f"the ResNet did not train: its test error {worst:.3f} is not below "
                                              f"half the chance error {chance:.2f}")], n_boot=n_boot, range=[-1, 1])
