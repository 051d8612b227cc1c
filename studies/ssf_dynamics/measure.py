"""The ``ssf-dynamics`` study kind: shallow subnetworks first (Neural Networks 148, 2022), measured
over training at step resolution.

For every seed it trains the spec's ResNet, DenseNet and SE-ResNet, recording at log-spaced steps
in the first epoch and after every epoch: the exact path-length histogram of the parameter
gradient in train mode on a fixed probe of training examples, per parameter group (units, stem,
head); the errors of random subnetworks, their BatchNorm statistics recalibrated on training
data; and the same for shallow ResNets trained alone. Nothing here checks that the models are
large or trained long enough to stand for the paper's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd

from unravel import plots
from unravel.study.schema import integer, list_of, number, setting
from unravel.study.stats import Trials, trials_from
from unravel.tracking import PathLengthTracker, SubnetworkTracker, log_spaced_steps
from unravel.units import find_units

from . import claims as ssf_claims

__all__ = ["SsfDynamicsAnalysis", "run_ssf_dynamics"]


@dataclass(frozen=True)
class SsfDynamicsAnalysis:
    """``analysis:`` of an ``ssf-dynamics`` study: the probe, the record steps, the random
    subnetworks and the shallow nets trained alone."""

    #: Training examples in the probe batch the histograms are recorded on, in train mode (its
    #: batch statistics, as training sees them): best the training batch size.
    probe_size: int = setting(64, integer(1))
    #: Ratio between record steps in the first epoch (``log_spaced_steps``): 2 records after
    #: steps 1, 2, 4, 8, ...; then after every epoch.
    log_base: float = setting(2.0, number(1, open_low=True))
    #: Units kept by the ResNet's random subnetworks, as fractions of its units (1: the whole net).
    subnetwork_fractions: tuple = setting((0.25, 0.5, 0.75, 1.0),
                                           list_of(number(0, 1, open_low=True), "fractions in (0, 1]"))
    subnetwork_samples: int = setting(3, integer(1))
    #: Training examples the subnetworks' BatchNorm statistics are recalibrated on.
    calibration_examples: int = setting(1024, integer(1))
    #: Test examples every error is measured on.
    eval_examples: int = setting(1000, integer(1))
    #: Depths of the ResNet trained alone beside the spec's (the shallow nets); empty: none.
    shallow_depths: tuple = setting((8, 14), list_of(integer(1), "depths"))
    n_boot: int = setting(1000, integer(10))

ROLES = ("resnet", "densenet", "se_resnet")


def _run(ctx, model, role, seed, steps, probe, evaluation, sizes, histograms=True):
    """Train one model with the trackers; its frames and what the records cost (the histogram
    records' seconds over the rest of the run, both trackers' records taken out)."""
    a = ctx.analysis
    paths = PathLengthTracker(probe, steps=steps, mode="train", by_group=True) if histograms else None
    subs = SubnetworkTracker(evaluation, ctx.data, sizes, samples=a.subnetwork_samples, steps=steps, seed=seed,
                             calibration_examples=a.calibration_examples)
    start = time.perf_counter()
    hist = ctx.fit(model, callbacks=([paths] if paths else []) + [subs], seed=seed).to_frame()
    wall = time.perf_counter() - start
    paths_s = paths.seconds if paths else 0.0
    cost = {"seed": seed, "model": role, "wall_s": wall, "histogram_records_s": paths_s,
            "subnetwork_records_s": subs.seconds, "records": len(steps),
            "histogram_overhead": paths_s / max(wall - paths_s - subs.seconds, 1e-9)}
    return hist, paths.to_frame() if paths else None, subs.to_frame(), subs.items(), cost


def run_ssf_dynamics(ctx) -> list:
    """Shallow subnetworks first: path-length histograms, recalibrated subnetworks and shallow
    nets trained alone, at log-spaced steps over training; every seed."""
    a, t, data = ctx.analysis, ctx.spec.train, ctx.data
    per_epoch = math.ceil(len(data.train) / t.batch_size)
    steps = log_spaced_steps(per_epoch, t.epochs, a.log_base)
    x, y = data.batch(a.probe_size, split="train")
    probe = (x.to(ctx.device), y.to(ctx.device))
    evaluation = tuple(v[: a.eval_examples] for v in data.test.tensors)
    roles = [r for r in ROLES if r in ctx.spec.models]
    paths, subs, curves, hist, costs, counts = [], [], [], [], [], {}
    for seed in ctx.seed_bar("seeds"):
        for role in roles:
            model = ctx.model(role, seed)
            n = len(find_units(model))
            counts[role] = {"units": n, "parameters": sum(p.numel() for p in model.parameters())}
            sizes = sorted({max(1, int(round(f * n))) for f in a.subnetwork_fractions} | {n}) if role == "resnet" \
                else [n]
            h, pf, sf, items, cost = _run(ctx, model, role, seed, steps, probe, evaluation, sizes)
            hist.append(h.assign(model=role, seed=seed))
            paths.append(pf.assign(model=role, seed=seed, units=n))
            subs.append((sf.assign(model=role, seed=seed, units=n), items))
            costs.append(cost)
            if role == "resnet":  # the deep net's own curve, beside the shallow nets'
                whole = (sf.subnetwork_units == n).to_numpy()
                curves.append((sf[whole].assign(model=role, seed=seed, units=n), items[whole]))
        for depth in a.shallow_depths:
            model = ctx.model("resnet", seed, depth=depth)
            n = len(find_units(model))
            name = f"resnet-{depth}"
            counts[name] = {"units": n, "parameters": sum(p.numel() for p in model.parameters())}
            h, _, sf, items, cost = _run(ctx, model, name, seed, steps, probe, evaluation, [n], histograms=False)
            hist.append(h.assign(model=name, seed=seed))
            curves.append((sf.assign(model=name, seed=seed, units=n), items))
            costs.append(cost)
    ctx.frame("train", pd.concat(hist, ignore_index=True))
    cost = ctx.frame("record_cost", pd.DataFrame(costs))
    paths = ctx.frame("paths", pd.concat(paths, ignore_index=True).assign(epochs=lambda d: d.step / per_epoch))
    units = paths[paths.group == "units"]
    sub_t = trials_from([(f.assign(epochs=f.step / per_epoch), w) for f, w in subs])
    ctx.frame("subnetworks", sub_t.frame)
    ctx.items("subnetworks", sub_t.items.astype(bool))
    curve_t = trials_from([(f.assign(epochs=f.step / per_epoch), w) for f, w in curves]) if curves else None
    if curve_t is not None:
        ctx.frame("shallow_nets", curve_t.frame)
        ctx.items("shallow_nets", curve_t.items.astype(bool))
    _figures(ctx, paths, units, sub_t.frame, curve_t, roles)
    return _claims(ctx, units, sub_t, curve_t, roles, counts, cost, data.num_classes)


def _figures(ctx, paths, units, subs, curve_t, roles):
    ctx.figure("mean_length", plots.over_training(units.assign(relative=units.mean_length / units.units),
                                                  "relative", hue="model", ylabel="mean path length / units"),
               "The gradient's mean path length over the number of units (units' parameters only, train mode, "
               "fixed probe), over training steps; line: mean over seeds, band: lowest to highest seed")
    for role in roles:
        ctx.figure(f"heatmap_{role}", plots.length_heatmap(units[units.model == role], index="step"),
                   f"{role}: share of the units' parameter gradient by path length at each recorded step (mean over "
                   "seeds)")
    groups = paths[(paths.model == "resnet") & paths.group.isin(["units", "stem", "head", "all"])]
    ctx.figure("groups_resnet", plots.over_training(groups, "mean_length", hue="group",
                                                    ylabel="mean path length"),
               "resnet: the mean path length of each parameter group's gradient (the head carries length 0 "
               "only, the stem every length; 'all' mixes them, as the first version of this study did)")
    res = subs[subs.model == "resnet"]
    ctx.figure("subnetworks_resnet", plots.over_training(res, "error", hue="subnetwork_units",
                                                         ylabel="test error (BN recalibrated)"),
               "resnet: test error of random subnetworks keeping k units (BatchNorm statistics recalibrated on "
               "training data), over training; mean over draws, band over seeds")
    if curve_t is not None:
        ctx.figure("shallow_nets", plots.over_training(curve_t.frame, "error", hue="units",
                                                       ylabel="test error"),
                   "ResNets of different numbers of units, each trained alone the same way: test error over "
                   "training; band over seeds")
    others = [r for r in roles if r != "resnet"]
    if others:
        rows = []
        for role in others:
            for seed, g in units[units.model.isin(["resnet", role])].groupby("seed"):
                tv = ssf_claims._tv_by_step(g, "resnet", role)
                rows += [{"seed": seed, "step": s, "pair": f"resnet vs {role}", "tv": v} for s, v in tv.items()]
        tv = ctx.frame("histogram_distance", pd.DataFrame(rows))
        ctx.figure("histogram_distance", plots.over_training(tv, "tv", hue="pair", ylabel="total variation"),
                   "Total-variation distance between the path-length histograms of ResNet and each other net at "
                   f"every record; the claims' margin is {ssf_claims.TV_MARGIN}")


def _claims(ctx, units, sub_t, curve_t, roles, counts, cost, num_classes):
    a = ctx.analysis
    chance = 1.0 - 1.0 / num_classes
    res = sub_t.frame.model.to_numpy() == "resnet"
    final = sub_t.frame[res & (sub_t.frame.subnetwork_units == sub_t.frame.units).to_numpy()]
    worst = float(final[final.step == final.step.max()].error.max())
    trained = (worst < chance / 2, f"the ResNet did not train: its final error {worst:.3f} is not below half the "
                                   f"chance error {chance:.2f}")
    subs = Trials(sub_t.frame[res].reset_index(drop=True), sub_t.items[res], draws=["subnetwork_units"],
                  cluster="draw")
    records = units[units.model == "resnet"].groupby(["seed", "step"], as_index=False).agg(
        epochs=("epochs", "first"), mean_length=("mean_length", "first"), units=("units", "first"))
    overhead = cost[cost.histogram_records_s > 0].groupby("model").histogram_overhead.mean().round(4).to_dict()
    out = [ssf_claims.claim_subnetworks_first(subs, n_boot=a.n_boot, requires=[trained]),
           ssf_claims.claim_short_paths_early(Trials(records), n_boot=a.n_boot)]
    out[-1]["measured"]["histogram_record_overhead_by_model"] = overhead
    if curve_t is not None and curve_t.frame.units.nunique() >= 2:
        out.insert(1, ssf_claims.claim_shallow_nets_first(curve_t, n_boot=a.n_boot, requires=[trained]))
    hist = units[["seed", "model", "step", "length", "share", "units"]]
    for role, claim in (("densenet", ssf_claims.claim_histograms_differ), ("se_resnet", ssf_claims.claim_histograms_alike)):
        if role not in roles:
            continue
        pa, pb = counts["resnet"]["parameters"], counts[role]["parameters"]
        matched = [(abs(pb / pa - 1) <= 0.1, f"the parameter counts differ by more than 10% ({pa:,} against "
                                             f"{pb:,}): size the nets alike")] if role == "densenet" else []
        c = claim(Trials(hist[hist.model.isin(["resnet", role])].reset_index(drop=True)), "resnet", role,
                  n_boot=a.n_boot, requires=matched)
        c["measured"]["parameters"] = {"resnet": pa, role: pb}
        out.append(c)
    for c in out:
        c["measured"]["models"] = counts
    return out
