"""The ``veit-paths`` study kind: Veit et al. Sec. 5 and Fig. 6 (path lengths; the gradient per
path length at initialisation and after training, across depths), judged by :mod:`.path_claims`.

Two quantities: Veit's *magnitude* (his estimator as he ran it: ``num_samples`` single paths per
length on random training batches, :func:`unravel.attribution.path_magnitudes`), which the claims
quoting the paper use; and the exact *net* quantity (the norm of the sum of a length's path
gradients, which cancel), reported as this study's own finding (``net-mean-length``). Nothing
here checks that the net is deep enough for the verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unravel import attribution, plots
from unravel.graph import UnraveledGraph
from unravel.study.stats import Trials, trials_from
from unravel.units import find_units

from .path_claims import (effective_windows, claim_effective_fraction, claim_exponential_decay, claim_mean_length_below, claim_window_stays,
                          finding_net_mean_length)

__all__ = ["run_paths", "sweep_frame"]


def _exact_rows(model, x, y, seed, n):
    """Per-length rows (count, sq_norm) of the exact input-gradient decomposition, and the
    per-example squared norms behind sq_norm ([lengths, examples])."""
    exact = attribution.path_length_gradients(model, x, y)
    sq = exact.by_length.detach().double().pow(2).flatten(2).sum(-1).cpu().numpy()  # [K, B]
    frame = pd.DataFrame({"seed": seed, "units": n, "length": exact.lengths.tolist(),
                          "count": [float(c) for c in exact.counts[: len(exact.lengths)]], "sq_norm": sq.mean(1)})
    return exact, frame, sq


def _training_batches(ctx, seed):
    """Veit's random training batches: ``sample_batches`` batches of ``sample_batch`` examples
    drawn from the training set with ``seed``, on the device."""
    import torch

    a = ctx.analysis
    x, y = ctx.data.train.tensors
    g = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(len(x), generator=g)[: a.sample_batch] for _ in range(a.sample_batches)]
    return [(x[i].to(ctx.device), y[i].to(ctx.device)) for i in picks]


def _magnitude_rows(model, ctx, seed, n, state):
    """Veit's magnitude per length (his estimator on random training batches), as a frame."""
    a = ctx.analysis
    s = attribution.path_magnitudes(model, _training_batches(ctx, seed), num_samples=a.num_samples, generator=seed,
                                    paths_per_pass=a.paths_per_pass)
    return s.to_frame().rename(columns={"norm": "magnitude"}).assign(
        seed=seed, units=n, state=state, curve=f"Veit's magnitude, {state}", norm=lambda d: d.magnitude)


def run_paths(ctx) -> list:
    """Veit et al. Sec. 5 and Fig. 6: path lengths, gradient per path length (exact and sampled),
    at initialisation and after training, and across depths; every seed."""
    a = ctx.analysis
    x, y = ctx.probe()
    main, sweep, untrained, sampled, hist, frames, magnitudes = [], [], [], [], [], [], []
    n = None
    for seed in ctx.seed_bar("seeds"):
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
        mag = _magnitude_rows(model, ctx, seed, n, "trained")
        sampled.append(mag)
        magnitudes.append(mag)
        for depth in a.depths:
            m, h = ctx.trained("residual", seed, depth=depth)
            nd = len(find_units(m))
            hist.append(h.assign(seed=seed, units=nd))
            e, fd, sqd = _exact_rows(m, x, y, seed, nd)
            sweep.append((fd, sqd.astype(np.float32)))
            frames.append(e.to_frame().assign(seed=seed, units=nd, state="trained", curve="exact, trained"))
            magnitudes.append(_magnitude_rows(m, ctx, seed, nd, "trained"))
    ctx.frame("train", pd.concat(hist, ignore_index=True))
    dist = ctx.frame("path_lengths", UnraveledGraph(find_units(model0)).length_distribution())
    ctx.figure("path_lengths", plots.path_length_distribution(dist), "How many paths have each length (Veit Fig. 6a)")
    grads = ctx.frame("gradient_by_length", pd.concat(frames + sampled, ignore_index=True))
    mags = ctx.frame("magnitude_by_length", pd.concat(magnitudes, ignore_index=True))
    ctx.frame("effective_windows", pd.DataFrame(
        [dict(w, quantity="magnitude") for w in effective_windows(mags[["seed", "units", "length", "count", "magnitude"]],
                                                                  float(a.mass))]
        + [dict(w, quantity="net") for w in effective_windows(sweep_frame(sweep), float(a.mass))]))
    main_t = trials_from(main, value="sq_norm")
    sweep_t = trials_from(sweep, value="sq_norm")  # every depth's rows share the probe's examples
    ctx.frame("path_parts", sweep_t.frame)
    ctx.items("path_parts", sweep_t.items)
    trained_n = grads[(grads.units == n) & (grads.method == "exact") & (grads.state == "trained")]
    init_n = grads[(grads.units == n) & (grads.state == "initial")]
    samp = grads[(grads.method == "sample")]
    ctx.figure("gradient_per_path", plots.gradient_by_length(pd.concat([trained_n, init_n, samp]), "per_path_norm",
                                                             hue="curve"),
               "Gradient per path against its length, log scale, mean and 95% interval over seeds: Veit's mean "
               "single-path norm (his estimator, Fig. 6b), and the net quantity (the norm of the sum of a length's path "
               "gradients, which cancel) shared among its paths, after training and at initialisation")
    ctx.figure("gradient_total", plots.gradient_by_length(
        mags.assign(curve=lambda d: "n = " + d.units.astype(str)), "share", hue="curve"),
        "Share of Veit's magnitude (paths x mean single-path norm) carried by each path length, for each depth "
        "(Veit Fig. 6c)")
    ctx.figure("gradient_net", plots.gradient_by_length(
        grads[(grads.method == "exact") & (grads.state == "trained")].assign(
            curve=lambda d: "n = " + d.units.astype(str)), "share", hue="curve"),
        "Share of the net quantity (the norm of the sum of a length's path gradients, with cancellation; our own "
        "measure, no paper's) carried by each path length, for each depth")
    deep = [(n >= a.min_units, f"the net has {n} units, fewer than min_units = {a.min_units}: Veit et al. make this "
                               "claim for a deep net (54 units), and with few units any window of a few lengths holds "
                               "a large share of all paths; run the full study to decide it")]
    def slope(frames):
        return claim_exponential_decay(Trials(pd.concat(frames, ignore_index=True)), n_boot=10)["estimate"]

    sampled_t = Trials(pd.concat(sampled, ignore_index=True)[["seed", "length", "per_path_norm"]])
    veit_n = Trials(mags[mags.units == n][["seed", "length", "count", "magnitude"]].reset_index(drop=True),
                    value="magnitude")
    veit_sweep = Trials(mags[["seed", "units", "length", "count", "magnitude"]].reset_index(drop=True),
                        value="magnitude")
    out = [claim_exponential_decay(sampled_t, n_boot=a.n_boot,
                                   measured={"exact_part_per_path_slope_trained": slope([f for f, _ in main]),
                                             "exact_part_per_path_slope_at_initialisation": slope(untrained)}),
           claim_mean_length_below(veit_n, n, n_boot=a.n_boot, requires=deep),
           claim_effective_fraction(veit_n, n, mass=float(a.mass), n_boot=a.n_boot, requires=deep),
           finding_net_mean_length(main_t, n, mass=float(a.mass), n_boot=a.n_boot, requires=deep)]
    if a.depths:
        out.append(claim_window_stays(veit_sweep, n_boot=a.n_boot, requires=deep))
    return out


def sweep_frame(sweep):
    """The exact (net) rows of every depth, one frame (seed, units, length, count, sq_norm)."""
    return pd.concat([f for f, _ in sweep], ignore_index=True)[["seed", "units", "length", "count", "sq_norm"]]
