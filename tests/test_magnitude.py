"""Veit's magnitude (sampled single paths) against brute force, its interval, its underflow, and
the two named quantities (issue 28)."""

import math

import pytest
import torch
from torch import nn

import unravel
from unravel import attribution, models
from unravel.errors import ArgumentError
from unravel.graph import UnraveledGraph
from unravel.models import ResidualBlock

from .conftest import randomize_bn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _single_path(model, x, y, path):
    """Brute force: Veit's protocol, one forward and one backward through the path alone."""
    return attribution.magnitude.single_path_norm(model, x, y, path)


def _resnet(dtype=torch.float64):
    torch.manual_seed(0)
    model = randomize_bn(models.resnet_cifar(20, width=2, num_classes=3)).to(dtype).eval()  # 9 units
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 3, (3,), generator=g))
               for _ in range(3)]
    return model, batches


def test_path_magnitudes_equal_brute_force_over_every_path_and_batch():
    model, batches = _resnet()
    n = len(unravel.find_units(model))
    res = attribution.path_magnitudes(model, batches, num_samples=200, generator=0, paths_per_pass=7)
    graph = UnraveledGraph(unravel.find_units(model))
    i = 0
    for k in range(n + 1):
        paths = list(graph.paths(k))  # every path enumerated (at most 126 < 200), in this order
        want = []
        for p in paths:
            want.append(_single_path(model, *batches[i % len(batches)], p))  # measurement i on batch i mod 3
            i += 1
        assert res.samples[k] == math.comb(n, k)
        assert res.per_path_norm[k] == pytest.approx(sum(want) / len(want), rel=1e-10)
        assert res.norms[k] == pytest.approx(sum(want), rel=1e-10)
        assert float(res.low[k]) == pytest.approx(float(res.norms[k]), rel=1e-12)  # enumerated: no sampling error
        assert float(res.high[k]) == pytest.approx(float(res.norms[k]), rel=1e-12)
    assert res.quantity == "magnitude"


def test_path_magnitudes_on_one_batch_is_the_sample_method():
    model, batches = _resnet()
    a = attribution.path_magnitudes(model, batches[:1], num_samples=6, generator=4)
    b = attribution.path_length_gradients(model, *batches[0], method="sample", num_samples=6, generator=4,
                                          chunk_size=1)
    assert torch.allclose(a.norms, b.norms, rtol=1e-12)
    assert torch.equal(a.samples, b.samples)


def test_interval_covers_the_brute_force_mean():
    """The 95% interval of a sampled length holds the mean over all its paths in most draws."""
    model, batches = _resnet()
    x, y = batches[0]
    k = 4  # 126 paths
    paths = list(UnraveledGraph(unravel.find_units(model)).paths(k))
    truth = 126 * sum(_single_path(model, x, y, p) for p in paths) / len(paths)
    hits = 0
    for seed in range(20):
        r = attribution.path_length_gradients(model, x, y, method="sample", num_samples=20, generator=seed,
                                              max_length=k)
        assert r.low[k] < r.norms[k] < r.high[k]
        hits += bool(r.low[k] <= truth <= r.high[k])
    assert hits >= 15


def _shrinking_net(depth):
    """A residual MLP whose residual branches scale the gradient by about 1e-2: the one path of
    length ``depth`` carries a gradient far below float32's smallest number."""
    torch.manual_seed(0)
    net = models.resmlp(6, 3, width=6, depth=depth)
    with torch.no_grad():
        for block in net.blocks:
            block.residual[-1].weight.mul_(0.02)
    return net.eval()


def test_a_long_path_does_not_underflow_in_float32():
    depth = 24
    net = _shrinking_net(depth)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    res = attribution.path_length_gradients(net, x, y, method="sample", num_samples=30, generator=0)
    longest = tuple(range(depth))
    want = _single_path(_shrinking_net(depth).double(), x.double(), y, longest)  # float64 brute force
    assert 0 < want < 1e-40  # below float32's smallest number: a float32 gradient or norm reads 0.0
    assert res.per_path_norm[depth] == pytest.approx(want, rel=1e-3)  # read exactly 0.0 before the fix
    assert (res.per_path_norm > 0).all()
    # a length of 24 paths: each measured path equals its float64 brute force
    second = [p for p in UnraveledGraph(unravel.find_units(net)).paths(depth - 1)]
    want_mean = sum(_single_path(_shrinking_net(depth).double(), x.double(), y, p) for p in second) / len(second)
    assert res.per_path_norm[depth - 1] == pytest.approx(want_mean, rel=1e-3)


def test_paths_per_pass_do_not_matter():
    model, batches = _resnet(torch.float32)
    a = attribution.path_magnitudes(model, batches, num_samples=9, generator=2, paths_per_pass=1)
    b = attribution.path_magnitudes(model, batches, num_samples=9, generator=2)
    assert torch.allclose(a.per_path_norm, b.per_path_norm, rtol=1e-5)


def _cancelling():
    """Two units whose residual branches are x -> 0.5 x and x -> -0.5 x (docs/concepts.md)."""
    def branch(a):
        lin = nn.Linear(1, 1, bias=False)
        lin.weight.data.fill_(a)
        return lin
    return nn.Sequential(ResidualBlock(branch(0.5)), ResidualBlock(branch(-0.5))).double()


def test_net_and_magnitude_disagree_where_paths_cancel():
    net, x = _cancelling(), torch.ones(1, 1, dtype=torch.float64)
    exact = attribution.path_length_gradients(net, x)  # loss: the output itself
    veit = attribution.path_length_gradients(net, x, method="sample")
    assert exact.quantity == "net" and veit.quantity == "magnitude"
    assert exact.norms.tolist() == pytest.approx([1.0, 0.0, 0.25], abs=1e-15)  # 0.5 - 0.5 cancel
    assert veit.norms.tolist() == pytest.approx([1.0, 1.0, 0.25], abs=1e-15)  # |0.5| + |-0.5|
    we, wv = exact.effective_paths(0.75), veit.effective_paths(0.75)
    assert (we["lengths"], we["width"], we["mean_length_over_n"]) == ((0, 0), 1, pytest.approx(0.2))
    assert (wv["lengths"], wv["width"], wv["relative_window"]) == ((0, 1), 2, (0.0, 0.5))
    assert wv["mean_length_over_n"] == pytest.approx((1.0 + 2 * 0.25) / 2.25 / 2)
    frame = veit.to_frame()
    assert set(frame.quantity) == {"magnitude"} and {"low", "high"} <= set(frame.columns)


def test_path_magnitudes_refuses_bad_input():
    net, x = _cancelling(), torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(ArgumentError, match="batches is empty"):
        attribution.path_magnitudes(net, [])
    with pytest.raises(ArgumentError, match="num_samples"):
        attribution.path_magnitudes(net, [x], num_samples=0)
    with pytest.raises(ArgumentError, match="paths_per_pass"):
        attribution.path_magnitudes(net, [x], paths_per_pass=0)
