"""Path-length attribution over a dataset, batch by batch and sharded over torchrun ranks: equal to
the decomposition of the whole dataset as one batch, and the sharded result to the single-process
one."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unravel
from unravel import attribution
from unravel.errors import ArgumentError

from .conftest import run_torchrun


def _net():
    torch.manual_seed(0)
    return unravel.models.resmlp(6, 3, width=6, depth=4).double().eval()


def _data(n=40):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_dataset_equals_one_batch_of_the_whole_dataset():
    net, (x, y) = _net(), _data()
    one = attribution.path_length_gradients(net, x, y)
    for bs in (7, 40):  # uneven batches too
        got = attribution.dataset_path_length_gradients(net, (x, y), batch_size=bs, progress=False)
        assert torch.allclose(got.norms, one.norms, rtol=1e-10, atol=0) and got.counts == one.counts
        assert np.isclose(got.loss, one.loss, rtol=1e-12) and got.by_length is None
    cut = attribution.dataset_path_length_gradients(net, (x, y), batch_size=7, max_length=2, progress=False)
    whole = attribution.path_length_gradients(net, x, y, max_length=2)
    assert torch.allclose(cut.norms, whole.norms, rtol=1e-10) and np.isclose(cut.dropped_norm, whole.dropped_norm,
                                                                              rtol=1e-10)


def test_dataset_parameter_parts_sum_to_the_dataset_gradient():
    net, (x, y) = _net(), _data()
    got = attribution.dataset_path_length_gradients(net, (x, y), batch_size=9, wrt="units", group=[[0, 1], [2, 3]],
                                                    progress=False)
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    for (name, _), g in zip(net.named_parameters(), grads):
        assert torch.allclose(got.param_by_length[name].sum(0), g, rtol=1e-10, atol=1e-15), name
    one = attribution.path_length_gradients(net, x, y, wrt="units", group=[[0, 1], [2, 3]])
    for name, parts in one.param_by_length.items():
        assert torch.allclose(got.param_by_length[name], parts, rtol=1e-10, atol=1e-15), name
    with pytest.raises(ArgumentError, match="max_length with wrt='units'"):
        attribution.dataset_path_length_gradients(net, (x, y), wrt="units", max_length=1, progress=False)


def test_dataset_next_token_weighs_batches_by_scored_tokens():
    torch.manual_seed(0)
    lm = unravel.lm.gpt2(num_classes=11, context=8, depth=2, width=8, heads=2).double().eval()
    ids = torch.randint(0, 11, (6, 8), generator=torch.Generator().manual_seed(1))
    targets = ids.clone()
    targets[0, 2:] = -100
    targets[3, 1:] = -100  # nothing scored in this example
    one = attribution.path_length_gradients(lm, ids, targets, loss="next_token", group="layer")
    got = attribution.dataset_path_length_gradients(lm, (ids, targets), batch_size=1, loss="next_token",
                                                    group="layer", progress=False)
    assert torch.allclose(got.norms, one.norms, rtol=1e-9) and np.isclose(got.loss, one.loss, rtol=1e-12)
    assert got.counts == [1, 6, 9]


_DIST = r'''
import sys, torch, torch.distributed as dist
import unravel
dist.init_process_group("gloo")
torch.manual_seed(0)
net = unravel.models.resmlp(6, 3, width=6, depth=4).double().eval()
g = torch.Generator().manual_seed(2)
x, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
out = {}
for wrt in ("input", "units"):
    res = unravel.attribution.dataset_path_length_gradients(net, (x, y), batch_size=8, wrt=wrt, progress=False)
    out[wrt] = (res.norms, res.counts, res.loss, res.param_by_length)
# a single batch: rank 1 has none
res = unravel.attribution.dataset_path_length_gradients(net, (x[:8], y[:8]), batch_size=8, wrt="units",
                                                        progress=False)
out["one"] = (res.norms, res.counts, res.loss, res.param_by_length)
out["rank"] = dist.get_rank()
torch.save(out, sys.argv[1] + f".{dist.get_rank()}")
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_sharded_over_two_processes_equals_one_process(tmp_path):
    run_torchrun(_DIST, tmp_path, out_name="out.pt")
    net, (x, y) = _net(), _data()
    want = {wrt: attribution.dataset_path_length_gradients(net, (x, y), batch_size=8, wrt=wrt, progress=False)
            for wrt in ("input", "units")}
    want["one"] = attribution.dataset_path_length_gradients(net, (x[:8], y[:8]), batch_size=8, wrt="units",
                                                            progress=False)
    for rank in (0, 1):  # every rank returns the whole result
        got = torch.load(tmp_path / f"out.pt.{rank}", weights_only=False)
        for key, res in want.items():
            norms, counts, loss, params = got[key]
            assert torch.allclose(norms, res.norms, rtol=1e-12, atol=0) and counts == res.counts, (rank, key)
            assert np.isclose(loss, res.loss, rtol=1e-12)
            if res.param_by_length is not None:
                for name, parts in res.param_by_length.items():
                    assert torch.allclose(params[name], parts, rtol=1e-12, atol=1e-16), (rank, key, name)
