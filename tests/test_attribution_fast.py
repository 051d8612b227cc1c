"""The exact decomposition at its floor (issue 29): folded batch norms and ReLU masks, in-place
accumulation, streamed records and the memory-bounded default give the results of the plain
recursion (the code before, frozen in ``benchmarks/_before``) to float64 tolerance."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import unravel
from unravel import attribution, models
from unravel.attribution import _budget
from unravel.attribution import exact as exact_module
from unravel.attribution._record import record

from .conftest import autograd_input_grad, randomize_bn
from .test_attribution import FAMILIES, _family

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _before():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("_before")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _spliced(t):
    return t is not None and t.grad_fn is not None and type(t.grad_fn).__name__ == "_SplicedBackward"


BN_FAMILIES = ["resnet-v1", "resnet-v1-conv", "resnet-v2", "se-resnet", "bottleneck", "densenet", "plain"]


@pytest.mark.parametrize("family", BN_FAMILIES)
def test_folded_vjps_equal_unfolded(family):
    """Each unit's branch VJPs with its batch norms and ReLU masks folded into the convolutions
    equal autograd's own, and the forward values are the modules' own, bit for bit."""
    model, x, y = _family(family)
    units = unravel.find_units(model)
    with attribution._record.analysis_mode(model, "eval"):
        plain, _, _ = record(model, units, (x,), y, attribution._record.default_loss(y))
        folded, _, _ = record(model, units, (x,), y, attribution._record.default_loss(y), fold=True)
    torch.manual_seed(1)
    spliced = 0
    for a, b in zip(plain, folded):
        assert torch.equal(a.y, b.y)
        for branch in ("r", "s"):
            ta, tb = getattr(a, branch), getattr(b, branch)
            if ta is None or ta is a.x:
                continue
            assert torch.equal(ta, tb)
            spliced += _spliced(tb)
            g = torch.randn_like(ta)
            want, = torch.autograd.grad(ta, a.x, g, retain_graph=True, allow_unused=True)
            got, = torch.autograd.grad(tb, b.x, g, retain_graph=True, allow_unused=True)
            if want is None:
                assert got is None
                continue
            assert torch.allclose(got, want, rtol=1e-12, atol=1e-14 * float(want.abs().max())), (a.unit.name, branch)
    if family in ("resnet-v1", "resnet-v1-conv", "plain"):  # conv -> bn ends the branch
        assert spliced >= len(units)


def test_modules_in_train_mode_are_not_folded():
    """A batch norm in train mode normalises with the batch's statistics: never folded, even when
    the rest of the model is in eval mode; the parts still sum to the gradient."""
    model, x, y = _family("resnet-v1")
    units = unravel.find_units(model)
    loss = attribution._record.default_loss(y)
    with attribution._record.analysis_mode(model, "train"):
        recs, _, _ = record(model, units, (x,), y, loss, fold=True)
    assert not any(_spliced(r.r) for r in recs)
    bn = units[0].module.residual[-1]
    assert isinstance(bn, nn.BatchNorm2d)
    with attribution._record.analysis_mode(model, "eval"):
        bn.train()
        try:
            recs, _, _ = record(model, units, (x,), y, loss, fold=True)
        finally:
            bn.eval()
    assert not _spliced(recs[0].r) and _spliced(recs[1].r)
    # train-mode attribution (batch statistics) is not folded and still conserves the gradient
    res = attribution.path_length_gradients(model, x, y, mode="train")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        g = autograd_input_grad(model, x, y)
    finally:
        model.load_state_dict(state)
        model.eval()
    assert torch.allclose(res.total, g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))


OLD_FAMILIES = ["resnet-v1-conv", "resnet-v2", "bottleneck", "transformer-preln", "transformer-postln", "densenet",
                "resmlp", "se-resnet"]


@pytest.mark.parametrize("family", OLD_FAMILIES)
def test_equals_the_implementation_before(family):
    """The streamed, in-place, folded propagation gives the parts the plain recursion gave
    (the code before issue 29): input and parameter parts, with max_length and batched chunks."""
    old = _before().path_length_gradients
    model, x, y = _family(family)
    for kw in ({}, {"max_length": 2, "chunk_size": 2}, {"wrt": "units"}, {"wrt": "units", "max_length": 3,
                                                                          "chunk_size": 3}):
        want, got = old(model, x, y, **kw), attribution.path_length_gradients(model, x, y, **kw)
        assert got.counts == want.counts and got.loss == pytest.approx(want.loss, rel=1e-12)
        assert torch.allclose(got.norms, want.norms, rtol=1e-10, atol=1e-16)
        assert got.dropped_norm == pytest.approx(want.dropped_norm, rel=1e-9, abs=1e-16)
        if got.by_length is not None:
            scale = float(want.by_length.abs().max())
            assert torch.allclose(got.by_length, want.by_length, rtol=1e-10, atol=1e-14 * scale)
            assert torch.allclose(got.total, want.total, rtol=1e-10, atol=1e-14 * scale)
        else:
            for k, v in want.param_by_length.items():
                assert torch.allclose(got.param_by_length[k], v, rtol=1e-9, atol=1e-14 * float(v.abs().max() + 1)), k


@pytest.mark.parametrize("family", ["resnet-v1-conv", "resmlp", "transformer-preln"])  # a ReLU post, none
def test_lesioned_model_equals_the_implementation_before(family):
    old = _before().path_length_gradients
    model, x, y = _family(family)
    with unravel.lesion.delete(model, [1, 3]):
        for wrt in ("input", "units"):
            want, got = old(model, x, y, wrt=wrt), attribution.path_length_gradients(model, x, y, wrt=wrt)
            assert got.counts == want.counts
            assert torch.allclose(got.norms, want.norms, rtol=1e-10, atol=1e-16) and float(got.norms.max()) > 0
            if wrt == "input":
                scale = float(want.by_length.abs().max())
                assert torch.allclose(got.by_length, want.by_length, rtol=1e-10, atol=1e-14 * scale)


def _spy(monkeypatch):
    calls = []
    real = exact_module.record
    monkeypatch.setattr(exact_module, "record", lambda *a, **k: calls.append(a[2][0].shape[0]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("family", ["resnet-v1-conv", "transformer-postln", "densenet"])
def test_memory_budget_gives_the_unbounded_result(family, monkeypatch):
    """A budget that holds two examples at a time splits the batch (after a one-example probe)
    and gives the result of the whole batch at once, for the input and the parameter parts."""
    model, x, y = _family(family)
    x, y = torch.cat([x, x.flip(0) * 0.5]), torch.cat([y, y.flip(0)])  # an uneven last piece
    calls = _spy(monkeypatch)
    whole = attribution.path_length_gradients(model, x, y, batch_size=len(x))
    assert calls == [len(x)]
    # the toy models need a few kB per example: say they need half the budget
    monkeypatch.setattr(exact_module, "bytes_per_example", lambda *a: 2**29)
    for wrt in ("input", "units"):
        calls.clear()
        tight = attribution.path_length_gradients(model, x, y, wrt=wrt, memory_budget=2**30)
        assert calls == [1] + [2] * (len(x) // 2) + [1] * (len(x) % 2)  # the probe, then the steps
        want = whole if wrt == "input" else attribution.path_length_gradients(model, x, y, wrt=wrt,
                                                                               batch_size=len(x))
        assert torch.allclose(tight.norms, want.norms, rtol=1e-10, atol=1e-16)
        assert tight.loss == pytest.approx(want.loss, rel=1e-12)
        if wrt == "input":
            scale = float(want.by_length.abs().max())
            assert torch.allclose(tight.by_length, want.by_length, rtol=1e-10, atol=1e-14 * scale)
        else:
            for k, v in want.param_by_length.items():
                assert torch.allclose(tight.param_by_length[k], v, rtol=1e-9, atol=1e-14 * float(v.abs().max() + 1)), k


def test_default_budget_is_half_the_memory_available(monkeypatch):
    """By default the batch is split only where half the memory available would not hold it."""
    model, x, y = _family("resnet-v1")
    calls = _spy(monkeypatch)
    whole = attribution.path_length_gradients(model, x, y)
    assert calls == [1, len(x)]  # a probe, then the whole batch
    per = {}
    real = exact_module.bytes_per_example
    monkeypatch.setattr(exact_module, "bytes_per_example", lambda *a: per.setdefault("b", real(*a)))
    monkeypatch.setattr(exact_module, "available_bytes", lambda device: 2 * 2**20)
    calls.clear()
    res = attribution.path_length_gradients(model, x, y)
    assert per["b"] > 0 and calls[1] == max(1, min(len(x), 2**20 // per["b"]))
    assert sum(calls[1:]) == len(x)
    assert torch.allclose(res.total, whole.total, rtol=1e-10, atol=1e-14 * float(whole.total.abs().max()))
    monkeypatch.setattr(exact_module, "bytes_per_example", lambda *a: 2**20)  # one example per step
    calls.clear()
    res = attribution.path_length_gradients(model, x, y)
    assert calls == [1] * (1 + len(x))
    assert torch.allclose(res.by_length, whole.by_length, rtol=1e-10, atol=1e-14 * float(whole.by_length.abs().max()))
    monkeypatch.setattr(exact_module, "available_bytes", lambda device: None)  # unknown: not split, no probe
    calls.clear()
    attribution.path_length_gradients(model, x, y)
    assert calls == [len(x)]


def test_bytes_per_example_estimate():
    model, x, y = _family("resnet-v1")
    units = unravel.find_units(model)
    saved = _budget.SavedBytes(model)
    with attribution._record.analysis_mode(model, "eval"), saved.hooks():
        recs, _, _ = record(model, units, (x[:1],), y[:1], attribution._record.default_loss(y), fold=True)
    per = _budget.bytes_per_example(recs, saved, len(units), "input")
    act = sum(r.y.numel() * r.y.element_size() for r in recs)
    assert act < per < 100 * act
    assert _budget.examples_per_step(per, 10 * per, 64) == 10
    assert _budget.examples_per_step(per, per // 2, 64) == 1
    assert _budget.examples_per_step(per, 1000 * per, 64) == 64


@pytest.mark.parametrize("bad", [0, -5, 100, 2**20 - 1, True, "4GiB", float("nan"), float("inf"), [2**30]])
def test_bad_memory_budget_is_a_clear_error(bad):
    model, x, y = _family("resmlp")
    with pytest.raises(unravel.UnravelError, match=r"memory_budget=.* is not allowed: give a number of bytes of "
                                                   r"at least 1 MiB"):
        attribution.path_length_gradients(model, x, y, memory_budget=bad)


def test_memory_budget_needs_a_loss_that_splits():
    model, x, y = _family("resmlp")
    with pytest.raises(unravel.UnravelError, match="memory_budget splits .* default loss"):
        attribution.path_length_gradients(model, x, y, memory_budget=2**30, loss=lambda o, t: o.pow(2).sum())
    with pytest.raises(unravel.UnravelError, match="mode='eval'"):
        attribution.path_length_gradients(model, x, y, memory_budget=2**30, mode="train")


def test_float32_resnet110_shape_conserves():
    """A ResNet at float32 (folded convolutions, in-place masks): the parts still sum to autograd's
    gradient to float32 precision."""
    torch.manual_seed(0)
    model = randomize_bn(models.resnet_cifar(20, width=4, shortcut="conv")).eval()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    res = attribution.path_length_gradients(model, x, y)
    g = autograd_input_grad(model, x, y)
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))


def test_families_listed():
    assert set(BN_FAMILIES) <= set(FAMILIES) and set(OLD_FAMILIES) <= set(FAMILIES)


def test_in_place_ops_between_convolution_and_batch_norm_are_not_skipped():
    """conv -> ReLU(inplace=True) -> bn: the in-place ReLU returns the convolution's output object
    with new values, so the batch norm is not folded into the convolution across it."""
    from unravel.models._blocks import ResidualBlock

    torch.manual_seed(0)

    def block():
        return ResidualBlock(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(3),
                                           nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)), post=nn.ReLU())

    model = randomize_bn(nn.Sequential(block(), block(), block(), nn.Flatten(), nn.Linear(3 * 6 * 6, 3))).double().eval()
    x, y = torch.randn(3, 3, 6, 6, dtype=torch.float64), torch.randint(0, 3, (3,))
    res = attribution.path_length_gradients(model, x, y)
    want = _before().path_length_gradients(model, x, y)
    assert torch.allclose(res.by_length, want.by_length, rtol=1e-10, atol=1e-14 * float(want.by_length.abs().max()))
    g = autograd_input_grad(model, x, y)
    assert torch.allclose(res.total, g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
