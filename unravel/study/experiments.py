"""The built-in study kinds: what each trains, measures, plots and claims.

Each kind is a function ``run(ctx) -> list of claims`` registered with
:func:`~unravel.study.kinds.register_kind`; ``ctx`` (a :class:`~unravel.study.runner.Context`)
gives its checked spec, data, models, training and output files. Nothing here checks that the
models are large or trained long enough for the verdicts to be evidence.
"""

from __future__ import annotations

import pandas as pd

from .. import attribution, lesion, plots
from ..graph import UnraveledGraph
from ..units import find_units
from .claims import (claim_alike, claim_deeper_closer, claim_dense_shallower, claim_exponential_decay,
                     claim_mean_length_below, claim_mean_length_moves, claim_projection_hurts, claim_residual_closer,
                     claim_shallow_first, claim_single_deletions, claim_smooth_growth)
from .kinds import KINDS, register_kind
from .spec import (NormPreservationAnalysis, QuickstartAnalysis, SsfDynamicsAnalysis, VeitLesionAnalysis,
                   VeitPathsAnalysis)

__all__: list[str] = []


@register_kind("veit-lesion", roles=("residual", "plain"), analysis=VeitLesionAnalysis)
def _veit_lesion(ctx) -> list:
    """Veit et al. Fig. 3 and 5: delete each unit, k random units, swap k random pairs."""
    a = ctx.analysis
    frames = {}
    for role in ("residual", "plain"):
        model = ctx.model(role)
        hist = ctx.fit(model)
        ctx.frame(f"train_{role}", hist.to_frame().assign(model=role))
        n = len(find_units(model))
        kk = [k for k in a.ks if k <= n]
        frames[role] = {
            "each": lesion.delete_each(model, ctx.data, device=ctx.device, progress=ctx.progress).assign(model=role),
            "random": lesion.delete_random(model, ctx.data, ks=kk, samples_per_k=a.samples_per_k, seed=ctx.seed,
                                           device=ctx.device, progress=ctx.progress).assign(model=role)}
        if role == "residual":
            try:
                frames[role]["reorder"] = lesion.reorder_random(model, ctx.data, ks=kk, samples_per_k=a.samples_per_k,
                                                                seed=ctx.seed, device=ctx.device,
                                                                progress=ctx.progress).assign(model=role)
            except ValueError:  # one unit per stage: nothing may change places
                frames[role]["reorder"] = None
    each = ctx.frame("delete_each", pd.concat([frames[r]["each"] for r in frames]))
    rnd = ctx.frame("delete_random", pd.concat([frames[r]["random"] for r in frames]))
    ctx.figure("delete_each", plots.deletion_errors(each), "Test error after deleting each single unit (Veit Fig. 3)")
    ctx.figure("delete_random", plots.error_vs_k(rnd), "Error against the number of deleted units (Veit Fig. 5a)")
    if frames["residual"]["reorder"] is not None:
        reo = ctx.frame("reorder_random", frames["residual"]["reorder"])
        ctx.figure("reorder_random", plots.error_vs_k(reo), "Error against the number of swapped pairs (Veit Fig. 5b)")
    return [claim_single_deletions(frames["residual"]["each"], frames["plain"]["each"]),
            claim_smooth_growth(frames["residual"]["random"]),
            claim_projection_hurts(frames["residual"]["each"])]


@register_kind("veit-paths", roles=("residual",), analysis=VeitPathsAnalysis)
def _veit_paths(ctx) -> list:
    """Veit et al. Sec. 4.1 and Fig. 6: path lengths, gradient per path length (exact and sampled)."""
    a = ctx.analysis
    model = ctx.model("residual")
    ctx.frame("train", ctx.fit(model).to_frame())
    units = find_units(model)
    n = len(units)
    dist = ctx.frame("path_lengths", UnraveledGraph(units).length_distribution())
    ctx.figure("path_lengths", plots.path_length_distribution(dist), "How many paths have each length")
    x, y = ctx.probe()
    exact = attribution.path_length_gradients(model, x, y)
    sample = attribution.path_length_gradients(model, x, y, method="sample", num_samples=a.num_samples,
                                               generator=ctx.seed, chunk_size=a.paths_per_pass)
    grads = ctx.frame("gradient_by_length", pd.concat([exact.to_frame(), sample.to_frame()], ignore_index=True))
    eff = exact.effective_paths(float(a.mass))
    eff_s = sample.effective_paths(float(a.mass))
    ctx.frame("effective_paths", pd.DataFrame([{"method": "exact", **eff}, {"method": "sample", **eff_s}]))
    ctx.figure("gradient_per_path", plots.gradient_by_length(grads, "per_path_norm", window=eff_s["lengths"]),
               "Gradient magnitude per path by length, log scale (Veit Fig. 6a); shaded: effective paths (sampled)")
    ctx.figure("gradient_total", plots.gradient_by_length(grads, "norm", window=eff["lengths"]),
               "Total gradient magnitude by length (Veit Fig. 6b); shaded: effective paths (exact)")
    decay = claim_exponential_decay(sample.to_frame())
    below = claim_mean_length_below(sample.to_frame(), n)
    below["measured"]["exact_gradient_mean_length"] = exact.mean_length
    below["measured"]["effective_paths_exact"] = list(eff["lengths"])
    below["measured"]["effective_share_of_all_paths"] = eff["fraction_of_paths"]
    decay["measured"]["exact_slope"] = claim_exponential_decay(exact.to_frame())["measured"].get("slope_log_per_length")
    return [decay, below]


@register_kind("ssf-dynamics", roles=("resnet",), optional_roles=("densenet", "se_resnet"),
               analysis=SsfDynamicsAnalysis)
def _ssf_dynamics(ctx) -> list:
    """Shallow subnetworks first: path-length shares and random subnetworks over training."""
    a = ctx.analysis
    results, claims = {}, []
    for role in [r for r in ("resnet", "densenet", "se_resnet") if r in ctx.spec.models]:
        model = ctx.model(role)
        n = len(find_units(model))
        subs = sorted({max(1, int(round(f * n))) for f in a.subnetwork_fractions})
        tracker = attribution.PathLengthTracker(ctx.probe(), wrt=("units",), subnetwork_units=subs,
                                                subnetwork_samples=a.subnetwork_samples, seed=ctx.seed)
        ctx.frame(f"train_{role}", ctx.fit(model, callbacks=[tracker]).to_frame())
        tf = ctx.frame(f"paths_{role}", tracker.to_frame().assign(model=role))
        sf = ctx.frame(f"subnetworks_{role}", tracker.subnetworks_frame().assign(model=role))
        ctx.figure(f"heatmap_{role}", plots.length_heatmap(tf), f"{role}: share of the parameter gradient by path "
                   "length, over training")
        ctx.figure(f"subnetworks_{role}", plots.subnetwork_errors(sf), f"{role}: error of random subnetworks over "
                   "training")
        last = tf[tf.epoch == tf.epoch.max()]
        results[role] = (float(last.mean_length.iloc[0]), n, tf, sf)
    res_mean, res_n, res_tf, res_sf = results["resnet"]
    claims += [claim_shallow_first(res_sf), claim_mean_length_moves(res_tf)]
    if "densenet" in results:
        claims.append(claim_dense_shallower(res_mean, res_n, results["densenet"][0], results["densenet"][1]))
    if "se_resnet" in results:
        claims.append(claim_alike(res_mean, res_n, results["se_resnet"][0], results["se_resnet"][1]))
    return claims


@register_kind("norm-preservation", roles=("residual", "plain"), analysis=NormPreservationAnalysis)
def _norm_preservation(ctx) -> list:
    """TPAMI 2021: the gradient norm ratio per unit, residual against plain, at several depths."""
    a = ctx.analysis
    rows = []
    for depth in a.depths:
        for family in ("residual", "plain"):
            model = ctx.model(family, depth=depth)
            if a.train:
                ctx.fit(model)
            x, y = ctx.probe()
            rows.append(attribution.norm_ratios(model, x, y).assign(family=family, depth=depth,
                                                                    model=f"{family}-{depth}"))
    frame = ctx.frame("norm_ratios", pd.concat(rows, ignore_index=True))
    ctx.figure("norm_ratios", plots.norm_ratios(frame, hue="model"), "Gradient norm ratio per unit; 1 is perfect "
               "preservation")
    return [claim_residual_closer(frame), claim_deeper_closer(frame)]


@register_kind("quickstart", analysis=QuickstartAnalysis)
def _quickstart(ctx) -> list:
    """Small versions of the other studies in one run, their files prefixed with the study's name."""
    claims = []
    for kind, spec in ctx.analysis.studies.items():
        got = KINDS[kind].run(ctx.sub(spec, prefix=kind))
        for c in got:
            c["study"] = kind
        claims += got
    return claims
