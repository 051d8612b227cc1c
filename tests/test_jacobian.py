"""unravel.jacobian_spectra: exact spectra against autograd's full Jacobians, Lanczos against
exact, per-example independence, the model left as it was, and the errors."""

import numpy as np
import pytest
import torch
from torch import nn

import unravel
from unravel import models
from unravel.errors import ArgumentError, ArgumentTypeError

from .conftest import TinyTransformer, randomize_bn, state_hash


def _record(model, *inputs, **kw_inputs):
    """Each unit's recorded input and keyword arguments, independently of unravel.jacobian."""
    seen = {}

    def compute(unit, x, position, **kw):
        seen.setdefault(position.index, (unit, x.detach().clone(), kw))
        return unit.forward(x, **kw)

    with torch.no_grad(), unravel.intervene(model, compute=compute):
        model(*inputs, **kw_inputs)
    return seen


def _reference(unit, x, kw, i, embed=False):
    """svdvals of autograd's full Jacobian of the unit at example i (the rest of the batch held
    fixed when ``embed``; otherwise the example alone, keyword tensors with a batch dim cut)."""
    if embed:
        def f(v):
            return unit.forward(x.index_copy(0, torch.tensor([i]), v.unsqueeze(0)), **kw)[i]
    else:
        kw_i = {k: (w[i:i + 1] if torch.is_tensor(w) and w.dim() and w.shape[0] == x.shape[0] else w)
                for k, w in kw.items()}

        def f(v):
            return unit.forward(v.unsqueeze(0), **kw_i)[0]
    J = torch.autograd.functional.jacobian(f, x[i], vectorize=True)
    return torch.linalg.svdvals(J.reshape(f(x[i]).numel(), x[i].numel()))


def _check_exact(model, inputs, units=None, embed=False, **kw):
    frame = unravel.jacobian_spectra(model, inputs, units=units, method="exact", **kw)
    seen = _record(model, *(inputs if isinstance(inputs, tuple) else (inputs,)))
    assert list(frame.columns) == ["unit", "name", "kind", "projection", "example", "rank", "singular_value"]
    measured = sorted(set(frame["unit"]))
    assert measured == (sorted(seen) if units is None else sorted(units))
    for (p, i), rows in frame.groupby(["unit", "example"]):
        unit, x, ukw = seen[p]
        rows = rows.sort_values("rank")
        ref = _reference(unit, x, ukw, i, embed=embed)
        assert rows["rank"].tolist() == list(range(len(ref)))
        assert rows["name"].iloc[0] == unit.name and rows["kind"].iloc[0] == unit.kind
        assert bool(rows["projection"].iloc[0]) == unit.projection
        np.testing.assert_allclose(rows["singular_value"].to_numpy(), ref.numpy(), rtol=0, atol=1e-10)
    return frame


@pytest.mark.parametrize("builder", [models.resnet_cifar, models.preact_resnet_cifar])
def test_exact_equals_autograd_jacobian_on_reference_nets(builder):
    net = randomize_bn(builder(8, width=4, in_channels=1, dims=1)).double().eval()
    frame = _check_exact(net, torch.randn(3, 1, 16, dtype=torch.float64))
    assert len(frame) == 3 * 3 * 64 and frame["projection"].sum() == 2 * 3 * 64  # stages 2, 3 begin with projections
    assert frame.attrs["units"][0]["method"] == "exact"


def test_exact_equals_autograd_jacobian_on_torchvision_resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = randomize_bn(torchvision.models.resnet18(num_classes=3)).double().eval()
    # layer3.0 has a conv projection (512 -> 256 coordinates); layer4.1 is 512 -> 512
    frame = _check_exact(net, torch.randn(1, 3, 16, 16, dtype=torch.float64), units=[4, 7])
    assert frame.groupby("unit").size().to_dict() == {4: 256, 7: 512}
    assert frame[frame["unit"] == 4]["projection"].all() and not frame[frame["unit"] == 7]["projection"].any()


@pytest.mark.parametrize("norm_first", [False, True])
def test_exact_equals_autograd_jacobian_on_transformer_units(norm_first):
    net = TinyTransformer(norm_first, layers=2).double().eval()
    frame = _check_exact(net, torch.randn(2, 5, 3, dtype=torch.float64))
    assert frame["name"].unique().tolist() == ["encoder.layers.0/attention", "encoder.layers.0/feedforward",
                                               "encoder.layers.1/attention", "encoder.layers.1/feedforward"]


class _Masked(nn.Module):
    """A transformer encoder whose forward takes a mask, passed on to every unit."""

    def __init__(self, d=8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, x, mask=None, padding=None):
        return self.encoder(x, mask=mask, src_key_padding_mask=padding)


def test_keyword_tensors_of_transformer_units_follow_their_examples():
    net = _Masked().double().eval()
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    padding = torch.tensor([[False, False, False, True], [False] * 4, [False, False, True, True]])
    frame = unravel.jacobian_spectra(net, (x, None, padding), method="exact")
    assert not any(info.get("one_example_at_a_time") for info in frame.attrs["units"])
    seen = _record(net, x, None, padding)
    for (p, i), rows in frame.groupby(["unit", "example"]):
        unit, xin, kw = seen[p]
        assert kw.get("key_padding_mask") is not None or p == 1
        ref = _reference(unit, xin, kw, i)
        np.testing.assert_allclose(rows.sort_values("rank")["singular_value"].to_numpy(), ref.numpy(), atol=1e-10)


def test_keyword_tensors_that_cannot_be_cut_run_inside_the_batch():
    # an attention mask [T, T] with T == batch: cut to a group of examples it no longer fits; the
    # unit is then measured one example at a time inside the recorded batch
    net = _Masked().double().eval()
    x = torch.randn(4, 4, 8, dtype=torch.float64)
    mask = torch.randn(4, 4, dtype=torch.float64)
    frame = unravel.jacobian_spectra(net, (x, mask), units=[0], method="exact", batch_size=2)
    assert frame.attrs["units"][0]["one_example_at_a_time"]
    unit, xin, kw = _record(net, x, mask)[0]
    for i, rows in frame.groupby("example"):
        ref = _reference(unit, xin, kw, i, embed=True)
        np.testing.assert_allclose(rows.sort_values("rank")["singular_value"].to_numpy(), ref.numpy(), atol=1e-10)
    top = unravel.jacobian_spectra(net, (x, mask), units=[0], top=3, batch_size=2)
    merged = top.merge(frame, on=["unit", "example", "rank"])
    np.testing.assert_allclose(merged["singular_value_x"], merged["singular_value_y"], rtol=1e-6)


class _Mixing(nn.Module):
    """A block whose residual branch mixes the examples of a batch (it subtracts their mean)."""

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.fc(x - x.mean(0, keepdim=True)))


def test_units_that_mix_examples_are_measured_one_example_at_a_time():
    torch.manual_seed(0)
    net = nn.Sequential(_Mixing(5)).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    with unravel.adapters({_Mixing: lambda m: unravel.UnitParts(
            residual=lambda v: torch.tanh(m.fc(v - v.mean(0, keepdim=True))))}):
        frame = unravel.jacobian_spectra(net, x)
        unit = unravel.find_units(net)[0]
    assert frame.attrs["units"][0]["one_example_at_a_time"]
    for i, rows in frame.groupby("example"):
        ref = _reference(unit, x, {}, i, embed=True)  # the other examples held fixed
        np.testing.assert_allclose(rows.sort_values("rank")["singular_value"], ref.numpy(), atol=1e-12)


def _small_2d(seed=0):
    torch.manual_seed(seed)
    return randomize_bn(models.resnet_cifar(8, width=4, in_channels=1)).double().eval()


def test_lanczos_top_k_agrees_with_exact():
    net = _small_2d()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)  # stage 1: 4 x 8 x 8 = 256 coordinates
    exact = unravel.jacobian_spectra(net, x, units=[0, 1])
    top = unravel.jacobian_spectra(net, x, units=[0, 1], top=5)
    assert top["rank"].tolist() == list(range(5)) * 6
    assert [info["method"] for info in top.attrs["units"]] == ["lanczos"] * 2
    assert all(info["vectors"] < 256 and info["unconverged"] == 0 for info in top.attrs["units"])
    merged = top.merge(exact, on=["unit", "example", "rank"])
    assert len(merged) == len(top)
    np.testing.assert_allclose(merged["singular_value_x"], merged["singular_value_y"], rtol=1e-6)
    # deterministic given the seed
    again = unravel.jacobian_spectra(net, x, units=[0, 1], top=5)
    assert np.array_equal(again["singular_value"].to_numpy(), top["singular_value"].to_numpy())
    # products batched per backward call (is_grads_batched), and single vectors: the same values
    batched = unravel.jacobian_spectra(net, x, units=[0, 1], top=5, chunk_size=4)
    np.testing.assert_allclose(batched["singular_value"], top["singular_value"], rtol=1e-10)
    single = unravel.jacobian_spectra(net, x, units=[0, 1], top=5, block_size=1)
    assert [info["block"] for info in single.attrs["units"]] == [1, 1]
    np.testing.assert_allclose(single["singular_value"], top["singular_value"], rtol=1e-6)


def test_bottom_singular_values_exact_and_lanczos():
    net = _small_2d()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)  # 64 coordinates per unit
    exact = unravel.jacobian_spectra(net, x, units=[0])
    both = unravel.jacobian_spectra(net, x, units=[0], top=2, bottom=3, method="exact")
    assert both["rank"].tolist() == [0, 1, 61, 62, 63] * 2
    lanczos = unravel.jacobian_spectra(net, x, units=[0], top=2, bottom=3, method="lanczos", max_iter=64)
    for got in (both, lanczos):
        merged = got.merge(exact, on=["unit", "example", "rank"])
        np.testing.assert_allclose(merged["singular_value_x"], merged["singular_value_y"], rtol=1e-6, atol=1e-9)


def test_per_example_independence():
    net = _small_2d()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    other = x.clone()
    other[1:] = torch.randn(2, 1, 8, 8, dtype=torch.float64) * 3
    for kw in (dict(units=[1]), dict(units=[0], top=4)):
        a = unravel.jacobian_spectra(net, x, **kw)
        b = unravel.jacobian_spectra(net, other, **kw)
        a0, b0 = a[a["example"] == 0], b[b["example"] == 0]
        np.testing.assert_allclose(a0["singular_value"].to_numpy(), b0["singular_value"].to_numpy(), rtol=1e-9)
        assert not np.allclose(a[a["example"] == 1]["singular_value"], b[b["example"] == 1]["singular_value"])
    # measured alone, in groups of one, or all together: the same spectra
    alone = unravel.jacobian_spectra(net, x[:1], units=[1])
    ones = unravel.jacobian_spectra(net, x, units=[1], batch_size=1)
    np.testing.assert_allclose(alone["singular_value"], ones[ones["example"] == 0]["singular_value"], rtol=1e-12)
    both = unravel.jacobian_spectra(net, x, units=[1])
    np.testing.assert_allclose(ones["singular_value"], both["singular_value"], rtol=1e-12)


def test_model_is_left_as_it_was():
    net = randomize_bn(models.resnet_cifar(8, width=4, in_channels=1, dims=1))
    net.train()
    net.stage1[0].eval()  # a frozen part inside a training model
    net.fc.weight.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    before = state_hash(net)
    x = torch.randn(2, 1, 16)
    unravel.jacobian_spectra(net, x, progress=True)
    unravel.jacobian_spectra(net, x, top=2)
    assert state_hash(net) == before
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())
    assert unravel.active_interventions(net) == 0


def test_eval_mode_spectra_in_a_training_model():
    # BatchNorm uses its running statistics: the spectra are those of the model in eval mode
    net = randomize_bn(models.resnet_cifar(8, width=4, in_channels=1, dims=1)).double()
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    trained = unravel.jacobian_spectra(net.train(), x)
    evaluated = unravel.jacobian_spectra(net.eval(), x)
    np.testing.assert_array_equal(trained["singular_value"], evaluated["singular_value"])


def test_inside_a_lesion_the_deleted_unit_is_its_bypass():
    net = randomize_bn(models.resnet_cifar(8, width=4, in_channels=1, dims=1)).double().eval()
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    with unravel.lesion.delete(net, 0):
        frame = unravel.jacobian_spectra(net, x, units=[0])
    # post(identity) with a ReLU: singular values 1 where the input is positive, else 0
    seen = _record(net, x)
    for i, rows in frame.groupby("example"):
        positive = int((seen[0][1][i] > 0).sum())
        expected = np.r_[np.ones(positive), np.zeros(64 - positive)]
        np.testing.assert_allclose(rows.sort_values("rank")["singular_value"], expected, atol=1e-12)


def test_lanczos_finds_every_copy_of_a_repeated_singular_value():
    # a deleted post-activation unit is relu(x): its singular values are 1 (once per positive
    # input) and 0; one Lanczos vector would find the value 1 once, a block of top finds top copies
    net = _small_2d()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with unravel.lesion.delete(net, [0, 1]):
        for unit in (0, 1):
            frame = unravel.jacobian_spectra(net, x, units=[unit], top=8)
            assert frame.attrs["units"][0]["block"] == 8
            np.testing.assert_allclose(frame["singular_value"], np.ones(16), atol=1e-12)


class _Tanh(torch.autograd.Function):
    """tanh whose backward is not differentiable in its cotangent (it detaches it), with a
    forward-mode formula: Jacobian-vector products must come from forward-mode AD."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        ctx.save_for_forward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g.detach() * (1 - y * y)

    @staticmethod
    def jvp(ctx, t):
        y, = ctx.saved_tensors
        return t * (1 - y * y)


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + _Tanh.apply(self.fc(x))


def test_forward_mode_where_double_backward_fails_the_adjoint_test():
    torch.manual_seed(0)
    net = nn.Sequential(_Block(6), _Block(6)).double()
    x = torch.randn(2, 6, dtype=torch.float64)
    with unravel.adapters({_Block: lambda m: unravel.UnitParts(residual=lambda v: _Tanh.apply(m.fc(v)))}):
        exact = unravel.jacobian_spectra(net, x)
        top = unravel.jacobian_spectra(net, x, top=3)
        units = unravel.find_units(net)
    for (p, i), rows in exact.groupby(["unit", "example"]):
        W = net[p].fc.weight
        with torch.no_grad():
            xin = x[i] if p == 0 else net[0](x)[i]
            J = torch.eye(6, dtype=torch.float64) + torch.diag(1 - torch.tanh(net[p].fc(xin)) ** 2) @ W
        np.testing.assert_allclose(rows.sort_values("rank")["singular_value"], torch.linalg.svdvals(J), atol=1e-12)
    merged = top.merge(exact, on=["unit", "example", "rank"])
    np.testing.assert_allclose(merged["singular_value_x"], merged["singular_value_y"], rtol=1e-8)
    assert len(units) == 2
    from unravel.jacobian.operator import _Linearised

    op = _Linearised(net[0], x)
    op.jvp(torch.randn(2, 6, dtype=torch.float64))
    assert op._jvp_mode == "forward"  # double backward failed the adjoint test
    plain = _Linearised(nn.Sequential(nn.Linear(6, 6), nn.Tanh()).double(), x)
    plain.jvp(torch.randn(2, 6, dtype=torch.float64))
    assert plain._jvp_mode == "double"


def test_units_by_name_and_frame_layout():
    net = models.resnet_cifar(8, width=4, in_channels=1, dims=1).eval()
    x = torch.randn(2, 1, 16)
    frame = unravel.jacobian_spectra(net, x, units=["stage3.0", 0], top=2)
    assert frame["unit"].tolist() == [0] * 4 + [2] * 4
    assert frame["example"].tolist() == [0, 0, 1, 1] * 2
    assert frame["name"].tolist()[::4] == ["stage1.0", "stage3.0"]
    assert frame.dtypes["singular_value"] == np.float64 and frame.dtypes["projection"] == bool
    assert (frame["singular_value"].diff()[frame["rank"] == 1] <= 0).all()  # descending
    assert unravel.jacobian_spectra(net, (x,), units=1, top=1)["unit"].tolist() == [1, 1]


def test_errors_are_clear():
    net = models.resnet_cifar(8, width=4, in_channels=1, dims=1).eval()
    x = torch.randn(2, 1, 16)
    with pytest.raises(ArgumentError, match="method='svd' is not allowed.*'auto', 'exact', 'lanczos'"):
        unravel.jacobian_spectra(net, x, method="svd")
    with pytest.raises(ArgumentError, match="top=0 must be an integer >= 1"):
        unravel.jacobian_spectra(net, x, top=0)
    with pytest.raises(ArgumentError, match=r"top=65 is larger than .* unit 0 \(stage1.0\).* = 64"):
        unravel.jacobian_spectra(net, x, top=65)
    with pytest.raises(ArgumentError, match="bottom=100 is larger"):
        unravel.jacobian_spectra(net, x, bottom=100)
    with pytest.raises(ArgumentError, match="no unit named 'nope'.*stage1.0"):
        unravel.jacobian_spectra(net, x, units="nope")
    with pytest.raises(ArgumentError, match="unit index 7 is out of range"):
        unravel.jacobian_spectra(net, x, units=[7])
    with pytest.raises(ArgumentError, match="method='lanczos' finds the top"):
        unravel.jacobian_spectra(net, x, method="lanczos")
    with pytest.raises(ArgumentError, match="more than exact_max=10: give top=k"):
        unravel.jacobian_spectra(net, x, exact_max=10)
    with pytest.raises(ArgumentError, match="block_size=0 must be an integer >= 1"):
        unravel.jacobian_spectra(net, x, top=1, block_size=0)
    with pytest.raises(ArgumentError, match="tol="):
        unravel.jacobian_spectra(net, x, top=1, tol=2.0)
    with pytest.raises(ArgumentTypeError, match="generator"):
        unravel.jacobian_spectra(net, x, top=1, generator="seed")
    with pytest.raises(ArgumentTypeError, match="torch.nn.Module"):
        unravel.jacobian_spectra(lambda v: v, x)
    with pytest.raises(ArgumentError, match="non-empty batch"):
        unravel.jacobian_spectra(net, torch.zeros(0, 1, 16))


def test_lanczos_warns_when_it_does_not_converge():
    net = _small_2d()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="did not reach tol within max_iter"):
        frame = unravel.jacobian_spectra(net, x, units=[0], top=4, max_iter=5, tol=1e-14)
    assert frame.attrs["units"][0]["unconverged"] == 1 and len(frame) == 4


def test_benchmark_case_runs_quick():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("_unravel_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "jacobian" in bench.CASES and "jacobian" not in bench.DEFAULT_CASES
    out = bench.CASES["jacobian"](bench.QUICK["jacobian"], torch.device("cpu"))
    assert out["ratio_jacobian_over_fwd_bwd"] > 0 and out["ratio_jacobian_block_1_over_fwd_bwd"] > 0
    assert out["units"] == 3 and out["unconverged_examples"] == 0
