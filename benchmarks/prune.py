"""unravel's pruning benchmarks: measured side by side in one run.

    python benchmarks/prune.py [--quick] [--device cpu|cuda] [--json FILE] [--only NAME ...]

Cases:

1. greedy    ``prune.select(strategy="greedy")`` (each step one lesion sweep of the fast engine)
             against the naive loop (for every step and every remaining candidate: deep-copy the
             model, delete the chosen units and the candidate, one full forward of the data), on a
             CIFAR ResNet and a GPT-2 (random weights: the timing does not depend on training).
             Both must choose the same units; the speed-up is naive over select.
2. speedup   the forward time of ``prune.remove``'s smaller model against the unpruned one, for
             growing shares of removed units (random units of a ResNet; whole layers of a GPT-2),
             beside the share of units and of parameters removed: what pruning buys on this
             machine.

``--quick`` runs both on tiny settings (a smoke test of the harness). Timings as in
``benchmarks/run.py``: ``torch.utils.benchmark``'s ``blocked_autorange`` median for short calls,
a fixed number of ``perf_counter``-timed runs for long ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, _batch, _fmt, _time, _trained_like  # noqa: E402

sys.path.insert(0, str(ROOT))
import unravel  # noqa: E402
from unravel import lesion, lm, models, prune  # noqa: E402
from unravel.sweeps.engine import make_scorer  # noqa: E402
from unravel.study.environment import source_hash  # noqa: E402


def _resnet(cfg, device):
    return _trained_like(models.resnet_cifar(cfg["depth"], width=cfg.get("width", 16))).eval().to(device)


def _gpt2(cfg, device):
    torch.manual_seed(0)
    return lm.gpt2(context=cfg["tokens"], depth=cfg["layers"], width=cfg["width"], heads=cfg["heads"]).eval().to(device)


def _data(kind, cfg, device):
    if kind == "resnet":
        return _batch(cfg["inputs"], (3, 32, 32), device)
    ids = torch.randint(0, 256, (cfg["inputs"], cfg["tokens"]), generator=torch.Generator().manual_seed(0)).to(device)
    return ids, ids


def _naive_greedy(model, data, steps, batch_size, next_token):
    """The greedy selection as a plain loop: every candidate of every step on a deep copy."""
    import torch.nn.functional as F

    score = make_scorer(F.cross_entropy, next_token)
    x, y = data
    n = len(unravel.find_units(model))
    chosen, remaining = [], list(range(n))
    with torch.no_grad():
        for _ in range(steps):
            results = []
            for c in remaining:
                m = copy.deepcopy(model)
                loss = wrong = count = 0
                with lesion.delete(m, chosen + [c]):
                    for i in range(0, len(x), batch_size):
                        l, w, k, _, _ = score(m(x[i:i + batch_size]), y[i:i + batch_size])
                        loss, wrong, count = loss + l, wrong + w, count + k
                results.append((wrong / count, loss / count, c))
            best = min(results)
            chosen.append(best[2])
            remaining.remove(best[2])
    return chosen


def case_greedy(cfg, device):
    out = {}
    for kind, build in (("resnet", _resnet), ("gpt2", _gpt2)):
        c = cfg[kind]
        model = build(c, device)
        data = _data(kind, c, device)
        tokens = kind == "gpt2"
        kw = dict(budget=1e9, strategy="greedy", max_units=c["steps"], batch_size=c["batch"], next_token=tokens)
        prune.select(model, (data[0][:2], data[1][:2]), **{**kw, "max_units": 1})  # warm-up
        sel = None

        def fast():
            nonlocal sel
            sel = prune.select(model, data, **kw)

        fast_s = _time(fast, device, runs=1, warmup=False)
        naive_chosen = None

        def naive():
            nonlocal naive_chosen
            naive_chosen = _naive_greedy(model, data, c["steps"], c["batch"], tokens)

        naive_s = _time(naive, device, runs=1, warmup=False)
        n = len(unravel.find_units(model))
        out[kind] = {"units": n, "steps": c["steps"], "inputs": c["inputs"],
                     "variants_evaluated": sum(n - s for s in range(c["steps"])), "select_s": fast_s,
                     "naive_s": naive_s, "speedup": naive_s / fast_s, "same_choice": list(sel.units) == naive_chosen,
                     "chosen": list(sel.units)}
    return out


def _params(m):
    return sum(p.numel() for p in m.parameters())


def case_speedup(cfg, device):
    out = {}
    for kind, build in (("resnet", _resnet), ("gpt2", _gpt2)):
        c = cfg[kind]
        model = build(c, device)
        x = _data(kind, c, device)[0][: c["batch"]]
        units = unravel.find_units(model)
        rng = np.random.default_rng(0)
        if kind == "gpt2":  # whole layers: the config shrinks (fewer layers)
            groups = [[2 * i, 2 * i + 1] for i in range(len(units) // 2)]
        else:  # single units (identity-shortcut ones: a projection unit keeps its projection)
            groups = [[u.index] for u in units]
        order = [groups[i] for i in rng.permutation(len(groups))]
        with torch.no_grad():
            base = _time(lambda: model(x), device, min_run_time=c["min_run_time"])
            rows = []
            for share in c["shares"]:
                k = int(round(share * len(groups)))
                removed = sorted(i for g in order[:k] for i in g)
                small = prune.remove(model, removed).eval()
                t = base if k == 0 else _time(lambda: small(x), device, min_run_time=c["min_run_time"])
                rows.append({"units_removed": len(removed), "share_units_removed": len(removed) / len(units),
                             "share_params_removed": 1 - _params(small) / _params(model), "forward_s": t,
                             "speedup": base / t})
        out[kind] = {"units": len(units), "batch": c["batch"], "what": "whole layers" if kind == "gpt2" else
                     "single units, drawn at random", "unpruned_forward_s": base, "rows": rows}
    return out


CASES = {"greedy": case_greedy, "speedup": case_speedup}
FULL = {
    "greedy": {"resnet": {"depth": 32, "inputs": 256, "batch": 256, "steps": 6},
               "gpt2": {"tokens": 128, "layers": 6, "width": 256, "heads": 4, "inputs": 32, "batch": 32, "steps": 4}},
    "speedup": {"resnet": {"depth": 56, "inputs": 128, "batch": 128, "min_run_time": 2.0,
                           "shares": [0.0, 0.25, 0.5, 0.75]},
                "gpt2": {"tokens": 128, "layers": 6, "width": 256, "heads": 4, "inputs": 16, "batch": 16,
                         "min_run_time": 2.0, "shares": [0.0, 1 / 3, 1 / 2, 2 / 3]}},
}
QUICK = {
    "greedy": {"resnet": {"depth": 8, "inputs": 8, "batch": 8, "steps": 2},
               "gpt2": {"tokens": 8, "layers": 2, "width": 16, "heads": 2, "inputs": 4, "batch": 4, "steps": 2}},
    "speedup": {"resnet": {"depth": 8, "inputs": 4, "batch": 4, "min_run_time": 0.05, "shares": [0.0, 0.5]},
                "gpt2": {"tokens": 8, "layers": 2, "width": 16, "heads": 2, "inputs": 2, "batch": 2,
                         "min_run_time": 0.05, "shares": [0.0, 0.5]}},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings: check the harness")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", default=None, help="write every figure, the machine, versions and settings here")
    p.add_argument("--only", nargs="*", choices=list(CASES), help="run only these cases (default: all)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    settings = QUICK if args.quick else FULL
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "unravel": unravel.__version__},
              "source_hash": source_hash(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device), "quick": args.quick,
              "settings": settings, "results": {}}
    for name in args.only or list(CASES):
        start = time.perf_counter()
        result = CASES[name](settings[name], device)
        result["case_wall_s"] = time.perf_counter() - start
        report["results"][name] = result
        print(f"\n== {name}")
        for model, r in result.items():
            if not isinstance(r, dict):
                print(f"  {model:40s} {_fmt(r)}")
                continue
            print(f"  {model}")
            for k, v in r.items():
                if k != "rows":
                    print(f"    {k:38s} {_fmt(v)}")
            for row in r.get("rows", []):
                print("    " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
