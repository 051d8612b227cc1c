"""Procrustes ResNets: operator singular values of convolutions, their projection, and training
with the projection (unravel.procrustes). Everything in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel.errors import ArgumentError
from unravel.procrustes import (ProcrustesCallback, clip_deviation, conv_singular_values, procrustes_,
                                procrustes_units, project_conv_, project_kernel)

CONV = {1: nn.Conv1d, 2: nn.Conv2d}


def operator(apply, c_in, n, d):
    """The matrix of a linear map of ``[c_in, n, ..., n]`` inputs, from its images of the basis."""
    size = c_in * n ** d
    basis = torch.eye(size, dtype=torch.float64).reshape(size, c_in, *([n] * d))
    with torch.no_grad():
        return apply(basis).reshape(size, -1).T


def circular_conv(c_in, c_out, k, d, stride=1, dilation=1, groups=1):
    conv = CONV[d](c_in, c_out, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                   groups=groups, bias=False, padding_mode="circular").double()
    nn.init.normal_(conv.weight)
    return conv


def full_kernel_operator(full, n, d, stride, padding):
    """The operator of a full (n-tap) kernel as project_kernel(restrict=False) describes it: a
    circular convolution read from offset -padding (pad `padding` before, n-1-padding after)."""
    pads = []
    for _ in range(d):
        pads += [padding, n - 1 - padding]
    conv = F.conv1d if d == 1 else F.conv2d
    return operator(lambda x: conv(F.pad(x, pads, mode="circular"), full, stride=stride), full.shape[1], n, d)


def svdvals(matrix):
    return torch.linalg.svdvals(matrix)


# ------------------------------------------------------------------------------------------
# singular values: exact against the explicit operator


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("c_in,c_out", [(1, 1), (2, 3), (3, 2), (4, 4), (4, 8)])
@pytest.mark.parametrize("k,stride", [(3, 1), (1, 1), (3, 2), (1, 2)])
def test_singular_values_equal_those_of_the_explicit_operator(d, c_in, c_out, k, stride):
    n = 6
    conv = circular_conv(c_in, c_out, k, d, stride)
    reference = svdvals(operator(conv, c_in, n, d))
    ours = conv_singular_values(conv, n)
    assert ours.dtype == torch.float64
    assert ours.shape == (min(c_out * (n // stride) ** d, c_in * n ** d),)
    assert torch.allclose(ours, reference, rtol=0, atol=1e-10)
    # the same from the bare kernel with the module's settings
    bare = conv_singular_values(conv.weight.detach(), (n,) * d, stride=stride, padding=(k - 1) // 2)
    assert torch.allclose(bare, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2])
def test_singular_values_with_dilation_groups_and_unequal_sizes(d):
    conv = circular_conv(4, 6, 3, d, stride=2, dilation=2, groups=2)
    sizes = (8,) if d == 1 else (8, 4)
    inputs = 4 * (8 if d == 1 else 32)
    basis = torch.eye(inputs, dtype=torch.float64).reshape(inputs, 4, *sizes)
    with torch.no_grad():
        matrix = conv(basis).reshape(inputs, -1).T
    assert matrix.shape[0] == 6 * inputs // 4 // 2 ** d
    assert torch.allclose(conv_singular_values(conv, sizes), svdvals(matrix), rtol=0, atol=1e-10)


def test_stride_one_override_gives_the_stride_one_operator():
    strided = circular_conv(3, 5, 3, 2, stride=2)
    dense = circular_conv(3, 5, 3, 2, stride=1)
    with torch.no_grad():
        dense.weight.copy_(strided.weight)
    assert torch.allclose(conv_singular_values(strided, 6, stride=1), svdvals(operator(dense, 3, 6, 2)), atol=1e-10)


def test_a_kernel_larger_than_the_input_wraps_around():
    conv = circular_conv(2, 3, 5, 1)  # padding 2 on an input of 3: taps add up modulo 3
    assert torch.allclose(conv_singular_values(conv, 3), svdvals(operator(conv, 2, 3, 1)), atol=1e-10)


def test_structural_zeros_of_a_strided_one_by_one_convolution():
    conv = circular_conv(4, 8, 1, 2, stride=2)  # reads one pixel in four
    n = 8
    values = conv_singular_values(conv, n)
    # per frequency: 8 rows, 4 live columns of 16 -> 4 values that are 0 whatever the weights
    assert int((values < 1e-12).sum()) == 4 * (n // 2) ** 2
    live = conv_singular_values(conv, n, structural_zeros=False)
    assert live.numel() == 4 * (n // 2) ** 2 and bool((live > 1e-6).all())
    report_count = unravel.procrustes.geometry._geometry(conv, n, None, None, None, None).structural_zero_count()
    assert report_count == 4 * (n // 2) ** 2
    project_conv_(conv, n)  # the live values all become 1; the structural zeros stay
    assert clip_deviation(conv, n) < 1e-12
    assert clip_deviation(conv, n, structural_zeros=True) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# projection


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("c_in,c_out,stride", [(3, 3, 1), (2, 4, 1), (4, 2, 1), (4, 8, 2), (4, 4, 2)])
@pytest.mark.parametrize("low,high", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0)])
def test_projection_without_restriction_clips_exactly(d, c_in, c_out, stride, low, high):
    n = 6
    conv = circular_conv(c_in, c_out, 3, d, stride)
    before = conv_singular_values(conv, n)
    full = project_kernel(conv, n, low, high, restrict=False)
    assert full.shape == (c_out, c_in) + (n,) * d
    after = svdvals(full_kernel_operator(full, n, d, stride, 1))[:before.numel()]
    # exactly the clipped singular values (clipping keeps their order)
    assert torch.allclose(after, before.clamp(low, high), rtol=0, atol=1e-10)
    assert torch.allclose(conv_singular_values(full, n, stride=stride, padding=1), after, atol=1e-10)
    assert clip_deviation(full, n, low, high, stride=stride, padding=1) < 1e-10


def test_stride_one_projection_and_the_strided_operator():
    # c_out <= c_in: the stride-1 operator gets orthonormal rows, and so does the strided one
    # (the same rows, some dropped)
    conv = circular_conv(8, 4, 3, 2, stride=2)
    full = project_kernel(conv, 8, stride=1, restrict=False)
    assert clip_deviation(full, 8, padding=1) < 1e-10
    strided = conv_singular_values(full, 8, stride=2, padding=1)
    assert torch.allclose(strided, torch.ones_like(strided), atol=1e-10)
    # c_out > c_in (a widening transition): the stride-1 operator becomes an isometry, but
    # dropping rows of an isometry does not keep norms: only the bound high carries over
    conv = circular_conv(4, 8, 3, 2, stride=2)
    full = project_kernel(conv, 8, stride=1, restrict=False)
    assert clip_deviation(full, 8, padding=1) < 1e-10
    strided = conv_singular_values(full, 8, stride=2, padding=1)
    assert strided.max() < 1 + 1e-10 and strided.min() < 0.9


@pytest.mark.parametrize("d,c_in,c_out,stride,n", [(2, 4, 8, 2, 16), (1, 4, 4, 1, 16)])
def test_with_restriction_the_deviation_shrinks_with_iterations(d, c_in, c_out, stride, n):
    conv = circular_conv(c_in, c_out, 3, d, stride)
    nn.init.kaiming_normal_(conv.weight)
    deviations = [clip_deviation(conv, n)]
    for iterations in (1, 5, 20):
        kernel = project_kernel(conv, n, iterations=iterations)
        assert kernel.shape == conv.weight.shape
        deviations.append(clip_deviation(kernel, n, stride=stride, padding=1))
    assert deviations == sorted(deviations, reverse=True) and len(set(deviations)) == 4
    assert deviations[-1] < 0.25 * deviations[1]


def test_restriction_is_exact_where_the_support_allows():
    # a 1x1 kernel: the projected operator is constant over frequencies, its kernel a single tap
    conv = circular_conv(3, 6, 1, 2)
    project_conv_(conv, 8)
    assert clip_deviation(conv, 8) < 1e-12
    # a 1-D transition conv of stride 2 whose polyphase matrices are square: alternating
    # projections reach an orthogonal operator
    conv = circular_conv(4, 8, 3, 1, stride=2)
    project_conv_(conv, 32, iterations=100)
    assert clip_deviation(conv, 32) < 1e-8
    assert torch.allclose(svdvals(operator(conv, 4, 32, 1)), torch.ones(8 * 16, dtype=torch.float64), atol=1e-8)


def test_an_orthogonal_operator_is_a_fixed_point():
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    conv = circular_conv(5, 5, 3, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = q
    kernel = conv.weight.detach().clone()
    project_conv_(conv, 7, iterations=3)
    assert torch.allclose(conv.weight, kernel, atol=1e-12)


def test_project_conv_works_in_place_on_the_weight_and_leaves_the_bias():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    weight, bias = conv.weight, conv.bias.detach().clone()
    before = weight.detach().clone()
    assert project_conv_(conv, 8) is conv
    assert conv.weight is weight and not torch.equal(weight, before) and torch.equal(conv.bias, bias)
    assert not weight.requires_grad or weight.grad is None


def test_float32_kernels_stay_float32():
    conv = nn.Conv1d(4, 4, 3, padding=1, bias=False)
    project_conv_(conv, 16, iterations=2)
    assert conv.weight.dtype == torch.float32
    assert conv_singular_values(conv, 16).dtype == torch.float32


# ------------------------------------------------------------------------------------------
# the transition units of a model


def test_procrustes_units_are_the_convolutions_of_projection_units():
    net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1)
    pairs = procrustes_units(net)
    assert [u.name for u, _ in pairs] == ["stage2.0", "stage2.0", "stage3.0", "stage3.0"]
    assert all(u.projection for u, _ in pairs)
    assert [c for _, c in pairs] == [net.stage2[0].residual[0], net.stage2[0].residual[3],
                                     net.stage3[0].residual[0], net.stage3[0].residual[3]]
    assert procrustes_units(net, parts=["shortcut"]) == []  # option A: zero padding, no conv

    net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1, shortcut="conv")
    shortcuts = procrustes_units(net, parts="shortcut")
    assert [c for _, c in shortcuts] == [net.stage2[0].shortcut[0], net.stage3[0].shortcut[0]]
    assert len(procrustes_units(net)) == 6


def test_procrustes_units_of_a_block_whose_residual_is_a_function():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(2, 4, 3, stride=2, padding=1)
            self.conv2 = nn.Conv1d(4, 4, 3, padding=1)
            self.down = nn.Conv1d(2, 4, 1, stride=2)

        def forward(self, x):
            return self.down(x) + self.conv2(self.conv1(x))

    block = Block()
    adapter = {Block: lambda m: unravel.UnitParts(residual=lambda x: m.conv2(m.conv1(x)), shortcut=m.down)}
    with unravel.adapters(adapter):
        assert [c for _, c in procrustes_units(nn.Sequential(block))] == [block.conv1, block.conv2, block.down]


def test_procrustes_reads_input_sizes_with_hooks_and_projects():
    net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1, shortcut="conv").double()
    x = torch.randn(3, 1, 16, dtype=torch.float64)
    report = procrustes_(net, x, iterations=10)
    assert report.input_size.tolist() == [(16,), (8,), (16,), (8,), (4,), (8,)]
    assert report.stride.tolist() == [(2,), (1,), (2,), (2,), (1,), (2,)]
    assert report.structural_zeros.tolist() == [0, 0, 32, 0, 0, 32]  # the 1x1 stride-2 shortcuts
    assert (report.deviation_after < report.deviation_before).all()
    assert report.deviation_after.max() < 0.2  # the square stride-1 convs converge slowest
    # the sizes can be given by name instead
    sizes = dict(zip(report.conv, report.input_size))
    again = procrustes_(net, input_sizes=sizes, iterations=10)
    assert again.conv.tolist() == report.conv.tolist()
    assert (again.deviation_after <= report.deviation_after + 1e-12).all()


def test_procrustes_stride1_mode():
    net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1).double()
    report = procrustes_(net, torch.randn(2, 1, 14, dtype=torch.float64), strided="stride1")  # 7 is odd
    assert report.stride.tolist() == [(1,)] * 4
    with pytest.raises(ArgumentError, match="divisible by the stride"):
        procrustes_(net, torch.randn(2, 1, 14, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# training a Procrustes ResNet


def _data():
    data = unravel.data.synthetic(160, input_shape=(1, 16), num_classes=2)
    for split in (data.train, data.test):
        split.tensors = tuple(t.double() if t.is_floating_point() else t for t in split.tensors)
    return data


@pytest.mark.parametrize("shortcut", ["pad", "conv"])
def test_callback_projects_during_fit(shortcut, monkeypatch):
    torch.manual_seed(0)
    net = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1, shortcut=shortcut).double()
    calls = []
    original = unravel.procrustes.project_conv_
    def spy(conv, *args, **kwargs):
        calls.append(conv)
        return original(conv, *args, **kwargs)

    monkeypatch.setattr(unravel.procrustes.model, "project_conv_", spy)
    cb = ProcrustesCallback(torch.zeros(1, 1, 16, dtype=torch.float64), iterations=3)
    history = unravel.train.fit(net, _data(), epochs=2, batch_size=16, callbacks=[cb], progress=False)
    steps = 2 * 128 // 16
    convs = [c for _, c in procrustes_units(net)]
    assert cb.projections == steps + 1  # at the start, then after every step
    assert len(calls) == len(convs) * (steps + 1) and set(map(id, calls)) == set(map(id, convs))
    assert [h["procrustes_deviation"] for h in history] == sorted(h["procrustes_deviation"] for h in history)[::-1]
    # afterwards the transition units' operators are nearly norm-preserving
    deviations = [clip_deviation(conv, size, stride=stride) for _, conv, _, size, stride, _, _ in cb.plan]
    assert max(deviations) < 0.05
    for _, conv, _, size, _, _, _ in cb.plan:
        values = conv_singular_values(conv, size, structural_zeros=False)
        assert torch.allclose(values, torch.ones_like(values), atol=0.05)
    # a net trained alike without the callback is far from it
    torch.manual_seed(0)
    plain = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1, shortcut=shortcut).double()
    unravel.train.fit(plain, _data(), epochs=2, batch_size=16, progress=False)
    free = [clip_deviation(c, size, stride=stride)
            for (_, c), (_, _, _, size, stride, _, _) in zip(procrustes_units(plain), cb.plan)]
    assert max(free) > 0.3


def test_callback_every_and_input_sizes():
    net = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1).double()
    sizes = {"stage2.0.residual.0": 16, "stage2.0.residual.3": 8, "stage3.0.residual.0": 8, "stage3.0.residual.3": 4}
    cb = ProcrustesCallback(input_sizes=sizes, every=3, at_start=False)
    unravel.train.fit(net, _data(), epochs=1, batch_size=16, callbacks=[cb], progress=False)
    assert cb.projections == 8 // 3
    assert [p[3] for p in cb.plan] == [16, 8, 8, 4]


# ------------------------------------------------------------------------------------------
# bad input


def test_errors():
    conv = nn.Conv2d(2, 2, 3, padding=1, stride=2)
    for call, match in [
        (lambda: conv_singular_values(nn.Linear(2, 2), 4), "convolution"),
        (lambda: project_conv_(nn.Linear(2, 2), 4), "convolution"),
        (lambda: project_conv_(nn.ConvTranspose2d(2, 2, 3), 4), "convolution"),
        (lambda: conv_singular_values(torch.randn(2, 2), 4), "kernel"),
        (lambda: conv_singular_values(conv, (4, 4, 4)), "tuple of 2"),
        (lambda: conv_singular_values(conv, 0), "input_size"),
        (lambda: conv_singular_values(conv, 5), "divisible by the stride"),
        (lambda: project_conv_(conv, 4, low=2.0, high=1.0), "empty"),
        (lambda: project_conv_(conv, 4, low=-1.0), "low"),
        (lambda: project_conv_(conv, 4, iterations=0), "iterations"),
        (lambda: project_kernel(conv, 4, iterations=2, restrict=False), "restrict"),
        (lambda: project_conv_(nn.Conv1d(2, 2, 5, padding=2), 3), "wraps around"),
        (lambda: ProcrustesCallback(), "exactly one"),
        (lambda: ProcrustesCallback(torch.zeros(1), every=0), "every"),
        (lambda: ProcrustesCallback(torch.zeros(1), strided="some"), "strided"),
        (lambda: procrustes_units(unravel.models.resnet_cifar(8), parts=["trunk"]), "parts"),
        (lambda: procrustes_(unravel.models.resnet_cifar(8), torch.zeros(1, 3, 8, 8), parts="shortcut"),
         "nothing to constrain"),
        (lambda: procrustes_(unravel.models.resnet_cifar(8, dims=1), input_sizes={"stem.0": 8}), "lacks"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            call()
    with pytest.raises(unravel.errors.ArgumentTypeError):
        conv_singular_values([[1.0]], 4)


# ------------------------------------------------------------------------------------------
# the Procrustes option of the reference models


@pytest.mark.parametrize("dims, n", [(1, 16), (2, 8)])
def test_procrustes_model_transitions_are_orthogonal_operators(dims, n):
    torch.manual_seed(0)
    net = unravel.models.preact_resnet_cifar(14, width=3, in_channels=1, dims=dims, procrustes=True).double()
    units = unravel.find_units(net)
    assert len(units) == 3 * 2 + 2  # n = 2 identity units per stage, and two transitions
    transitions = [u for u in units if u.projection]
    assert [u.name for u in transitions] == ["stage2.0", "stage3.0"] and {u.kind for u in transitions} == {"plain"}
    assert [c for _, c in procrustes_units(net)] == [u.module.residual for u in transitions]
    for unit, size in zip(transitions, (n, n // 2)):
        conv = unit.module.residual
        assert conv.kernel_size == (2,) * dims and conv.stride == (2,) * dims and conv.bias is None
        # the explicit operator (kernel = stride: no padding, so no border effects), brute force
        A = operator(conv, conv.in_channels, size, dims)
        s = torch.linalg.svdvals(A)
        if dims == 1:  # a square operator: all singular values 1, norm-preserving
            assert A.shape[0] == A.shape[1] and torch.allclose(s, torch.ones_like(s), atol=1e-12)
        else:  # 2c outputs from 4c inputs per position: orthonormal rows, half the input directions dropped
            assert 2 * A.shape[0] == A.shape[1] and torch.allclose(s, torch.ones_like(s), atol=1e-12)
        values = conv_singular_values(conv, size)
        assert torch.allclose(values, torch.ones_like(values), atol=1e-12)


def test_procrustes_model_stays_orthogonal_with_the_callback_only():
    data = _data()
    def trained(callbacks):
        torch.manual_seed(0)
        net = unravel.models.preact_resnet_cifar(8, width=2, num_classes=2, in_channels=1, dims=1,
                                                 procrustes=True).double()
        unravel.train.fit(net, data, epochs=2, batch_size=16, optimizer="adam", lr=0.01, callbacks=callbacks(),
                          progress=False)
        return net

    kept = trained(lambda: [ProcrustesCallback(torch.zeros(1, 1, 16, dtype=torch.float64))])
    free = trained(lambda: [])
    for net, close in ((kept, True), (free, False)):
        for u in unravel.find_units(net):
            if u.projection:
                s = conv_singular_values(u.module.residual, 16 if u.name == "stage2.0" else 8)
                assert bool((s - 1).abs().max() < 1e-10) == close
    # the unit's Jacobian is the operator: every singular value 1 (one projection iteration is exact)
    x = data.batch(2)[0]
    spectra = unravel.jacobian_spectra(kept, x, units=["stage2.0", "stage3.0"])
    assert (spectra.singular_value - 1).abs().max() < 1e-10


def test_procrustes_option_is_checked():
    with pytest.raises(ArgumentError, match="procrustes=True builds a pre-activation net"):
        unravel.models.CifarResNet(8, variant="v1", procrustes=True)
    with pytest.raises(ArgumentError, match="must be True or False"):
        unravel.models.preact_resnet_cifar(8, procrustes="yes")
