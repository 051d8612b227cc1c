"""Norm preservation as Zaeemzadeh et al. measure it (unravel.jacobian.norms): extreme singular
values of unit Jacobians, the share within [1 - delta, 1 + delta], gradient-norm ratios. Known
answers and float64 brute force."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel.errors import ArgumentError
from unravel.jacobian import band_summary, gradient_norm_ratios, measure_norm_preservation
from unravel.models import ResidualBlock


def scaled_chain(scales, d=5, kinds=None):
    """Units whose Jacobian is known: x + a x (residual) or a x (plain), then a linear head."""
    kinds = kinds or ["residual"] * len(scales)
    blocks = []
    for a, kind in zip(scales, kinds):
        lin = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            lin.weight.copy_(a * torch.eye(d))
        blocks.append(ResidualBlock(lin, kind=kind))
    return nn.Sequential(*blocks, nn.Linear(d, 3)).double()


def test_known_singular_values_and_ratios():
    net = scaled_chain([0.0, 0.05, 0.3, 0.5], kinds=["residual", "residual", "residual", "plain"])
    x = torch.randn(4, 5, dtype=torch.float64)
    s = measure_norm_preservation(net, x, delta=0.1)
    expected = {0: 1.0, 1: 1.05, 2: 1.3, 3: 0.5}  # 1 + a, and a for the plain unit
    assert sorted(s.unit.unique()) == [0, 1, 2, 3] and (s.n_values == 5).all()
    for unit, value in expected.items():
        rows = s[s.unit == unit]
        assert len(rows) == 4
        assert torch.allclose(torch.tensor(rows[["s_min", "s_max"]].values), torch.tensor(value, dtype=torch.float64))
        assert (rows.within_band == (1.0 if abs(value - 1) <= 0.1 else 0.0)).all()
    r = gradient_norm_ratios(net, x, torch.tensor([0, 1, 2, 0]))
    assert len(r) == 16 and list(r.columns) == unravel.jacobian.RATIO_COLUMNS
    for unit, value in expected.items():
        assert torch.allclose(torch.tensor(r[r.unit == unit].ratio.values, dtype=torch.float64),
                              torch.tensor(value, dtype=torch.float64))


def test_band_summary_counts_the_band():
    f = pd.DataFrame({"unit": [0] * 5 + [1] * 5, "name": "u", "kind": "residual", "projection": False, "example": 0,
                      "rank": list(range(5)) * 2,
                      "singular_value": [1.3, 1.1, 1.0, 0.9, 0.2] + [1.0, 1.0, 1.0, 1.0, 1.0]})
    out = band_summary(f, delta=0.1)
    assert out[["s_min", "s_max", "within_band"]].values.tolist() == [[0.2, 1.3, 0.6], [1.0, 1.0, 1.0]]
    assert band_summary(f, delta=0.35).within_band.tolist() == [0.8, 1.0]


def _unit_inputs(net, units, x):
    seen = {}
    handles = [u.module.register_forward_hook(lambda m, a, o, i=u.index: seen.setdefault(i, (a[0], o)) and None)
               for u in units]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("make", ["mlp", "conv"])
def test_against_brute_force(make):
    torch.manual_seed(0)
    if make == "mlp":
        net = unravel.models.resmlp(4, 3, width=5, depth=3).double().eval()
        x = torch.randn(3, 4, dtype=torch.float64)
    else:
        net = unravel.models.preact_resnet_cifar(8, width=2, num_classes=3, in_channels=1, dims=1).double()
        x = torch.randn(64, 1, 8, dtype=torch.float64)
        net = unravel.jacobian.spectra.recalibrated(net, x)  # BatchNorm statistics that are not the identity
        x = x[:3]
    units = unravel.find_units(net)
    summary = measure_norm_preservation(net, x, delta=0.2)
    inputs = _unit_inputs(net, units, x)
    for u in units:
        for e in range(3):
            xin = inputs[u.index][0][e:e + 1]
            jac = torch.autograd.functional.jacobian(u.module, xin)
            jac = jac.reshape(inputs[u.index][1][e].numel(), xin.numel())
            s = torch.linalg.svdvals(jac)
            row = summary[(summary.unit == u.index) & (summary.example == e)].iloc[0]
            assert abs(row.s_min - float(s.min())) < 1e-10 and abs(row.s_max - float(s.max())) < 1e-10
            assert row.within_band == pytest.approx(float(((s >= 0.8) & (s <= 1.2)).double().mean()))
    # gradient ratios: the loss's gradients at every unit's input and output, by a manual forward
    y = torch.tensor([0, 1, 2])
    r = gradient_norm_ratios(net, x, y)
    hs = []
    def keep(m, a, o):
        o.retain_grad()
        hs.append(o)
    handles = [u.module.register_forward_hook(keep) for u in units]
    x_leaf = x.clone().requires_grad_(True)
    first = units[0].module.register_forward_pre_hook(lambda m, a: a[0].retain_grad() or hs.insert(0, a[0]))
    F.cross_entropy(net(x_leaf), y, reduction="sum").backward()
    for h in handles + [first]:
        h.remove()
    norms = [h.grad.flatten(1).norm(dim=1) for h in hs]  # x_0, x_1, ..., x_n along the chain
    for u in units:
        brute = norms[u.index] / norms[u.index + 1]
        got = torch.tensor(r[r.unit == u.index].sort_values("example").ratio.values, dtype=torch.float64)
        assert torch.allclose(got, brute, rtol=1e-10)
    # the ratio of J^T g to g lies between the extreme singular values
    both = r.merge(summary, on=["unit", "example"])
    assert ((both.ratio >= both.s_min - 1e-12) & (both.ratio <= both.s_max + 1e-12)).all()
    assert net.training is False


def test_ratios_restore_the_model_and_leave_grads():
    net = unravel.models.preact_resnet_cifar(8, width=2, num_classes=2, in_channels=1, dims=1).double().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = gradient_norm_ratios(net, torch.randn(4, 1, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1]), units=[0, 2])
    assert sorted(r.unit.unique()) == [0, 2]
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_errors():
    net = scaled_chain([0.1])
    x = torch.randn(2, 5, dtype=torch.float64)
    for call, match in [
        (lambda: measure_norm_preservation(net, x, delta=1.5), "delta"),
        (lambda: band_summary(pd.DataFrame({"unit": [0]}), 0.1), "missing"),
        (lambda: gradient_norm_ratios(net, x, torch.tensor([0])), "one entry per example"),
        (lambda: gradient_norm_ratios(net, x, torch.tensor([0, 1]), loss=3), "callable"),
        (lambda: gradient_norm_ratios(net, x, torch.tensor([0, 1]), units=[7]), "7"),
        (lambda: gradient_norm_ratios(nn.Linear(2, 2), x, torch.tensor([0, 1])), None),
    ]:
        with pytest.raises((ArgumentError, unravel.errors.UnravelError), match=match):
            call()
