"""The four ``unravel.prune.select`` strategies side by side, on a trained reference ResNet and on
the language model of the ``lm-ensemble`` study: units removed within the budget, the quality of
the pruned model on held-out data, its parameters, and the seconds each selection took.

    python benchmarks/prune_strategies.py [--quick] [--json FILE]

Selection runs on one split and the pruned model is scored on another (selecting on the data you
report on is optimistic): the ResNet selects on half of MNIST-1D's test split and is scored on the
other half; the language model selects on the validation files and is scored on the test files.
The language model is the study's seed-0 model (read from the cache, or trained: minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import unravel  # noqa: E402
from unravel import lm, models, prune, train  # noqa: E402
from unravel.study.environment import source_hash  # noqa: E402

STRATEGIES = ("greedy", "block_influence", "angular", "gradient_share")


def _compare(model, select_data, score_data, budget, next_token, batch_size):
    base = prune.quality(model, score_data, next_token=next_token, batch_size=batch_size)
    rows = []
    for strategy in STRATEGIES:
        start = time.perf_counter()
        sel = prune.select(model, select_data, budget=budget, strategy=strategy, next_token=next_token,
                           batch_size=batch_size)
        seconds = time.perf_counter() - start
        small = prune.remove(model, sel.units)
        q = prune.quality(small, score_data, next_token=next_token, batch_size=batch_size)
        rows.append({"strategy": strategy, "units_removed": len(sel.units), "removed": ", ".join(sel.names),
                     "selection_error_increase": float(sel.frame[sel.frame.units_removed == len(sel.units)]
                                                       .error_increase.iloc[-1]) if sel.units else 0.0,
                     "held_out_error": q["error"], "held_out_error_increase": q["error"] - base["error"],
                     "held_out_loss_increase": q["loss"] - base["loss"],
                     "parameters_left": sum(p.numel() for p in small.parameters()) /
                     sum(p.numel() for p in model.parameters()), "seconds": seconds})
    return {"baseline_held_out_error": base["error"], "baseline_held_out_loss": base["loss"], "budget": budget,
            "rows": rows}


def resnet(quick):
    data = unravel.data.mnist1d(num_samples=600 if quick else 8000)
    torch.manual_seed(0)
    depth = 8 if quick else 56
    net = models.resnet_cifar(depth, width=16, in_channels=1, dims=1)
    hist = train.fit(net, data, epochs=1 if quick else 15, optimizer="adam", lr=3e-3, seed=0, progress=False)
    x, y = data.test.tensors
    half = len(x) // 2
    out = _compare(net, (x[:half], y[:half]), (x[half:], y[half:]), 0.01, False, 256)
    out.update(model=f"resnet_cifar({depth}), 1-D, width 16", units=len(unravel.find_units(net)),
               data=f"MNIST-1D, {len(data.train)} training examples; select on {half} test examples, score on "
                    f"the other {len(x) - half}", train_epochs=len(hist.epochs),
               test_error=float(hist.epochs[-1]["test_error"]))
    return out


def language_model(quick):
    model, hist, data = lm.train_study_model(0, quick=quick, progress=False)
    out = _compare(model, data.validation, data.test, 0.02, True, 64)
    out.update(model="gpt2_lm of the lm-ensemble spec" + (" (quick)" if quick else ""),
               units=len(unravel.find_units(model)),
               data=f"stdlib: select on {len(data.validation)} validation windows, score on {len(data.test)} test "
                    f"windows of {data.input_shape[0]} bytes",
               validation_bits_per_byte=float(hist.val_bits_per_byte.iloc[-1]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    report = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch_threads": torch.get_num_threads()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
              "source_hash": source_hash(), "results": {}}
    for name, fn in (("resnet", resnet), ("lm", language_model)):
        r = fn(args.quick)
        report["results"][name] = r
        print(f"\n== {name}: {r['model']}; {r['data']}; budget +{r['budget']} error")
        print(f"   held-out error unpruned {r['baseline_held_out_error']:.4f}")
        for row in r["rows"]:
            print(f"   {row['strategy']:16s} removed {row['units_removed']:2d}  held-out error "
                  f"{row['held_out_error']:.4f} ({row['held_out_error_increase']:+.4f})  parameters "
                  f"{row['parameters_left']:.1%}  {row['seconds']:.1f} s  [{row['removed']}]")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
