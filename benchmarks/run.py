"""unravel's benchmarks: ratios measured side by side in one run.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--json FILE] [--only NAME ...]

Cases (see the README's performance section for the figures and goals):

1. protocol   Veit's magnitude, the same quantity both ways (issue 28): the paper's protocol (one
              forward of the batch and one masked backward per measured path) vs unravel's stacked
              estimator, on the same paths and batch of the 1-D ResNet-110 (goal >= 3x on 2 CPU
              cores); rounds interleave the two. The exact (net) histogram timed for scale.
2. overhead   exact histogram vs one forward+backward of the same batch (goal <= 11x at 54 units and
              batch 64 on a 2-core CPU, <= 5x on a GPU), with the code before issue 29 (the frozen
              copy in ``benchmarks/_before``) timed in the same rounds: rounds interleave one
              forward+backward (median of 3), the old and the new histogram; the median over rounds.
3. lesion     lesion engine vs the naive loop (deep copy, delete, full forward): delete_each
              (goal >= 1.8x) and delete_random for k = 1..20.
4. memory     peak memory of the exact histogram vs one forward+backward (each in a fresh process: its
              high-water mark less the mark after the model and batch were made), with the default
              settings, the code before issue 29, chunk_size and batch_size.
5. tracker    the ssf-dynamics study's ResNet trained with its step-level histogram records vs without
              (goal <= 10% extra); its recalibrated-subnetwork records reported apart.
6. scaling    exact histogram time as the number of units grows, before and after issue 29; the
              exponent of a power fit.
7. transformers  ViT-S- and GPT-2-small-shaped models: the exact histogram and delete_each.
8. jacobian   ``jacobian_spectra(top=8)`` (Lanczos, every unit) vs one forward+backward of the same
              model and batch. Not run by default (minutes on a CPU): ``--only jacobian``.

``--quick`` runs every case on tiny settings: a smoke test of the harness, no goals checked.
Timings use ``torch.utils.benchmark.Timer`` (median of ``blocked_autorange``) where a case is
short, and the mean of a fixed number of ``perf_counter``-timed runs after one warm-up where it
takes seconds to minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import unravel  # noqa: E402
from unravel import attribution, models, study, sweeps, train  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import _before  # noqa: E402  (the exact histogram before issue 29, frozen)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, runs=None, min_run_time=1.0, warmup=True):
    """Seconds per call: the mean of ``runs`` timed calls after one warm-up, or
    ``torch.utils.benchmark``'s ``blocked_autorange`` median (short cases). Fixed runs are
    timed with ``perf_counter`` (synchronised on a GPU): ``Timer.timeit`` would add two warm-up
    calls, minutes each for the long cases."""
    if warmup:
        fn()
        _sync(device)
    if runs is None:
        # Timer runs single-threaded unless told otherwise: use the threads torch would use
        t = benchmark.Timer(stmt="fn(); sync()", globals={"fn": fn, "sync": lambda: _sync(device)},
                            num_threads=torch.get_num_threads())
        return t.blocked_autorange(min_run_time=min_run_time).median
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / runs


def _batch(n, shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + shape, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def _trained_like(model):
    """Non-trivial BN statistics, so eval-mode units are not near-identity maps."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _fwd_bwd(model, x, y):
    def run():
        xr = x.detach().requires_grad_()
        loss = F.cross_entropy(model(xr), y)
        torch.autograd.grad(loss, [xr] + [p for p in model.parameters() if p.requires_grad])
    return run


def _single_path(model, units, x, y, path):
    """Veit et al.'s protocol for one path: one forward of the batch, one backward through the
    path (``unravel.attribution.magnitude.single_path_norm``)."""
    return unravel.attribution.magnitude.single_path_norm(model, x, y, path)


def _stacked(model, units, x, y, paths):
    """unravel's estimator of the same single-path norms: one recorded forward, the paths'
    gradients propagated together (:func:`unravel.attribution.sample.path_norms`)."""
    from unravel.attribution._record import analysis_mode, prepare, record
    from unravel.attribution.sample import path_norms

    inputs, loss_fn = prepare(model, x, y, None)
    with analysis_mode(model, "eval"):
        records, _, L = record(model, units, inputs, y, loss_fn, fold=True)
        return path_norms(records, L, paths)


def case_protocol(cfg, device):
    """The same quantity both ways: Veit's single-path gradient norms, measured on the same paths
    and batch by the paper's protocol (a forward and a masked backward per path) and by unravel's
    stacked estimator; rounds interleave the two, the ratio is the median over rounds."""
    torch.manual_seed(0)
    model = _trained_like(models.resnet_cifar(cfg["depth"], in_channels=1, dims=1)).to(device)
    units = unravel.find_units(model)
    n = len(units)
    x, y = _batch(cfg["batch"], (1, 40), device)
    g = unravel.unravel(units)
    counts = g.length_counts()
    per = cfg["paths_per_length"]
    paths = [p for k in range(n + 1)
             for p in (list(g.paths(k)) if counts[k] <= per else g.sample_paths(k, per, generator=k))]
    load = [os.getloadavg()]
    exact = _time(lambda: attribution.path_length_gradients(model, x, y), device, runs=1)
    _single_path(model, units, x, y, paths[-1]), _stacked(model, units, x, y, paths[:8])  # warm-up
    rounds = []
    for _ in range(cfg["rounds"]):
        start = time.perf_counter()
        proto = [_single_path(model, units, x, y, p) for p in paths]
        _sync(device)
        t_proto = time.perf_counter() - start
        start = time.perf_counter()
        stacked = _stacked(model, units, x, y, paths)
        _sync(device)
        t_stacked = time.perf_counter() - start
        rounds.append({"protocol_s": t_proto, "stacked_s": t_stacked, "ratio": t_proto / t_stacked})
        load.append(os.getloadavg())
    proto, stacked = torch.tensor(proto, dtype=torch.float64), stacked
    both = proto > 0
    rel = float(((proto - stacked).abs()[both] / proto[both]).max()) if both.any() else 0.0
    used_1000 = sum(min(c, 1000) for c in counts)
    ratio = float(np.median([r["ratio"] for r in rounds]))
    t_stacked = float(np.median([r["stacked_s"] for r in rounds]))
    t_proto = float(np.median([r["protocol_s"] for r in rounds]))
    return {"units": n, "model": f"resnet_cifar({cfg['depth']}, in_channels=1, dims=1), untrained weights, random "
                                  "BN running statistics", "batch": cfg["batch"], "input": "(1, 40), Gaussian",
            "paths_measured": len(paths), "paths_per_length": per, "rounds": rounds,
            "protocol_s_per_path": t_proto / len(paths), "stacked_s_per_path": t_stacked / len(paths),
            "ratio_protocol_over_stacked": ratio, "goal_ratio_at_least": 3,
            "max_relative_difference_of_norms": rel, "zero_norms_protocol": int((proto == 0).sum()),
            "zero_norms_stacked": int((stacked == 0).sum()),
            "paths_at_1000_per_length": used_1000,
            "protocol_s_extrapolated_1000": t_proto / len(paths) * used_1000,
            "stacked_s_extrapolated_1000": t_stacked / len(paths) * used_1000,
            "exact_net_quantity_s": exact, "load_average_1_5_15": load,
            "note": "the same paths on the same batch both ways; the net quantity (exact) is a different one, "
                    "timed for scale only"}


def case_overhead(cfg, device):
    model = _trained_like(models.resnet_cifar(cfg["depth"])).to(device)
    x, y = _batch(cfg["batch"], (3, 32, 32), device)
    fwd_bwd = _fwd_bwd(model, x, y)
    runs = {"fwd_bwd": [], "before": [], "exact": []}
    calls = {"before": lambda: _before.path_length_gradients(model, x, y),
             "exact": lambda: attribution.path_length_gradients(model, x, y)}
    fwd_bwd(), calls["before"](), calls["exact"]()  # warm-up
    for _ in range(cfg["rounds"]):  # interleaved, so that a slow spell of the machine hits all three
        runs["fwd_bwd"].append(float(np.median([_time(fwd_bwd, device, runs=1, warmup=False) for _ in range(3)])))
        for name, call in calls.items():
            runs[name].append(_time(call, device, runs=1, warmup=False))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    per_round = {k: [t / f for t, f in zip(runs[k], runs["fwd_bwd"])] for k in calls}
    out = {"units": len(unravel.find_units(model)), "batch": cfg["batch"], "rounds": cfg["rounds"],
           "forward_backward_s": med["fwd_bwd"], "exact_s": med["exact"], "before_s": med["before"],
           "ratio_exact_over_fwd_bwd": med["exact"] / med["fwd_bwd"],
           "ratio_before_over_fwd_bwd": med["before"] / med["fwd_bwd"],
           "ratio_exact_over_fwd_bwd_per_round": per_round["exact"],
           "ratio_before_over_fwd_bwd_per_round": per_round["before"],
           "speedup_before_over_exact": med["before"] / med["exact"],
           "goal_ratio_at_most": 11 if device.type == "cpu" else 5, "before_revision": _before.REVISION,
           "runs_s": runs,
           "how": "each round: one forward+backward (the median of 3), the histogram before issue 29 (frozen copy), "
                  "the histogram now; ratios are medians over rounds (and per round)"}
    if device.type == "cuda":  # the default batches channels on a GPU: against one channel per VJP
        one = _time(lambda: attribution.path_length_gradients(model, x, y, chunk_size=1), device, runs=1)
        out.update(exact_chunk_1_s=one, ratio_exact_chunk_1_over_fwd_bwd=one / med["fwd_bwd"])
    return out


def case_lesion(cfg, device):
    model = _trained_like(models.resnet_cifar(cfg["depth"])).to(device)
    x, y = _batch(cfg["inputs"], (3, 32, 32), device)
    out = {"units": len(unravel.find_units(model)), "inputs": cfg["inputs"]}
    kw = dict(batch_size=cfg["lesion_batch"], progress=False)
    # minutes per call: the sweeps are their own warm-up (one small warm-up call first)
    sweeps.delete_each(model, (x[:8], y[:8]), **kw)
    fast = _time(lambda: sweeps.delete_each(model, (x, y), **kw), device, runs=1, warmup=False)
    naive = _time(lambda: sweeps.delete_each(model, (x, y), method="naive", **kw), device, runs=1, warmup=False)
    out.update(delete_each_fast_s=fast, delete_each_naive_s=naive, delete_each_speedup=naive / fast,
               goal_delete_each_speedup_at_least=1.8)
    ks = list(range(1, cfg["max_k"] + 1))
    kw2 = dict(ks=ks, samples_per_k=cfg["samples_per_k"], seed=0, **kw)
    fast = _time(lambda: sweeps.delete_random(model, (x, y), **kw2), device, runs=1, warmup=False)
    naive = _time(lambda: sweeps.delete_random(model, (x, y), method="naive", **kw2), device, runs=1, warmup=False)
    out.update(delete_random_ks=f"1..{cfg['max_k']}", delete_random_samples_per_k=cfg["samples_per_k"],
               delete_random_fast_s=fast, delete_random_naive_s=naive, delete_random_speedup=naive / fast)
    return out


_MEMORY_SCRIPT = r"""
import resource, sys, json, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/benchmarks")
import torch.nn.functional as F
from unravel import attribution, models
import _before
torch.set_num_threads({threads})
torch.manual_seed(0)
model = models.resnet_cifar({depth}).eval().to({device!r})
x = torch.randn({batch}, 3, 32, 32, device={device!r}); y = torch.randint(0, 10, ({batch},), device={device!r})
mode = {mode!r}
def peak():
    if {device!r}.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    try:  # this process's own high-water mark (ru_maxrss keeps the forking parent's across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = peak()
if {device!r}.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
if mode == "fwd_bwd":
    xr = x.requires_grad_(); loss = F.cross_entropy(model(xr), y)
    torch.autograd.grad(loss, [xr] + list(model.parameters()))
elif mode == "before":
    _before.path_length_gradients(model, x, y, chunk_size={chunk}, batch_size={split})
else:
    attribution.path_length_gradients(model, x, y, chunk_size={chunk}, batch_size={split})
print(json.dumps(peak() - base))
"""


def case_memory(cfg, device):
    out = {"units": len(unravel.find_units(models.resnet_cifar(cfg["depth"]))), "batch": cfg["batch"],
           "how": "each configuration in a fresh process: its peak RSS (VmHWM, CPU) or peak allocated memory (CUDA) "
                  "less the same measure after the model and the batch were made, in MiB; 'exact' is the default "
                  "settings, 'before' the code before issue 29 (frozen copy) with its defaults"}
    split = max(1, cfg["batch"] // 4)
    for label, mode, chunk, part in [("fwd_bwd", "fwd_bwd", None, None), ("exact", "exact", None, None),
                                     ("before", "before", None, None),
                                     (f"exact_batch_size_{split}", "exact", None, split)]:
        script = _MEMORY_SCRIPT.format(root=str(ROOT), depth=cfg["depth"], device=str(device), batch=cfg["batch"],
                                       mode=mode, chunk=chunk, split=part, threads=torch.get_num_threads())
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        out[f"{label}_mib"] = json.loads(proc.stdout.strip().splitlines()[-1]) / 2**20
    for label in ("exact", "before", f"exact_batch_size_{split}"):
        out[f"ratio_{label}_over_fwd_bwd"] = out[f"{label}_mib"] / max(out["fwd_bwd_mib"], 1e-9)
    out["goal_ratio_exact_at_most"] = 2
    return out


def case_tracker(cfg, device):
    """The ssf-dynamics study's ResNet trained as the study trains it, without records, with its
    step-level histogram records, and (once) with its recalibrated-subnetwork records."""
    from unravel.tracking import PathLengthTracker, SubnetworkTracker, log_spaced_steps

    spec = study.load_spec(cfg["study"], quick=cfg.get("quick", False))
    checked = study.parse_spec(spec)
    t, a = checked.train, checked.analysis
    data = checked.data.load()
    mspec = dict(spec["models"]["resnet"])
    per_epoch = -(-len(data.train) // t.batch_size)
    steps = log_spaced_steps(per_epoch, t.epochs, a.log_base)
    probe = tuple(v.to(device) for v in data.batch(a.probe_size, split="train"))

    def run(kind):
        torch.manual_seed(0)
        model = study.build_model(mspec, data).to(device)
        n = len(unravel.find_units(model))
        if kind == "histograms":
            cbs = [PathLengthTracker(probe, steps=steps, mode="train", by_group=True)]
        elif kind == "subnetworks":
            sizes = sorted({max(1, int(round(f * n))) for f in a.subnetwork_fractions} | {n})
            cbs = [SubnetworkTracker(tuple(v[: a.eval_examples] for v in data.test.tensors), data, sizes,
                                     samples=a.subnetwork_samples, steps=steps, calibration_examples=a.calibration_examples)]
        else:
            cbs = []
        start = time.perf_counter()
        train.fit(model, data, epochs=t.epochs, optimizer=t.optimizer, lr=t.lr, batch_size=t.batch_size,
                  weight_decay=t.decay, schedule=t.schedule, device=device, callbacks=cbs, progress=False)
        _sync(device)
        return time.perf_counter() - start, (cbs[0].seconds if cbs else 0.0)

    run(None)  # warm-up
    plain, tracked = [], []
    for _ in range(cfg["repeats"]):  # interleaved, so that a slow spell of the machine hits both
        plain.append(run(None)[0])
        tracked.append(run("histograms"))
    best = min(tracked)
    subs = run("subnetworks")
    return {"study": cfg["study"], "quick": cfg.get("quick", False), "model": mspec, "epochs": t.epochs,
            "batch_size": t.batch_size, "train_examples": len(data.train), "steps_per_epoch": per_epoch,
            "probe": a.probe_size, "records": len(steps), "record_steps": steps, "repeats": cfg["repeats"],
            "train_s": min(plain), "train_with_histograms_s": best[0], "histogram_records_s": best[1],
            "overhead_end_to_end": best[0] / min(plain) - 1,
            "overhead": best[1] / (best[0] - best[1]), "goal_overhead_at_most": 0.10,
            "train_with_subnetworks_s": subs[0], "subnetwork_records_s": subs[1],
            "subnetwork_overhead": subs[1] / (subs[0] - subs[1]),
            "tracker": "PathLengthTracker(steps=log_spaced_steps(...), mode='train', by_group=True): the exact "
                       "parameter-gradient histogram in train mode on a probe of training examples, before training, "
                       "at log-spaced steps of the first epoch and after every epoch, as the study records it",
            "how": "overhead = seconds inside the histogram records / the rest of the tracked run (the end-to-end "
                   "difference of the fastest plain and tracked runs is also given); the subnetwork records "
                   "(recalibrated BN, one run) are reported apart, without a goal"}


def case_scaling(cfg, device):
    rows = []
    for depth in cfg["depths"]:
        model = _trained_like(models.resnet_cifar(depth)).to(device)
        x, y = _batch(cfg["batch"], (3, 32, 32), device)
        rows.append({"depth": depth, "units": len(unravel.find_units(model)),
                     "fwd_bwd_s": _time(_fwd_bwd(model, x, y), device, runs=3),
                     "before_s": _time(lambda: _before.path_length_gradients(model, x, y), device, runs=1),
                     "exact_s": _time(lambda: attribution.path_length_gradients(model, x, y), device, runs=1)})
    n = np.array([r["units"] for r in rows], float)

    def exponent(key):
        t = np.array([r[key] for r in rows], float)
        return float(np.polyfit(np.log(n), np.log(t), 1)[0]) if len(rows) > 1 else float("nan")

    return {"batch": cfg["batch"], "rows": rows, "exponent_time_vs_units": exponent("exact_s"),
            "exponent_before": exponent("before_s"), "expected": "about 2: n(n+1)/2 single-unit VJPs"}


def _vit_s(cfg):
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=cfg["image"], patch_size=16 if cfg["image"] >= 64 else 8,
                             num_layers=cfg["layers"], num_heads=cfg["heads"], hidden_dim=cfg["width"],
                             mlp_dim=4 * cfg["width"], num_classes=1000)


def _gpt2_small(cfg):
    import transformers

    c = transformers.GPT2Config(n_embd=cfg["width"], n_layer=cfg["layers"], n_head=cfg["heads"],
                                n_positions=max(64, cfg["tokens"]), use_cache=False)
    return transformers.GPT2LMHeadModel(c)


def case_transformers(cfg, device):
    """ViT-S- and GPT-2-small-shaped models (random init): the exact histogram and delete_each
    against one forward+backward and against the naive loop."""
    out = {}
    for name, build, shape in (("vit", _vit_s, "image"), ("gpt2", _gpt2_small, "tokens")):
        c = cfg[name]
        torch.manual_seed(0)
        model = build(c).to(device).eval()
        n = len(unravel.find_units(model))
        if shape == "image":
            x = torch.randn(c["batch"], 3, c["image"], c["image"], device=device)
            y = torch.randint(0, 1000, (c["batch"],), device=device)
            loss = None
            data = (x, y)

            def fwd_bwd():
                xr = x.detach().requires_grad_()
                F.cross_entropy(model(xr), y).backward()
        else:
            x = torch.randint(0, model.config.vocab_size, (c["batch"], c["tokens"]), device=device)
            y = None

            def loss(o, _):
                return F.cross_entropy(o.logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())

            data = (x, x)

            def fwd_bwd():
                loss(model(x), None).backward()
        fb = _time(fwd_bwd, device, runs=c["runs"] * 3)
        exact = _time(lambda: attribution.path_length_gradients(model, x, y, loss=loss), device, runs=c["runs"])
        kw = dict(batch_size=c["batch"], progress=False, next_token=shape == "tokens")
        fast = _time(lambda: sweeps.delete_each(model, data, **kw), device, runs=1, warmup=False)
        naive = _time(lambda: sweeps.delete_each(model, data, method="naive", **kw), device, runs=1, warmup=False)
        model.zero_grad(set_to_none=True)
        out[name] = {"units": n, "batch": c["batch"], **({"tokens": c["tokens"]} if shape == "tokens" else
                                                         {"image": c["image"]}),
                     "forward_backward_s": fb, "exact_s": exact, "ratio_exact_over_fwd_bwd": exact / fb,
                     "delete_each_fast_s": fast, "delete_each_naive_s": naive, "delete_each_speedup": naive / fast}
    return out


def case_jacobian(cfg, device):
    """The top singular values of every unit's Jacobian at every example (block Lanczos, the
    default block of ``top`` vectors, and single vectors) against one forward+backward of the same
    model and batch."""
    model = _trained_like(models.resnet_cifar(cfg["depth"])).to(device)
    x, y = _batch(cfg["batch"], (3, cfg["image"], cfg["image"]), device)
    fb = _time(_fwd_bwd(model, x, y), device, runs=cfg["runs"] * 3)
    out = {"units": len(unravel.find_units(model)), "batch": cfg["batch"], "image": cfg["image"], "top": cfg["top"],
           "forward_backward_s": fb}
    for label, block in (("", None), ("_block_1", 1)):
        info = {}

        def spectra():
            info["frame"] = unravel.jacobian_spectra(model, x, top=cfg["top"], block_size=block)

        seconds = _time(spectra, device, runs=cfg["runs"], warmup=not label)
        units = info["frame"].attrs["units"]
        vectors = [u.get("vectors", 0) for u in units]
        out.update({f"jacobian{label}_s": seconds, f"ratio_jacobian{label}_over_fwd_bwd": seconds / fb,
                    f"lanczos{label}_vectors_max": max(vectors),
                    f"lanczos{label}_vectors_mean": float(np.mean(vectors)),
                    f"unconverged{label}_examples": sum(u.get("unconverged", 0) for u in units)})
        out["largest_unit_dim"] = max(u["input_dim"] for u in units)
    out["how"] = ("block Golub-Kahan-Lanczos with full reorthogonalisation, default tol (sqrt of the dtype's "
                  "epsilon) and max_iter; one Jacobian-vector and one vector-Jacobian product of the unit per "
                  "vector; the default block is top vectors (finds repeated values), block_1 single vectors")
    return out


CASES = {"protocol": case_protocol, "overhead": case_overhead, "lesion": case_lesion, "memory": case_memory,
         "tracker": case_tracker, "scaling": case_scaling, "transformers": case_transformers,
         "jacobian": case_jacobian}
#: Run when ``--only`` is not given (the others are opt-in).
DEFAULT_CASES = ("protocol", "overhead", "lesion", "memory", "tracker", "scaling", "transformers")

FULL = {
    "protocol": {"depth": 110, "batch": 128, "paths_per_length": 2, "rounds": 2},
    "overhead": {"depth": 110, "batch": 64, "rounds": 3},
    "lesion": {"depth": 110, "inputs": 1024, "lesion_batch": 256, "max_k": 20, "samples_per_k": 1},
    "memory": {"depth": 110, "batch": 128},
    "tracker": {"study": "ssf-dynamics", "repeats": 3},
    "scaling": {"depths": [20, 56, 110], "batch": 32},
    "transformers": {"vit": {"image": 224, "layers": 12, "heads": 6, "width": 384, "batch": 8, "runs": 1},
                     "gpt2": {"tokens": 128, "layers": 12, "heads": 12, "width": 768, "batch": 4, "runs": 1}},
    "jacobian": {"depth": 20, "batch": 8, "image": 32, "top": 8, "runs": 1},
}
QUICK = {
    "protocol": {"depth": 8, "batch": 4, "paths_per_length": 1, "rounds": 1},
    "overhead": {"depth": 8, "batch": 4, "rounds": 1},
    "lesion": {"depth": 8, "inputs": 16, "lesion_batch": 8, "max_k": 2, "samples_per_k": 1},
    "memory": {"depth": 8, "batch": 4},
    "tracker": {"study": "ssf-dynamics", "quick": True, "repeats": 1},
    "scaling": {"depths": [8, 14], "batch": 2},
    "transformers": {"vit": {"image": 32, "layers": 2, "heads": 2, "width": 16, "batch": 2, "runs": 1},
                     "gpt2": {"tokens": 16, "layers": 2, "heads": 2, "width": 16, "batch": 2, "runs": 1}},
    "jacobian": {"depth": 8, "batch": 2, "image": 8, "top": 2, "runs": 1},
}


def _revision():
    """The commit measured, with '+dirty' where the working tree differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings: check the harness, not the goals")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", default=None, help="write every figure, the machine, versions and settings here")
    p.add_argument("--only", nargs="*", choices=list(CASES), help="run only these cases (default: all but jacobian)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    settings = QUICK if args.quick else FULL
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "unravel": unravel.__version__},
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device), "quick": args.quick,
              "revision": _revision(),
              "settings": settings, "results": {}}
    for name in args.only or list(DEFAULT_CASES):
        start = time.perf_counter()
        result = CASES[name](settings[name], device)
        result["case_wall_s"] = time.perf_counter() - start
        report["results"][name] = result
        print(f"\n== {name}")
        for k, v in result.items():
            if k not in ("rows", "runs_s"):
                print(f"  {k:40s} {_fmt(v)}")
        for row in result.get("rows", []):
            print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
