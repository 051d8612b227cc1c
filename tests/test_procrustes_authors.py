"""The authors' Procrustes recipe (Zaeemzadeh et al.'s code) beside ours: Newton-Schulz polar
factors, the sqrt(c_out/c_in) target, the stem, a random half of the steps; and the bottleneck
ProcResNet. Exactness checks in float64."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import unravel
from unravel.errors import ArgumentError
from unravel.procrustes import (RECIPES, ProcrustesCallback, conv_singular_values, newton_schulz_polar, procrustes_,
                                procrustes_units, project_conv_, project_kernel)


def polar_svd(a):
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def authors_polar(a, steps):
    """Zaeemzadeh et al.'s computation, written out: the real formulation K = [[R, I], [-I, R]],
    the coupled Newton-Schulz iteration for (K^T K)^(-1/2), scaled by ||K^T K||_F where above 1,
    and the complex matrix read back as they read it (top-left block minus i top-right)."""
    r, i = a.real, a.imag
    k = torch.cat([torch.cat([r, i], 1), torch.cat([-i, r], 1)], 0)
    ktk = k.T @ k
    c = max(float(torch.linalg.matrix_norm(ktk)), 1.0)
    y, z = ktk / c, torch.eye(len(ktk), dtype=ktk.dtype)
    eye = torch.eye(len(ktk), dtype=ktk.dtype)
    for _ in range(steps):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    kt = k @ (z / math.sqrt(c))
    m, n = a.shape
    return kt[:m, :n] - 1j * kt[:m, n:]


@pytest.mark.parametrize("shape", [(6, 3), (3, 6), (4, 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_newton_schulz_converges_to_the_polar_factor(shape, dtype):
    torch.manual_seed(0)
    a = torch.randn(5, *shape, dtype=dtype) * 3.0  # a batch, norms above 1 (scaled) ...
    target = polar_svd(a)
    errors = [float((newton_schulz_polar(a, s) - target).abs().max()) for s in (2, 5, 10, 40)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-12
    small = a / 100  # ... and below 1 (not scaled, as in the authors' code: slower)
    assert float((newton_schulz_polar(small, 60) - polar_svd(small)).abs().max()) < 1e-10


@pytest.mark.parametrize("shape", [(6, 3), (3, 6)])
def test_newton_schulz_iterates_are_the_authors(shape):
    torch.manual_seed(1)
    a = torch.randn(*shape, dtype=torch.complex128)
    for steps in (1, 3, 10):
        ours = newton_schulz_polar(a, steps)
        theirs = authors_polar(a, steps)
        # their code reads back the conjugate: the factor of frequency -f at f (see the howto)
        assert torch.allclose(ours, theirs.conj(), atol=1e-12)


def test_newton_schulz_projection_reaches_the_target():
    torch.manual_seed(2)
    w = torch.randn(8, 4, 3, dtype=torch.float64)
    target = math.sqrt(2.0)
    full = project_kernel(w, 16, target, target, padding=1, restrict=False, method="newton_schulz", steps=40)
    s = conv_singular_values(full, 16, padding=1)
    assert torch.allclose(s, torch.full_like(s, target), atol=1e-10)
    # 10 steps (the authors' default): nearer than before, not necessarily there
    s10 = conv_singular_values(project_kernel(w, 16, target, target, padding=1, restrict=False,
                                              method="newton_schulz"), 16, padding=1)
    s0 = conv_singular_values(w, 16, padding=1)
    assert (s10 - target).abs().max() < (s0 - target).abs().max()
    # a 1x1 kernel's frequencies are all one matrix: restriction to the support is exact
    conv = nn.Conv1d(4, 8, 1, stride=2, bias=False).double()
    project_conv_(conv, 16, target, target, stride=1, method="newton_schulz", steps=40)
    s = conv_singular_values(conv, 16, stride=1)
    assert torch.allclose(s, torch.full_like(s, target), atol=1e-10)
    assert torch.allclose(conv.weight[..., 0], target * polar_svd(conv.weight[..., 0]), atol=1e-10)


def test_authors_recipe_on_procresnet():
    torch.manual_seed(3)
    net = unravel.models.procresnet(13, width=2, in_channels=1, dims=1).double()
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    assert [c for _, c in procrustes_units(net, parts=["stem"])] == [net.stem]
    report = procrustes_(net, x, recipe="authors", steps=40)
    assert report.conv.tolist() == ["stem", "stage2.0.residual", "stage3.0.residual"]
    assert report.stride.tolist() == [(1,)] * 3  # the stride-1 operators
    assert np.allclose(report.high, [math.sqrt(8 / 1), math.sqrt(2), math.sqrt(2)])
    assert (report.low == report.high).all()
    assert (report.deviation_after < report.deviation_before).all()
    assert (report.deviation_after[1:] < 1e-10).all()  # 1x1 transitions: exact
    for conv in (net.stage2[0].residual, net.stage3[0].residual):
        s = conv_singular_values(conv, 8, stride=1)
        assert torch.allclose(s, torch.full_like(s, math.sqrt(2)), atol=1e-10)
    # ours on the same net: no stem, the strided operators, target 1
    ours = procrustes_(net, x)
    assert ours.conv.tolist() == ["stage2.0.residual", "stage3.0.residual"]
    assert ours.stride.tolist() == [(2,)] * 2 and (ours.high == 1).all()


def test_random_half_is_seeded():
    def draws(seed, every=1, n=2000):
        cb = ProcrustesCallback(input_sizes={}, recipe="authors", seed=seed, every=every)
        return [s for s in range(1, n + 1) if cb.draw(s)]

    first = draws(0)
    assert first == draws(0) and first != draws(1)
    assert 0.45 < len(first) / 2000 < 0.55
    assert all(s % 2 == 0 for s in draws(0, every=2)) and 0.45 < len(draws(0, every=2)) / 1000 < 0.55
    assert len(draws(0, n=50)) < 50 and len(draws(0, n=50)) > 0
    everything = ProcrustesCallback(input_sizes={}, recipe="ours")
    assert all(everything.draw(s) for s in range(1, 100))


def _data():
    data = unravel.data.synthetic(96, input_shape=(1, 16), num_classes=2)
    for split in (data.train, data.test):
        split.tensors = tuple(t.double() if t.is_floating_point() else t for t in split.tensors)
    return data


def test_authors_callback_in_fit_is_reproducible():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = unravel.models.procresnet(13, width=2, num_classes=2, in_channels=1, dims=1).double()
        cb = ProcrustesCallback(torch.zeros(1, 1, 16, dtype=torch.float64), recipe="authors", seed=5, steps=30)
        unravel.train.fit(net, _data(), epochs=2, batch_size=8, callbacks=[cb], progress=False, seed=0)
        runs.append((cb.projected_steps, [p.detach().clone() for p in net.parameters()]))
        assert cb.projections == len(cb.projected_steps) and cb.projected_steps
        assert 0.25 < len(cb.projected_steps) / 20 < 0.75
        assert [p.name for p in cb.plan] == ["stem", "stage2.0.residual", "stage3.0.residual"]
        last = max(cb.projected_steps)
        if last == 20:  # projected after the last step: the transitions sit at sqrt(2)
            for p in cb.plan[1:]:
                s = conv_singular_values(p.conv, p.input_size, stride=1)
                assert torch.allclose(s, torch.full_like(s, math.sqrt(2)), atol=1e-8)
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_recipes_and_overrides():
    cb = ProcrustesCallback(input_sizes={}, recipe="authors", probability=1.0, parts=["residual"])
    assert cb.probability == 1.0 and cb.parts == ("residual",) and cb.method == "newton_schulz"
    band = ProcrustesCallback(input_sizes={}, recipe="authors", target="band", low=2.0, high=2.0)
    assert (band.low, band.high, band.method) == (2.0, 2.0, "newton_schulz")
    assert RECIPES["authors"]["steps"] == 10 and RECIPES["authors"]["probability"] == 0.5
    for kwargs, match in [
        (dict(recipe="theirs"), "recipe"),
        (dict(probability=0.0), "probability"),
        (dict(probability=1.5), "probability"),
        (dict(method="newton_schulz", low=0.5, high=1.0), "low == high"),
        (dict(method="qr"), "method"),
        (dict(target="unit"), "target"),
        (dict(parts=["head"]), "parts"),
        (dict(recipe="authors", steps=0), "steps"),
        (dict(recipe="authors", high=2.0), "ignored"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            ProcrustesCallback(input_sizes={}, **kwargs)
    with pytest.raises(ArgumentError, match="matrices"):
        newton_schulz_polar(torch.randn(3))


@pytest.mark.parametrize("dims", [1, 2])
def test_procresnet_units(dims):
    torch.manual_seed(4)
    net = unravel.models.procresnet(22, width=2, num_classes=3, in_channels=2, dims=dims).double()
    x = torch.randn(2, 2, *([8] * dims), dtype=torch.float64)
    assert net(x).shape == (2, 3)
    units = unravel.verify_units(net, x)  # found, and the routed forward equals the model's
    assert len(units) == 3 * 2 + 2
    assert [u.name for u in units if u.projection] == ["stage2.0", "stage3.0"]
    assert {u.kind for u in units if u.projection} == {"plain"} and {u.kind for u in units if not u.projection} == {
        "residual"}
    convs = [c for _, c in procrustes_units(net)]
    assert convs == [net.stage2[0].residual, net.stage3[0].residual]
    assert all(c.kernel_size == (1,) * dims and c.stride == (2,) * dims for c in convs)
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 16), (16, 32)]
    bottleneck = net.stage1[0].residual
    assert [m.out_channels for m in bottleneck if isinstance(m, (nn.Conv1d, nn.Conv2d))] == [2, 2, 8]
    # deleting a transition puts the subsample-and-pad bypass in its place
    with unravel.lesion.delete(net, [units[3]]):
        assert net(x).shape == (2, 3)
    assert unravel.models.build_model("procresnet", (1, 16), depth=13, num_classes=2).dims == 1
    for depth in (12, 20, True):
        with pytest.raises(ArgumentError, match="9n\\+4"):
            unravel.models.procresnet(depth)


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_pointwise_kernels_take_the_exact_shortcut(method):
    """A 1x1 kernel's stride-1 operator holds the kernel's matrices at every frequency: projecting
    them once equals the FFT path (restrict=False, which never takes the shortcut), and its
    singular values are theirs, as the explicit operator says."""
    torch.manual_seed(6)
    for groups, dims in [(1, 1), (2, 2)]:
        conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(4, 8, 1, stride=2, groups=groups, bias=False).double()
        w = conv.weight.detach()
        short = project_kernel(conv, 8, 1.5, 1.5, stride=1, method=method, steps=12)
        full = project_kernel(conv, 8, 1.5, 1.5, stride=1, method=method, steps=12, restrict=False)
        assert torch.allclose(short.flatten(2)[..., 0], full.flatten(2)[..., 0], atol=1e-12)
        assert full.flatten(2)[..., 1:].abs().max() < 1e-12
        blocks = w.reshape(groups, 8 // groups, 4 // groups)
        values = torch.linalg.svdvals(blocks).flatten().repeat(8 ** dims).sort(descending=True).values
        assert torch.allclose(conv_singular_values(conv, 8, stride=1), values, atol=1e-12)
        eye = torch.eye(4 * 8 ** dims, dtype=torch.float64).reshape(-1, 4, *([8] * dims))
        one = (nn.Conv1d if dims == 1 else nn.Conv2d)(4, 8, 1, groups=groups, bias=False).double()
        with torch.no_grad():
            one.weight.copy_(w)
            matrix = one(eye).reshape(len(eye), -1).T
        assert torch.allclose(torch.linalg.svdvals(matrix), values, atol=1e-10)
