"""The built-in study kinds: what each trains, measures, plots and claims.

Each kind is a function ``run(ctx) -> list of claims`` registered with
:func:`~unravel.study.kinds.register_kind`; ``ctx`` (a :class:`~unravel.study.runner.Context`)
gives its checked spec, data, models, training and output files. Nothing here checks that the
models are large or trained long enough for the verdicts to be evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import attribution, lesion, plots
from ..graph import UnraveledGraph
from ..units import find_units
from . import claims
from .kinds import KINDS, register_kind
from .stats import Trials
from .spec import QuickstartAnalysis, VeitLesionAnalysis, VeitPathsAnalysis

__all__: list[str] = []


def _seed_bar(ctx, what):
    from tqdm.auto import tqdm

    return tqdm(ctx.seeds, desc=what, unit="seed", disable=not ctx.progress or len(ctx.seeds) < 2, leave=False)


def _trials(parts, **kw):
    """Trials from a list of (frame, items or None); items stacked when all parts have them."""
    frame = pd.concat([f for f, _ in parts], ignore_index=True)
    items = np.concatenate([w for _, w in parts]) if all(w is not None for _, w in parts) else None
    return Trials(frame, items, **kw)


def _subset(trials: Trials, mask, **kw) -> Trials:
    mask = np.asarray(mask, bool)
    return Trials(trials.frame[mask], None if trials.items is None else trials.items[mask],
                  value=kw.pop("value", trials.value), draws=kw.pop("draws", trials.draws))


def _train_frames(ctx, name, parts):
    ctx.frame(name, pd.concat(parts, ignore_index=True))


@register_kind("veit-lesion", roles=("residual", "plain"), optional_roles=("residual_conv",),
               analysis=VeitLesionAnalysis)
def _veit_lesion(ctx) -> list:
    """Veit et al. Fig. 3 and 5: delete each unit, k random units, swap k random pairs; every seed."""
    a = ctx.analysis
    roles = [r for r in ("residual", "plain", "residual_conv") if r in ctx.spec.models]
    each, rnd, reo, hist = [], [], [], []
    common = dict(device=ctx.device, progress=ctx.progress, return_items=True)
    for seed in _seed_bar(ctx, "seeds"):
        for role in roles:
            model, h = ctx.trained(role, seed)
            hist.append(h.assign(model=role, seed=seed))
            f, w = lesion.delete_each(model, ctx.data, **common)
            each.append((f.assign(model=role, seed=seed), w))
            if role != "residual":
                continue
            n = len(find_units(model))
            kk = sorted({k for k in a.ks if k <= n})
            # Fig. 5a: k = 1 exhaustively (every single deletion), k >= 2 by random draws
            rnd.append((f.assign(model=role, seed=seed, source="delete_each"), w))
            if [k for k in kk if k > 1]:
                f, w = lesion.delete_random(model, ctx.data, ks=[k for k in kk if k > 1], samples_per_k=a.samples_per_k,
                                            seed=seed, **common)
                lesioned = (f.variant >= 0).to_numpy()  # the baseline row is delete_each's
                rnd.append((f[lesioned].assign(model=role, seed=seed, source="delete_random"), w[lesioned]))
            try:
                f, w = lesion.reorder_random(model, ctx.data, ks=kk, samples_per_k=a.samples_per_k, seed=seed, **common)
                reo.append((f.assign(model=role, seed=seed), w))
            except ValueError:  # one unit per stage: nothing may change places
                pass
    _train_frames(ctx, "train", hist)
    each_t = _trials(each)
    rnd_t = _trials(rnd, draws=["k"])
    ctx.frame("delete_each", each_t.frame)
    ctx.items("delete_each", each_t.items.astype(bool))
    predicted = claims.independent_prediction(each_t.frame, rnd_t.frame)
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
    out = [claims.claim_single_deletions(_subset(each_t, res), chance=chance, n_boot=a.n_boot, requires=deep),
           claims.claim_single_deletions_vs_plain(_subset(each_t, np.isin(each_t.frame.model, ["residual", "plain"])),
                                                  chance=chance, n_boot=a.n_boot),
           claims.claim_smooth_growth(rnd_t, n_boot=a.n_boot, requires=deep,
                                      measured={"measured_minus_independent_prediction_by_k":
                                                {int(k): round(v, 4) for k, v in gap.items()}})]
    if reo:
        reo_t = _trials(reo, draws=["k"])
        ctx.frame("reorder_random", reo_t.frame)
        ctx.items("reorder_random", reo_t.items.astype(bool))
        ctx.figure("reorder_random", plots.error_vs_k(reo_t.frame, x="kendall_tau"),
                   "Error against Kendall's tau between the original and the swapped order (Veit Fig. 5b)")
        tau = reo_t.frame.groupby("k").kendall_tau.mean()
        out.append(claims.claim_smooth_growth(
            reo_t, cid="reorder-smooth", statement="The error grows smoothly as more pairs of units are swapped",
            source=f"{claims.VEIT}, Fig. 5(b)", n_boot=a.n_boot, requires=deep,
            measured={"mean_kendall_tau_by_k": {int(k): round(float(v), 4) for k, v in tau.items()}}))
    out.append(claims.claim_projection_units(_subset(each_t, res), chance=chance, n_boot=a.n_boot))
    if "residual_conv" in roles:
        out.append(claims.claim_projection_units(_subset(each_t, (each_t.frame.model == "residual_conv").to_numpy()),
                                                 chance=chance, n_boot=a.n_boot, label="conv"))
    return out


def _exact_rows(model, x, y, seed, n):
    """Per-length rows (count, sq_norm) of the exact input-gradient decomposition, and the
    per-example squared norms behind sq_norm ([lengths, examples])."""
    exact = attribution.path_length_gradients(model, x, y)
    sq = exact.by_length.detach().double().pow(2).flatten(2).sum(-1).cpu().numpy()  # [K, B]
    frame = pd.DataFrame({"seed": seed, "units": n, "length": exact.lengths.tolist(),
                          "count": [float(c) for c in exact.counts[: len(exact.lengths)]], "sq_norm": sq.mean(1)})
    return exact, frame, sq


@register_kind("veit-paths", roles=("residual",), analysis=VeitPathsAnalysis)
def _veit_paths(ctx) -> list:
    """Veit et al. Sec. 5 and Fig. 6: path lengths, gradient per path length (exact and sampled),
    at initialisation and after training, and across depths; every seed."""
    a = ctx.analysis
    x, y = ctx.probe()
    main, sweep, untrained, sampled, hist, frames = [], [], [], [], [], []
    n = None
    for seed in _seed_bar(ctx, "seeds"):
        model0 = ctx.model("residual", seed)
        n = len(find_units(model0))
        e0, f0, _ = _exact_rows(model0, x, y, seed, n)
        untrained.append(f0)
        model, h = ctx.trained("residual", seed)
        hist.append(h.assign(seed=seed, units=n))
        exact, f, sq = _exact_rows(model, x, y, seed, n)
        main.append((f, sq.astype(np.float32)))
        sweep.append((f, sq.astype(np.float32)))
        frames.append(exact.to_frame().assign(seed=seed, units=n, state="trained", curve="exact, trained"))
        frames.append(e0.to_frame().assign(seed=seed, units=n, state="initial", curve="exact, at initialisation"))
        s = attribution.path_length_gradients(model, x[:a.sample_probe], y[:a.sample_probe], method="sample",
                                              num_samples=a.num_samples, generator=seed, chunk_size=a.paths_per_pass)
        sampled.append(s.to_frame().assign(seed=seed, units=n, state="trained", curve="sampled (Veit's estimator)"))
        for depth in a.depths:
            m, h = ctx.trained("residual", seed, depth=depth)
            nd = len(find_units(m))
            hist.append(h.assign(seed=seed, units=nd))
            e, fd, sqd = _exact_rows(m, x, y, seed, nd)
            sweep.append((fd, sqd.astype(np.float32)))
            frames.append(e.to_frame().assign(seed=seed, units=nd, state="trained", curve="exact, trained"))
    _train_frames(ctx, "train", hist)
    dist = ctx.frame("path_lengths", UnraveledGraph(find_units(model0)).length_distribution())
    ctx.figure("path_lengths", plots.path_length_distribution(dist), "How many paths have each length (Veit Fig. 6a)")
    grads = ctx.frame("gradient_by_length", pd.concat(frames + sampled, ignore_index=True))
    main_t = _trials(main, value="sq_norm")
    sweep_t = _trials(sweep, value="sq_norm")  # every depth's rows share the probe's examples
    ctx.frame("path_parts", sweep_t.frame)
    ctx.items("path_parts", sweep_t.items)
    trained_n = grads[(grads.units == n) & (grads.method == "exact") & (grads.state == "trained")]
    init_n = grads[(grads.units == n) & (grads.state == "initial")]
    samp = grads[(grads.method == "sample")]
    ctx.figure("gradient_per_path", plots.gradient_by_length(pd.concat([trained_n, init_n, samp]), "per_path_norm",
                                                             hue="curve"),
               "Gradient magnitude per path against its length, log scale, mean and 95% interval over seeds: exact "
               "after training, exact at initialisation, and the paper's sampling estimator (Veit Fig. 6b)")
    ctx.figure("gradient_total", plots.gradient_by_length(
        grads[(grads.method == "exact") & (grads.state == "trained")].assign(
            curve=lambda d: "n = " + d.units.astype(str)), "share", hue="curve"),
        "Share of the gradient magnitude carried by each path length, for each depth (Veit Fig. 6c)")
    deep = [(n >= a.min_units, f"the net has {n} units, fewer than min_units = {a.min_units}: Veit et al. make this "
                               "claim for a deep net (54 units), and with few units any window of a few lengths holds "
                               "a large share of all paths; run the full study to decide it")]
    def slope(frames):
        return claims.claim_exponential_decay(Trials(pd.concat(frames, ignore_index=True)), n_boot=10)["estimate"]

    sampled_t = Trials(pd.concat(sampled, ignore_index=True)[["seed", "length", "per_path_norm"]])
    out = [claims.claim_exponential_decay(sampled_t, n_boot=a.n_boot,
                                          measured={"exact_part_per_path_slope_trained": slope([f for f, _ in main]),
                                                    "exact_part_per_path_slope_at_initialisation": slope(untrained)}),
           claims.claim_mean_length_below(main_t, n, n_boot=a.n_boot, requires=deep),
           claims.claim_effective_fraction(main_t, n, mass=float(a.mass), n_boot=a.n_boot, requires=deep)]
    if a.depths:
        out.append(claims.claim_window_stays(sweep_t, n_boot=a.n_boot, requires=deep))
    return out




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
