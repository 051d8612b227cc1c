"""The ``norm-preservation`` study kind: Jacobian spectra of residual units over training
(Zaeemzadeh, Rahnavard & Shah, TPAMI 2021).

Per seed it trains pre-activation residual and plain nets at each depth, and Procrustes ResNets
where the spec gives one (``procrustes``: ours; ``procrustes_authors``: the authors' bottleneck
ProcResNet trained with their recipe), measuring the singular values of each unit's Jacobian
(:func:`unravel.jacobian_spectra`, on a copy whose BatchNorm statistics are set from training
data) when training begins and after every epoch (a subset of units, :class:`SpectraTracker`)
and, after training, of every unit at every probe example; identity and transition units are
kept apart throughout. After training it also records what the authors report: per unit and
probe example the smallest and largest singular value and the share within ``[1 - delta, 1 +
delta]`` (:func:`unravel.jacobian.measure_norm_preservation`), and per unit the ratio of the
loss gradient's norm at its input to that at its output on a training batch
(:func:`unravel.jacobian.gradient_norm_ratios`). It does not check that the nets are deep or trained enough to stand for
the paper's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from unravel import plots, train
from unravel.procrustes import ProcrustesCallback
from unravel.jacobian import gradient_norm_ratios, measure_norm_preservation
from unravel.jacobian.spectra import SpectraTracker, recalibrated, spectrum_summary
from unravel.study.schema import integer, list_of, number, setting
from unravel.study.stats import Trials
from unravel.units import find_units

from . import claims as nc

__all__ = ["NormPreservationAnalysis", "tracked_units", "run_norm_preservation"]


@dataclass(frozen=True)
class NormPreservationAnalysis:
    """``analysis:`` of a ``norm-preservation`` study: depths, probe examples, which units are
    tracked over training, the band around 1."""

    #: Depths of the residual and the plain net (each trained once per seed).
    depths: tuple = setting((20, 56, 110), list_of(integer(1), "depths 6n + 2"))
    #: Depths of the Procrustes net (the ``procrustes`` role), if the spec gives one.
    procrustes_depths: tuple = setting((110,), list_of(integer(1), "depths 6n + 2"))
    #: Depths of the authors' bottleneck ProcResNet (the ``procrustes_authors`` role), if the spec gives one.
    authors_depths: tuple = setting((112,), list_of(integer(1), "depths 9n + 4"))
    #: Half-width of the authors' band [1 - delta, 1 + delta] (their norm-preservation definition).
    delta: float = setting(0.1, number(0, open_low=True))
    #: Training examples (one batch) on which the gradient-norm ratios are measured after training.
    ratio_batch: int = setting(128, integer(1))
    #: Test examples at which every unit's spectrum is measured after training.
    probe_size: int = setting(4, integer(1))
    #: Units per net measured when training begins and after every epoch: every transition unit
    #: and evenly spaced identity units; 0 measures all.
    track_units: int = setting(8, integer(0))
    #: Test examples (the first of the probe) at which the tracked units are measured.
    track_probe: int = setting(1, integer(1))
    #: Training examples that set the BatchNorm statistics before each measurement.
    calibration_size: int = setting(512, integer(1))
    #: Half-width of the band |log sigma| <= band around 1: the margin of the "near 1" claims.
    band: float = setting(0.1, number(0, open_low=True))
    #: Rounds of clip-and-restrict per projection of the Procrustes net's transitions.
    procrustes_iterations: int = setting(1, integer(1))
    n_boot: int = setting(1000, integer(10))

#: Histogram bins of log10 sigma for the spectra figure, 0.05 wide with 1 at a bin's centre
#: (values below the first edge go into the first bin: the zero singular values of plain units).
BINS = np.round(np.arange(-4.025, 1.5251, 0.05), 4)
_KEYS = ["seed", "model", "depth", "net", "unit", "name", "transition"]


def _ratios_per_unit(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per unit of one net: the gradient-norm ratio over the whole batch and its spread over examples."""
    g = ratios.groupby(["unit", "name", "projection"], sort=False)
    return pd.DataFrame({
        "ratio": np.sqrt(g.grad_in.apply(lambda v: float((v ** 2).sum())) / g.grad_out.apply(lambda v: float((v ** 2).sum()))),
        "ratio_median": g.ratio.median(), "ratio_min": g.ratio.min(), "ratio_max": g.ratio.max(),
    }).reset_index().rename(columns={"projection": "transition"})


def tracked_units(units, n: int) -> list[int]:
    """Every transition unit and up to ``n`` minus their number identity units, evenly spaced
    (the first and the last included); all units when ``n`` is 0 or at least their number.

    Examples
    --------
    >>> import unravel
    >>> from unravel.studies.norm_preservation.measure import tracked_units
    >>> units = unravel.find_units(unravel.models.preact_resnet_cifar(56, width=2, dims=1))
    >>> tracked_units(units, 6)
    [0, 8, 9, 17, 18, 26]
    """
    indices = [u.index for u in units]
    if n == 0 or n >= len(indices):
        return indices
    transitions = [u.index for u in units if u.projection]
    identity = [u.index for u in units if not u.projection]
    k = min(max(n - len(transitions), 1), len(identity))
    picks = {identity[round(i * (len(identity) - 1) / max(k - 1, 1))] for i in range(k)} if identity else set()
    return sorted(set(transitions) | picks)


def _wrong(model, data, device) -> np.ndarray:
    """Per test example, whether ``model`` gets it wrong (eval mode)."""
    out = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in train.as_loader(data, 512, split="test"):
                out.append((model(x.to(device)).argmax(1).cpu() != y).numpy())
    finally:
        model.train(was)
    return np.concatenate(out)


def _histogram(full: pd.DataFrame) -> pd.DataFrame:
    """Histogram of log10 sigma per unit type (identity, transition) of one net's full spectra:
    per bin its centre, its count, and the share of values below its upper edge."""
    rows = []
    for transition, g in full.groupby("projection"):
        v = np.log10(np.maximum(g.singular_value.to_numpy(np.float64), 10.0 ** BINS[0]))
        counts, _ = np.histogram(np.clip(v, BINS[0], BINS[-1]), bins=BINS)
        rows.append(pd.DataFrame({"units": "transition" if transition else "identity",
                                  "log10_sigma": (BINS[:-1] + BINS[1:]) / 2, "upper": BINS[1:], "count": counts,
                                  "share_below": np.cumsum(counts) / max(counts.sum(), 1)}))
    return pd.concat(rows, ignore_index=True)


def _per_unit(final: pd.DataFrame):
    """One row per net and unit with ``dev`` and ``within`` averaged over the probe examples, and
    the per-example ``dev`` ([rows, examples]) as items."""
    dev = final.pivot_table(index=_KEYS, columns="example", values="dev", sort=False)
    within = final.groupby(_KEYS, sort=False).within.mean().reindex(dev.index)
    frame = dev.index.to_frame(index=False).assign(dev=dev.mean(axis=1).to_numpy(), within=within.to_numpy())
    return frame, dev.to_numpy(np.float64)


def _unit_levels(frame: pd.DataFrame, transition: bool) -> pd.DataFrame:
    """Per seed, net and epoch: the median dev over the (tracked) units of one type."""
    f = frame[frame.transition == transition]
    return f.groupby(["seed", "net", "model", "depth", "epoch"], as_index=False).dev.median()


def _at_start(tracked: pd.DataFrame, transition: bool) -> dict:
    f = _unit_levels(tracked[tracked.epoch == 0], transition)
    return {k: round(float(v), 4) for k, v in f.groupby("net").dev.mean().items()}


def run_norm_preservation(ctx) -> list:
    """Zaeemzadeh et al.: Jacobian spectra per unit over training, identity against transition
    units, residual against plain nets, Procrustes against plain ResNets; every seed."""

    a = ctx.analysis
    x, _ = ctx.probe(a.probe_size)
    calibration = ctx.data.batch(a.calibration_size, split="train")[0].to(ctx.device)
    chunk = 64 if ctx.device.type == "cpu" else None
    xr, yr = (t.to(ctx.device) for t in ctx.data.batch(a.ratio_batch, split="train"))
    nets = [(role, d) for d in a.depths for role in ("residual", "plain")]
    if "procrustes" in ctx.spec.models:
        nets += [("procrustes", d) for d in a.procrustes_depths]
    if "procrustes_authors" in ctx.spec.models:
        nets += [("procrustes_authors", d) for d in a.authors_depths]
    hist, tracked, final, dens, errors, wrong, costs, bands, ratios = [], [], [], [], [], [], [], [], []
    for seed in ctx.seed_bar("seeds"):
        for role, depth in nets:
            tag = {"seed": seed, "model": role, "depth": depth, "net": f"{role}-{depth}"}
            model = ctx.model(role, seed, depth=depth)
            callbacks = {"procrustes": [ProcrustesCallback(x[:1], iterations=a.procrustes_iterations)],
                         "procrustes_authors": [ProcrustesCallback(x[:1], recipe="authors", seed=seed)]}.get(role, [])
            tracker = SpectraTracker(x[:a.track_probe], calibration=calibration, band=a.band, chunk_size=chunk,
                                     units=tracked_units(find_units(model), a.track_units))
            start = time.perf_counter()
            h = ctx.fit(model, callbacks=[*callbacks, tracker], seed=seed).to_frame()
            fitted = time.perf_counter()
            net = recalibrated(model, calibration)
            band, full = measure_norm_preservation(net, x, delta=a.delta, return_spectra=True, chunk_size=chunk)
            summary = spectrum_summary(full, band=a.band)
            measured = time.perf_counter()
            ratios.append(_ratios_per_unit(gradient_norm_ratios(net, xr, yr)).assign(**tag))
            costs.append({**tag, "train_s": float(h.seconds.sum()), "track_s": fitted - start - float(h.seconds.sum()),
                          "final_spectra_s": measured - fitted, "gradient_ratios_s": time.perf_counter() - measured})
            bands.append(band.assign(**tag))
            hist.append(h.assign(**tag))
            tracked.append(tracker.to_frame().assign(**tag))
            final.append(summary.assign(**tag))
            dens.append(_histogram(full).assign(**tag))
            w = _wrong(model, ctx.data, ctx.device)
            errors.append({**tag, "error": float(w.mean())})
            wrong.append(w)
    hist = ctx.frame("train", pd.concat(hist, ignore_index=True))
    ctx.frame("costs", pd.DataFrame(costs))
    tracked = pd.concat(tracked, ignore_index=True).rename(columns={"projection": "transition"})
    ctx.frame("spectra_tracked", tracked)
    final = pd.concat(final, ignore_index=True).rename(columns={"projection": "transition"})
    ctx.frame("spectra_final", final)
    ctx.frame("norm_final", pd.concat(bands, ignore_index=True).rename(columns={"projection": "transition"}))
    ctx.frame("gradient_ratios", pd.concat(ratios, ignore_index=True))
    units, items = _per_unit(final)
    ctx.frame("units_final", units)
    ctx.items("units_final", items)
    dens = ctx.frame("spectrum_histogram", pd.concat(dens, ignore_index=True))
    errors = ctx.frame("errors", pd.DataFrame(errors))
    ctx.items("errors", np.stack(wrong))
    _figures(ctx, hist, tracked, units, dens, a)

    t = Trials(units, items, value="dev")
    e = Trials(errors, np.stack(wrong), value="error")
    start = {"median_at_initialisation_tracked_identity_units": _at_start(tracked, False)}
    start_t = {"median_at_initialisation_tracked_transition_units": _at_start(tracked, True)}
    out = [nc.claim_identity_near_one(t, margin=a.band, n_boot=a.n_boot, measured=start),
           nc.claim_deeper_concentrates(t, n_boot=a.n_boot, measured=start),
           nc.claim_transition_farther(t, n_boot=a.n_boot, measured=start_t),
           nc.claim_plain_farther(t, n_boot=a.n_boot, measured=start)]
    if "procrustes" in ctx.spec.models:
        out += [nc.claim_procrustes_transitions(t, n_boot=a.n_boot, measured=start_t),
                nc.claim_procrustes_near_one(t, margin=a.band, n_boot=a.n_boot, measured=start_t),
                nc.claim_procrustes_not_worse(e, chance=1.0 - 1.0 / ctx.data.num_classes, n_boot=a.n_boot)]
    return out


def _figures(ctx, hist, tracked, units, dens, a) -> None:
    dev = "median |log singular value|"
    ctx.figure("identity_over_training", plots.by_epoch(_unit_levels(tracked, False), "dev", style="depth", log=True,
                                                        ylabel=dev),
               "Identity units: the median over the tracked units of each net of the median abs(log sigma) of their "
               "Jacobian's singular values, when training begins (epoch 0) and after every epoch; mean and 95% interval "
               "over seeds (0 is exact norm preservation)")
    ctx.figure("transition_over_training", plots.by_epoch(_unit_levels(tracked, True), "dev", style="depth", log=True,
                                                          ylabel=dev),
               "Transition units (where the resolution halves and the width doubles), as above: residual, plain and "
               "Procrustes nets")
    deepest = units[units.depth == units.groupby("model").depth.transform("max")]
    ctx.figure("units_final", plots.unit_spectra(deepest, ylabel=dev),
               "After training, per unit of the deepest net of each kind: median abs(log sigma) (mean and 95% interval "
               "over seeds and probe examples); open circles: transition units")
    deep = dens[dens.depth == dens.groupby("model").depth.transform("max")]
    ctx.figure("spectra_final", plots.spectrum_distribution(deep.assign(log10_sigma=deep.upper)),
               "After training, the cumulative distribution of the singular values of identity and transition units "
               "of the deepest net of each kind (pooled over units and probe examples, mean over seeds; values below "
               "1e-4, zeros included, at the left end)")
    ctx.figure("training_curves", plots.by_epoch(hist, "test_error", style="depth", ylabel="test error"),
               "Test error over training, mean and 95% interval over seeds")
    proc = hist[hist.model == "procrustes"]
    if len(proc):
        pair = hist[(hist.model != "plain") & hist.depth.isin(proc.depth.unique())]
        ctx.figure("procrustes_training", plots.by_epoch(pair, "test_error", style="depth", ylabel="test error"),
                   "Procrustes ResNet against the ResNet of the same depth: test error over training, mean and 95% "
                   "interval over seeds")
