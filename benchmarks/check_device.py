"""Correctness on an accelerator: the test suite's key equalities, run on ``--device``.

    python benchmarks/check_device.py --device cuda

The test suite runs on a CPU (CI has no GPU); this script checks on a GPU what the timings
there rely on: the exact decomposition sums to autograd's gradient (input and parameters) with
the GPU's default batched VJPs, equals the one-channel-at-a-time loop, is unchanged by
``batch_size``; the lesion engine equals the naive loop; models are restored bit-exactly.
TF32 is switched off first (with it, float32 sums match autograd to ~1e-4 only).
Exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import unravel  # noqa: E402
from run import _trained_like  # noqa: E402  (benchmarks/run.py, beside this file)
from unravel import attribution, models, sweeps  # noqa: E402


def _net(depth, dtype, device):
    torch.manual_seed(0)
    return _trained_like(models.resnet_cifar(depth, width=8)).to(device=device, dtype=dtype)


def _state(model):
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    failures = []
    # TF32 convolutions (cuDNN's default) round float32 products to 10-bit mantissas: the sums
    # would match autograd only to ~1e-4; check exactness at full float32 precision
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def check(name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
        if not ok:
            failures.append(name)

    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        model = _net(20, dtype, device)
        before = _state(model)
        x = torch.randn(16, 3, 16, 16, device=device, dtype=dtype)
        y = torch.randint(0, 10, (16,), device=device)
        res = attribution.path_length_gradients(model, x, y)
        one = attribution.path_length_gradients(model, x, y, chunk_size=1)
        split = attribution.path_length_gradients(model, x, y, batch_size=5)
        # autograd's gradient at the first unit's input
        leaf = {}

        def compute(unit, xin, position, **kw):
            if position.index == 0:
                xin = leaf.setdefault(0, xin.detach().requires_grad_())
            return unit.forward(xin, **kw)

        with unravel.intervene(model, compute=compute):
            loss = F.cross_entropy(model(x), y)
        g, = torch.autograd.grad(loss, leaf[0])
        scale = float(g.abs().max())
        err = float((res.by_length.sum(0).to(device) - g).abs().max()) / scale
        check(f"{dtype} input parts sum to autograd", err < tol, f"rel {err:.1e}")
        err = float((one.by_length - res.by_length).abs().max()) / scale
        check(f"{dtype} batched VJPs == one channel at a time", err < tol, f"rel {err:.1e}")
        err = float((split.by_length - res.by_length).abs().max()) / scale
        check(f"{dtype} batch_size=5 == whole batch", err < tol, f"rel {err:.1e}")
        pres = attribution.path_length_gradients(model, x, y, wrt="units")
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        worst = max(float((pres.param_by_length[k].sum(0).to(device) - gr).abs().max()) / max(float(gr.abs().max()), 1e-30)
                    for (k, _), gr in zip(model.named_parameters(), grads))
        check(f"{dtype} parameter parts sum to .grad", worst < tol * 10, f"rel {worst:.1e}")
        check(f"{dtype} model unchanged", all(torch.equal(a, b) for a, b in zip(before, _state(model))))

    model = _net(20, torch.float32, device)
    before = _state(model)
    x = torch.randn(64, 3, 16, 16, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    for name, run in [
        ("delete_each", lambda m: sweeps.delete_each(model, (x, y), batch_size=32, progress=False, method=m)),
        ("delete_random", lambda m: sweeps.delete_random(model, (x, y), ks=[1, 3, 5], samples_per_k=3, seed=0,
                                                         batch_size=32, progress=False, method=m)),
    ]:
        a, b = run("fast"), run("naive")
        same = a[["variant", "k", "units"]].equals(b[["variant", "k", "units"]])
        close = (a.error - b.error).abs().max() <= 1 / 64 + 1e-9 and (a.loss - b.loss).abs().max() < 1e-4
        check(f"{name} fast == naive", same and close, f"max loss diff {(a.loss - b.loss).abs().max():.1e}")
    check("lesions leave the model unchanged", all(torch.equal(a, b) for a, b in zip(before, _state(model))))
    print(f"\n{len(failures)} failure(s) on {device}" + (f": {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
