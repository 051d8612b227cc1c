"""The ``veit-lesion`` study kind: Veit et al. Fig. 3 and 5 (delete each unit, k random units,
swap k random pairs), measured on every seed's trained nets and judged by
:mod:`.lesion_claims`. Nothing here checks that the nets are deep enough for the verdicts to be
evidence (the claims' ``min_units`` does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unravel import plots, sweeps
from unravel.study.stats import subset, trials_from
from unravel.units import find_units

from .lesion_claims import (stage_increases, claim_projection_units, claim_single_deletions, claim_single_deletions_vs_plain,
                            claim_smooth_growth, independent_prediction)
from .papers import VEIT

__all__ = ["run_lesion"]


def run_lesion(ctx) -> list:
    """Veit et al. Fig. 3 and 5: delete each unit, k random units, swap k random pairs; every seed."""
    a = ctx.analysis
    roles = [r for r in ("residual", "plain", "residual_conv") if r in ctx.spec.models]
    each, rnd, reo, hist = [], [], [], []
    common = dict(device=ctx.device, progress=ctx.progress, return_items=True)
    for seed in ctx.seed_bar("seeds"):
        for role in roles:
            model, h = ctx.trained(role, seed)
            hist.append(h.assign(model=role, seed=seed))
            f, w = sweeps.delete_each(model, ctx.data, **common)
            each.append((f.assign(model=role, seed=seed), w))
            if role != "residual":
                continue
            n = len(find_units(model))
            kk = sorted({k for k in a.ks if k <= n})
            # Fig. 5a: k = 1 exhaustively (every single deletion), k >= 2 by random draws
            rnd.append((f.assign(model=role, seed=seed, source="delete_each"), w))
            if [k for k in kk if k > 1]:
                f, w = sweeps.delete_random(model, ctx.data, ks=[k for k in kk if k > 1], samples_per_k=a.samples_per_k,
                                            seed=seed, **common)
                lesioned = (f.variant >= 0).to_numpy()  # the baseline row is delete_each's
                rnd.append((f[lesioned].assign(model=role, seed=seed, source="delete_random"), w[lesioned]))
            try:
                f, w = sweeps.reorder_random(model, ctx.data, ks=kk, samples_per_k=a.samples_per_k, seed=seed, **common)
                reo.append((f.assign(model=role, seed=seed), w))
            except ValueError:  # one unit per stage: nothing may change places
                pass
    ctx.frame("train", pd.concat(hist, ignore_index=True))
    each_t = trials_from(each)
    rnd_t = trials_from(rnd, draws=["k"])
    ctx.frame("delete_each", each_t.frame)
    ctx.frame("delete_each_by_stage", stage_increases(each_t.frame))  # Fig. 3 as stated: the max beside the median
    ctx.items("delete_each", each_t.items.astype(bool))
    predicted = independent_prediction(each_t.frame, rnd_t.frame)
    ctx.frame("delete_random", predicted)
    ctx.items("delete_random", rnd_t.items.astype(bool))
    ctx.figure("delete_each", plots.deletion_errors(each_t.frame),
               "Test error after deleting each single unit, mean and 95% interval over seeds; dashed: the unlesioned "
               "nets (Veit Fig. 3)")
    ctx.figure("delete_random", plots.error_vs_k(predicted, predicted="predicted_error"),
               "Error against the number of deleted units, mean and spread over draws and seeds; dotted: predicted "
               "from single deletions acting independently (Veit Fig. 5a)")
    res = (each_t.frame.model == "residual").to_numpy()
    chance = 1.0 - 1.0 / ctx.data.num_classes
    n = int(each_t.frame[res & (each_t.frame.variant >= 0).to_numpy()].units.nunique())
    deep = [(n >= a.min_units, f"the residual net has {n} units, fewer than min_units = {a.min_units}: Veit et al. "
                               "make this claim for deep nets (54 units); run the full study to decide it")]
    gap = predicted[predicted.variant >= 0].groupby("k").apply(
        lambda g: float((g.error - g.predicted_error).mean()), include_groups=False)
    out = [claim_single_deletions(subset(each_t, res), chance=chance, n_boot=a.n_boot, requires=deep),
           claim_single_deletions_vs_plain(subset(each_t, np.isin(each_t.frame.model, ["residual", "plain"])),
                                                  chance=chance, n_boot=a.n_boot),
           claim_smooth_growth(rnd_t, n_boot=a.n_boot, requires=deep,
                                      measured={"measured_minus_independent_prediction_by_k":
                                                {int(k): round(v, 4) for k, v in gap.items()}})]
    if reo:
        reo_t = trials_from(reo, draws=["k"])
        ctx.frame("reorder_random", reo_t.frame)
        ctx.items("reorder_random", reo_t.items.astype(bool))
        ctx.figure("reorder_random", plots.error_vs_k(reo_t.frame, x="kendall_tau"),
                   "Error against Kendall's tau between the original and the swapped order (Veit Fig. 5b)")
        tau = reo_t.frame.groupby("k").kendall_tau.mean()
        out.append(claim_smooth_growth(
            reo_t, cid="reorder-smooth", statement="The error grows smoothly as more pairs of units are swapped",
            source=f"{VEIT}, Fig. 5(b)", n_boot=a.n_boot, requires=deep,
            measured={"mean_kendall_tau_by_k": {int(k): round(float(v), 4) for k, v in tau.items()}}))
    out.append(claim_projection_units(subset(each_t, res), chance=chance, n_boot=a.n_boot))
    if "residual_conv" in roles:
        out.append(claim_projection_units(subset(each_t, (each_t.frame.model == "residual_conv").to_numpy()),
                                                 chance=chance, n_boot=a.n_boot, label="conv"))
    return out
