import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel import attribution, models

from .conftest import autograd_input_grad, TinyTransformer as _TinyTransformer
from .conftest import randomize_bn as _randomize_bn
from .conftest import state_hash


def TinyTransformer(norm_first):
    # small enough for brute-force enumeration of its 2^4 paths
    return _TinyTransformer(norm_first, d=8, layers=2, classes=3, ff=12)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _bottleneck_net():
    tv = pytest.importorskip("torchvision", reason="torchvision is in the test extra; install unravel[test]")
    from torchvision.models.resnet import Bottleneck

    down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Bottleneck(4, 2, stride=2, downsample=down),
                         Bottleneck(8, 2), Bottleneck(8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)), tv


FAMILIES = {
    "resnet-v1": lambda: (_randomize_bn(models.resnet_cifar(20, width=2, num_classes=3)), (3, 3, 8, 8), 3),
    "resnet-v2": lambda: (_randomize_bn(models.preact_resnet_cifar(20, width=2, num_classes=3)), (3, 3, 8, 8), 3),
    "resnet-v1-conv": lambda: (_randomize_bn(models.resnet_cifar(14, width=2, num_classes=3, shortcut="conv")),
                               (3, 3, 8, 8), 3),
    "se-resnet": lambda: (_randomize_bn(models.se_resnet_cifar(14, width=4, num_classes=3)), (3, 3, 8, 8), 3),
    "bottleneck": lambda: (_randomize_bn(_bottleneck_net()[0]), (2, 3, 8, 8), 3),
    "transformer-preln": lambda: (TinyTransformer(True), (3, 4, 3), 3),
    "transformer-postln": lambda: (TinyTransformer(False), (3, 4, 3), 3),
    "densenet": lambda: (_randomize_bn(models.densenet_bc(16, growth=2, num_classes=3)), (2, 3, 8, 8), 3),
    "resmlp": lambda: (models.resmlp(6, 3, width=6, depth=6), (4, 6), 3),
    "plain": lambda: (_randomize_bn(models.plain_cifar(14, width=2, num_classes=3)), (3, 3, 8, 8), 3),
}


def _family(name):
    torch.manual_seed(0)
    model, shape, classes = FAMILIES[name]()
    model = model.double().eval()
    return model, torch.randn(*shape, dtype=torch.float64), torch.randint(0, classes, (shape[0],))


def _brute_force(model, x, y):
    """Every path separately: one forward pass in which each unit lets the gradient through one
    branch only (the other detached), one backward pass. Returns per-length sums and the
    single-path norms by length."""
    units = unravel.find_units(model)
    n = len(units)
    g = unravel.unravel(units)
    sums, norms = {}, {}
    for path in g.paths():
        taken = set(path)
        leaf = {}

        def compute(unit, xin, position, **kw):
            p = position.index
            if p == 0:
                xin = leaf.setdefault(0, xin.detach().requires_grad_())
            r = unit.residual(xin, **kw)
            if unit.kind == "plain":
                return unit.post(r)
            s = unit.shortcut(xin)
            z = s.detach() + r if p in taken else s + r.detach()
            return unit.post(z)

        with unravel.intervene(model, compute=compute):
            loss = F.cross_entropy(model(x), y)
        grad, = torch.autograd.grad(loss, leaf[0])
        k = len(path)
        sums[k] = sums.get(k, 0) + grad
        norms.setdefault(k, []).append(float(grad.norm()))
    return sums, norms, n


_autograd_input_grad = autograd_input_grad


@pytest.mark.parametrize("family", ["resnet-v1", "resnet-v2", "resnet-v1-conv", "bottleneck",
                                    "transformer-preln", "transformer-postln", "densenet", "plain"])
def test_exact_equals_brute_force_enumeration(family):
    model, x, y = _family(family)
    res = attribution.path_length_gradients(model, x, y)
    sums, norms, n = _brute_force(model, x, y)
    assert n <= 10
    assert res.lengths.tolist() == list(range(n + 1))
    for k in range(n + 1):
        want = sums.get(k, torch.zeros_like(res.by_length[0]))
        assert torch.allclose(res.by_length[k], want, rtol=1e-10, atol=1e-14 * float(want.abs().max() + 1)), k
    if family != "plain":
        assert float(res.norms.min()) >= 0 and float(res.norms[1:].max()) > 0
    assert res.counts == unravel.unravel(model).length_counts()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_conservation_every_family(family):
    model, x, y = _family(family)
    before = state_hash(model)
    res = attribution.path_length_gradients(model, x, y)
    g = _autograd_input_grad(model, x, y)
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    assert torch.allclose(res.total, g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    assert state_hash(model) == before and not model.training


def test_conservation_float32():
    torch.manual_seed(1)
    model = _randomize_bn(models.resnet_cifar(20, width=4)).eval()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    res = attribution.path_length_gradients(model, x, y)
    g = _autograd_input_grad(model, x, y)
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))


@pytest.mark.parametrize("family", ["resnet-v1", "resnet-v1-conv", "transformer-postln", "densenet", "resmlp"])
def test_units_parts_sum_to_grad(family):
    model, x, y = _family(family)
    res = attribution.path_length_gradients(model, x, y, wrt="units")
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    named = dict(model.named_parameters())
    assert set(res.param_by_length) == {k for k, p in named.items() if p.requires_grad}
    for name, parts in res.param_by_length.items():
        grad = named[name].grad if named[name].grad is not None else torch.zeros_like(named[name])
        assert torch.allclose(parts.sum(0), grad, rtol=1e-9, atol=1e-12 * float(grad.abs().max() + 1e-30)), name
    model.zero_grad()
    # the unit's own residual branch counts: parameters of the last unit's residual branch have
    # no length-0 part
    last = unravel.find_units(model)[-1]
    prefix = [n for n, m in model.named_modules() if m is last.module][0]
    res_names = [k for k in res.param_by_length if k.startswith(prefix + ".residual")]
    for k in res_names:
        assert float(res.param_by_length[k][0].abs().max()) == 0.0
        assert float(res.param_by_length[k][1].abs().max()) > 0.0


def test_units_brute_force_small():
    """Parameter parts by length against enumeration: paths through a parameter of unit l's
    residual branch have length 1 + (residual branches above l)."""
    model, x, y = _family("resmlp")
    res = attribution.path_length_gradients(model, x, y, wrt="units")
    units = unravel.find_units(model)
    n = len(units)
    target = "blocks.2.residual.1.weight"  # a weight inside unit 2's residual branch
    want = torch.zeros((n + 1,) + tuple(dict(model.named_parameters())[target].shape), dtype=torch.float64)
    for above in itertools.product([False, True], repeat=n - 3):
        taken = {3 + i for i, t in enumerate(above) if t}

        def compute(unit, xin, position, **kw):
            p = position.index
            if p < 2:
                return unit.forward(xin.detach() if p == 1 else xin, **kw)
            s, r = unit.shortcut(xin), unit.residual(xin, **kw)
            if p == 2:
                return unit.post(s.detach() + r)
            return unit.post(s.detach() + r if p in taken else s + r.detach())

        with unravel.intervene(model, compute=compute):
            loss = F.cross_entropy(model(x), y)
        grad, = torch.autograd.grad(loss, dict(model.named_parameters())[target])
        want[1 + len(taken)] += grad
    assert torch.allclose(res.param_by_length[target], want, rtol=1e-10, atol=1e-15)


def test_sample_estimator_exhaustive_equals_brute_force_mean():
    model, x, y = _family("resnet-v1")
    _, norms, n = _brute_force(model, x, y)
    res = attribution.path_length_gradients(model, x, y, method="sample", num_samples=200, generator=0)
    for k in range(n + 1):
        assert res.samples[k] == math.comb(n, k)  # every path once
        assert res.per_path_norm[k] == pytest.approx(sum(norms[k]) / len(norms[k]), rel=1e-10)
        assert res.norms[k] == pytest.approx(sum(norms[k]), rel=1e-10)


def test_sample_estimator_converges():
    model, x, y = _family("resnet-v1")  # 9 units: lengths 3..6 have 84..126 paths
    _, norms, n = _brute_force(model, x, y)
    exact_mean = {k: sum(v) / len(v) for k, v in norms.items()}

    def error(num, seed):
        res = attribution.path_length_gradients(model, x, y, method="sample", num_samples=num, generator=seed)
        return sum(abs(float(res.per_path_norm[k]) - exact_mean[k]) / exact_mean[k] for k in range(3, 7))

    small = sum(error(4, s) for s in range(4))
    large = sum(error(80, s) for s in range(4))
    assert large < 0.5 * small
    a = attribution.path_length_gradients(model, x, y, method="sample", num_samples=5, generator=7)
    b = attribution.path_length_gradients(model, x, y, method="sample", num_samples=5, generator=7)
    assert torch.equal(a.per_path_norm, b.per_path_norm)


def test_sample_batches_do_not_matter():
    model, x, y = _family("densenet")
    a = attribution.path_length_gradients(model, x, y, method="sample", num_samples=7, generator=3, chunk_size=5)
    b = attribution.path_length_gradients(model, x, y, method="sample", num_samples=7, generator=3, chunk_size=64)
    assert torch.allclose(a.per_path_norm, b.per_path_norm, rtol=1e-12)


def test_max_length_and_chunk_size_keep_the_same_channels():
    model, x, y = _family("resnet-v2")
    full = attribution.path_length_gradients(model, x, y)
    for max_length in (0, 2, 5):
        part = attribution.path_length_gradients(model, x, y, max_length=max_length, chunk_size=2)
        assert torch.allclose(part.by_length, full.by_length[: max_length + 1], rtol=1e-10, atol=1e-16)
        dropped = full.by_length[max_length + 1:].sum(0)
        assert part.dropped_norm == pytest.approx(float(dropped.norm()), rel=1e-8, abs=1e-16)
        assert torch.allclose(part.total, full.total, rtol=1e-10, atol=1e-16)
    chunked = attribution.path_length_gradients(model, x, y, chunk_size=1)
    assert torch.allclose(chunked.by_length, full.by_length, rtol=1e-12, atol=1e-18)
    units_full = attribution.path_length_gradients(model, x, y, wrt="units")
    units_part = attribution.path_length_gradients(model, x, y, wrt="units", max_length=3, chunk_size=3)
    for k, v in units_part.param_by_length.items():
        assert torch.allclose(v, units_full.param_by_length[k][:4], rtol=1e-10, atol=1e-16)


def test_identity_like_branches_are_not_overwritten():
    # an identity residual branch and an identity shortcut hand back their cotangent itself: the
    # in-place channel arithmetic must not write into a tensor that another channel still holds
    torch.manual_seed(0)
    Block = models.ResidualBlock
    net = nn.Sequential(nn.Linear(5, 6), Block(nn.Identity(), post=nn.ReLU()),
                        Block(nn.Sequential(nn.Linear(6, 6), nn.Tanh()), post=nn.ReLU()),
                        Block(nn.Identity()), Block(nn.Linear(6, 6), post=nn.ReLU()),
                        Block(nn.Flatten(), post=nn.ReLU()), nn.Linear(6, 3)).double()
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 3, (7,))
    sums, _, n = _brute_force(net, x, y)
    res = attribution.path_length_gradients(net, x, y)
    for k in range(n + 1):
        assert torch.allclose(res.by_length[k], sums[k], rtol=1e-10, atol=1e-14), k
    pres = attribution.path_length_gradients(net, x, y, wrt="units")
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    for (name, _), g in zip(net.named_parameters(), grads):
        assert torch.allclose(pres.param_by_length[name].sum(0), g, rtol=1e-10, atol=1e-14), name


@pytest.mark.parametrize("family", ["resnet-v2", "transformer-postln", "densenet"])
@pytest.mark.parametrize("with_targets", [True, False])
def test_batch_size_splits_exactly(family, with_targets):
    model, x, y = _family(family)
    x, y = torch.cat([x, x.flip(0) * 0.5]), torch.cat([y, y.flip(0)])  # an uneven last piece
    y = y if with_targets else None
    for wrt in ("input", "units"):
        full = attribution.path_length_gradients(model, x, y, wrt=wrt, max_length=3)
        split = attribution.path_length_gradients(model, x, y, wrt=wrt, max_length=3, batch_size=len(x) // 2 + 1)
        assert torch.allclose(split.norms, full.norms, rtol=1e-10, atol=1e-16)
        assert split.dropped_norm == pytest.approx(full.dropped_norm, rel=1e-9, abs=1e-16)
        assert split.loss == pytest.approx(full.loss, rel=1e-12)
        if wrt == "input":
            assert torch.allclose(split.by_length, full.by_length, rtol=1e-10, atol=1e-16)
            assert torch.allclose(split.total, full.total, rtol=1e-10, atol=1e-16)
        else:
            for k, v in full.param_by_length.items():
                assert torch.allclose(split.param_by_length[k], v, rtol=1e-9, atol=1e-15), k


def test_batch_size_needs_a_loss_that_splits():
    model, x, y = _family("resmlp")
    with pytest.raises(ValueError, match="batch_size=0 must be an integer >= 1"):
        attribution.path_length_gradients(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="default loss"):
        attribution.path_length_gradients(model, x, y, batch_size=2, loss=lambda o, t: o.pow(2).sum())
    with pytest.raises(ValueError, match="mode='eval'"):
        attribution.path_length_gradients(model, x, y, batch_size=2, mode="train")
    with pytest.raises(ValueError, match="method='exact'"):
        attribution.path_length_gradients(model, x, y, batch_size=2, method="sample")


def test_result_frame_and_effective_paths():
    model, x, y = _family("resmlp")
    res = attribution.path_length_gradients(model, x, y)
    frame = res.to_frame()
    assert frame.columns.tolist() == ["method", "quantity", "wrt", "length", "count", "norm", "per_path_norm", "share"]
    assert set(frame.quantity) == {"net"}
    assert frame["share"].sum() == pytest.approx(1.0)
    eff = res.effective_paths(0.9)
    a, b = eff["lengths"]
    assert eff["share"] >= 0.9 and eff["num_paths"] == sum(math.comb(6, k) for k in range(a, b + 1))
    # no narrower window holds 0.9
    share = res.share.tolist()
    width = b - a + 1
    assert all(sum(share[i:i + width - 1]) < 0.9 for i in range(0, 7 - width + 2))
    assert res.effective_paths(1.0)["share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mass"):
        res.effective_paths(0)


def test_effective_paths_on_a_synthetic_profile():
    res = attribution.PathLengthGradients("exact", "input", torch.arange(5), [1, 4, 6, 4, 1],
                                          torch.tensor([0.0, 0.1, 0.7, 0.15, 0.05]), torch.zeros(5))
    # two windows of width 2 hold >= 0.8: (1, 2) holds 0.8, (2, 3) holds 0.85 and wins
    assert res.effective_paths(0.8)["lengths"] == (2, 3)
    assert res.effective_paths(0.8)["share"] == pytest.approx(0.85)
    assert res.effective_paths(0.8)["num_paths"] == 10
    assert res.effective_paths(0.69)["lengths"] == (2, 2)
    assert res.mean_length == pytest.approx(0.1 + 1.4 + 0.45 + 0.2)


def test_bad_input_is_a_clear_error():
    model, x, y = _family("resmlp")
    with pytest.raises(ValueError, match="method=.fast. is not allowed; choose one of .exact., .sample."):
        attribution.path_length_gradients(model, x, y, method="fast")
    with pytest.raises(ValueError, match="wrt='input'"):
        attribution.path_length_gradients(model, x, y, method="sample", wrt="units")
    with pytest.raises(ValueError, match="non-empty batch"):
        attribution.path_length_gradients(model, x[:0], y[:0])
    with pytest.raises(ValueError, match="one entry per input"):
        attribution.path_length_gradients(model, x, y[:2])
    with pytest.raises(ValueError, match="max_length"):
        attribution.path_length_gradients(model, x, y, max_length=-1)


def test_weight_shared_units_are_refused():
    block = models.ResidualBlock(nn.Linear(3, 3))
    net = nn.Sequential(block, block)
    # one rule everywhere (issue 25): a block registered twice is refused when the units are found
    with pytest.raises(unravel.UnsupportedModelError, match="registered in 2 places"):
        attribution.path_length_gradients(net, torch.randn(2, 3))


def test_train_mode_restores_buffers():
    model = _randomize_bn(models.resnet_cifar(8, width=4)).train()
    before = state_hash(model)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    attribution.path_length_gradients(model, x, y, mode="train")
    assert state_hash(model) == before and model.training


class _OutOfOrder(nn.Module):
    """Blocks called in the reverse of the order they are registered in: find_units without
    inputs lists them in registration order (timm's Twins registers its position encodings after
    all the blocks)."""

    def __init__(self):
        super().__init__()
        net = models.resmlp(4, 3, width=6, depth=3)
        self.stem, self.head = net.stem, net.head
        self.blocks = nn.ModuleList(list(net.blocks)[::-1])

    def forward(self, x):
        x = self.stem(x)
        for block in list(self.blocks)[::-1]:
            x = block(x)
        return self.head(x)


def test_units_registered_out_of_call_order():
    torch.manual_seed(0)
    model = _OutOfOrder().double().eval()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    names = [u.name for u in unravel.find_units(model)]
    assert names == ["blocks.0", "blocks.1", "blocks.2"] != [u.name for u in unravel.find_units(model, x)]
    g = _autograd_input_grad(model, x, y)  # at the input of the unit called first (blocks.2)
    res = attribution.path_length_gradients(model, x, y)
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-12, atol=1e-15)
    frame = attribution.norm_ratios(model, x, y)
    assert frame.name.tolist() == ["blocks.2", "blocks.1", "blocks.0"]  # the chain as it ran


def test_norm_ratios():
    model, x, y = _family("resnet-v1")
    frame = attribution.norm_ratios(model, x, y)
    assert len(frame) == 9 and frame.ratio.gt(0).all()
    # the same numbers straight from autograd
    ins, outs = {}, {}

    def compute(unit, xin, position, **kw):
        out = unit.forward(xin, **kw)
        ins[position.index], outs[position.index] = xin, out
        return out

    with unravel.intervene(model, compute=compute):
        loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [ins[i] for i in range(9)] + [outs[i] for i in range(9)])
    for i in range(9):
        assert frame.ratio[i] == pytest.approx(float(grads[i].norm() / grads[9 + i].norm()), rel=1e-10)


def test_tracker_records_over_training():
    data = unravel.data.mnist1d(num_samples=600)
    torch.manual_seed(0)
    net = models.resnet1d((1, 1), width=8)
    tracker = unravel.tracking.PathLengthTracker(data, probe_size=64, wrt=("input", "units"), subnetwork_units=[1, 2])
    unravel.train.fit(net, data, epochs=2, optimizer="adam", progress=False, callbacks=[tracker])
    frame = tracker.to_frame()
    assert sorted(frame.epoch.unique()) == [0, 1, 2] and set(frame.wrt) == {"input", "units"}
    assert len(frame) == 3 * 2 * 3  # epochs x wrt x lengths 0..2
    sub = tracker.subnetworks_frame()
    assert set(sub.subnetwork_units) == {1, 2} and sorted(sub.epoch.unique()) == [0, 1, 2]


def test_inplace_post_and_model_outputs():
    """An in-place ReLU after the sum (timm, torchvision RegNet) and a dict/ModelOutput-like
    output: the decomposition still sums to autograd's gradient."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(5, 5)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(x + self.f(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(Block(), Block(), Block())
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            return {"logits": self.head(self.blocks(x)), "hidden": x}

    net = Net().double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with unravel.adapters({Block: lambda m: unravel.UnitParts(residual=m.f, post=m.act)}):
        res = attribution.path_length_gradients(net, x, y)
        custom = attribution.path_length_gradients(net, x, y, loss=lambda out, t: out["logits"].pow(2).sum())
    x0 = x.clone().requires_grad_()
    g, = torch.autograd.grad(F.cross_entropy(net(x0)["logits"], y), x0)
    assert torch.allclose(res.total, g, rtol=1e-10, atol=1e-14)
    x0 = x.clone().requires_grad_()
    g, = torch.autograd.grad(net(x0)["logits"].pow(2).sum(), x0)
    assert torch.allclose(custom.total, g, rtol=1e-10, atol=1e-14)


class _OffChain(nn.Module):
    """A resmlp whose blocks do not form a chain: ``route="head"`` adds unit 0's output to the
    last one before the head (a skip to the head); ``route="aggregate"`` feeds unit 2 the sum of
    units 0 and 1 (a DLA-style aggregation node)."""

    def __init__(self, route):
        super().__init__()
        base = models.resmlp(6, 3, width=6, depth=3).double()
        self.stem, self.blocks, self.head, self.route = base.stem, base.blocks, base.head, route

    def forward(self, x):
        h0 = self.blocks[0](self.stem(x))
        h1 = self.blocks[1](h0)
        h2 = self.blocks[2](h1 + h0 if self.route == "aggregate" else h1)
        return self.head(h2 + h0 if self.route == "head" else h2)


@pytest.mark.parametrize("route, where", [("head", "the loss"), ("aggregate", r"the input of unit 2 \(blocks.2\)")])
def test_units_that_do_not_form_a_chain_are_refused(route, where):
    """Gradient that travels outside the chain (here through unit 0's output) would be left out
    of the parts: every decomposition refuses, naming where and which unit, even inside a
    lesion; the same blocks wired as a chain are accepted."""
    torch.manual_seed(0)
    net = _OffChain(route)
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    before = state_hash(net)
    for call in (lambda: attribution.path_length_gradients(net, x, y),
                 lambda: attribution.path_length_gradients(net, x, y, wrt="units"),
                 lambda: attribution.path_length_gradients(net, x, y, method="sample", num_samples=2)):
        with pytest.raises(unravel.errors.ArgumentError,
                           match=f"do not form a chain: {where} is computed from unit 0"):
            call()
    with unravel.lesion.delete(net, [1]), pytest.raises(unravel.errors.ArgumentError, match="do not form a chain"):
        attribution.path_length_gradients(net, x, y)
    assert state_hash(net) == before
    net.route = "chain"
    res = attribution.path_length_gradients(net, x, y)
    assert torch.allclose(res.by_length.sum(0), autograd_input_grad(net, x, y), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name, chunk_size", [("efficientformer_l1", None), ("tiny_vit_5m_224", None),
                                              ("tiny_vit_5m_224", 8)])
def test_parts_match_finite_differences_where_cotangent_layouts_differ(name, chunk_size):
    """Some backward kernels of torch (2.14, CPU) return wrong values when the cotangent is laid
    out in memory unlike the output: EfficientFormer hands transposed gradients between its units
    (autograd's own gradient at the first unit's input then misses a central finite difference),
    TinyViT permutes its states around ``local_conv``. unravel lays each cotangent out like its
    output: the parts sum to the finite difference on both."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().double()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)

    def loss(out, _):
        return out.pow(2).mean()

    res = attribution.path_length_gradients(model, x, loss=loss, chunk_size=chunk_size)  # 8: batched VJPs
    first = {}

    def run(x0):
        def compute(unit, xin, position, **kw):
            if not first.get("done"):
                first["done"] = True
                first["x"] = xin.detach()
                xin = x0 if x0 is not None else xin
            return unit.forward(xin, **kw)

        first.pop("done", None)
        with torch.no_grad(), unravel.intervene(model, compute=compute):
            return float(loss(model(x), None))

    run(None)
    x0 = first["x"]
    d = torch.randn_like(x0)
    eps = 1e-5
    fd = (run(x0 + eps * d) - run(x0 - eps * d)) / (2 * eps)
    assert float((res.total * d).sum()) == pytest.approx(fd, rel=1e-6)
