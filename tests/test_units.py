import pytest
import torch
from torch import nn

import unravel
from unravel import models
from unravel.adapters import adapter_for as adapter_of

from .conftest import randomize_bn as _randomize_bn
from .conftest import state_hash

PROJECT_MODELS = {
    "resnet_cifar": (lambda: models.resnet_cifar(14, width=4), (2, 3, 16, 16)),
    "resnet_cifar_conv": (lambda: models.resnet_cifar(14, width=4, shortcut="conv"), (2, 3, 16, 16)),
    "preact": (lambda: models.preact_resnet_cifar(14, width=4), (2, 3, 16, 16)),
    "plain": (lambda: models.plain_cifar(14, width=4), (2, 3, 16, 16)),
    "se": (lambda: models.se_resnet_cifar(14, width=4), (2, 3, 16, 16)),
    "densenet": (lambda: models.densenet_bc(16, growth=4), (2, 3, 16, 16)),
    "resnet_cifar_1d": (lambda: models.resnet_cifar(14, width=4, in_channels=1, dims=1), (2, 1, 40)),
    "se_1d": (lambda: models.se_resnet_cifar(14, width=4, in_channels=1, dims=1), (2, 1, 40)),
    "densenet_1d": (lambda: models.densenet_bc(16, growth=4, in_channels=1, dims=1), (2, 1, 40)),
    "resmlp": (lambda: models.resmlp(10, 3, width=8, depth=3), (4, 10)),
    "plain_mlp": (lambda: models.plain_mlp(10, 3, width=8, depth=3), (4, 10)),
    "resnet1d": (lambda: models.resnet1d((1, 2), width=4), (2, 1, 40)),
    "plain1d": (lambda: models.plain1d((1, 2), width=4), (2, 1, 40)),
}


def _unit_inputs(model, units, x):
    """The input each unit's module receives in a real forward pass."""
    seen = {}
    hooks = [u.module.register_forward_pre_hook(lambda m, a, u=u: seen.setdefault(u.module, a[0]))
             for u in units]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


@pytest.mark.parametrize("name", PROJECT_MODELS)
def test_unit_forward_equals_module_forward(name):
    build, shape = PROJECT_MODELS[name]
    model = build()
    _randomize_bn(model)
    model.eval()
    units = unravel.find_units(model)
    x = torch.randn(*shape)
    with torch.no_grad():
        inputs, _ = _unit_inputs(model, units, x)
        for u in units:
            xin = inputs[u.module]
            assert torch.equal(u.forward(xin), u.module(xin)), u.name
            assert u.forward(xin).shape == u.bypass(xin).shape, u.name
            if u.kind != "plain":
                assert torch.allclose(u.post(u.shortcut(xin) + u.residual(xin)), u.module(xin), atol=1e-6)


def test_counts_and_projections():
    assert len(unravel.find_units(models.resnet_cifar(110))) == 54
    units = unravel.find_units(models.resnet_cifar(20))
    assert [u.index for u in units] == list(range(9))
    assert [u.name for u in units if u.projection] == ["stage2.0", "stage3.0"]
    assert sum(u.projection for u in unravel.find_units(models.resnet_cifar(110))) == 2
    assert len(unravel.find_units(models.densenet_bc(100))) == 48  # 16 bottleneck layers per block
    assert all(u.kind == "dense" and u.projection for u in unravel.find_units(models.densenet_bc(10, growth=2)))


@pytest.mark.parametrize("depth,paper", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_parameter_counts_match_paper(depth, paper):
    n = sum(p.numel() for p in models.resnet_cifar(depth).parameters())
    digits = 2 if paper < 1 else 1
    assert round(n / 1e6, digits) == paper


def test_plain_has_same_layers_as_residual():
    res, plain = models.resnet_cifar(20), models.plain_cifar(20)
    assert sum(p.numel() for p in res.parameters()) == sum(p.numel() for p in plain.parameters())
    assert [u.name for u in unravel.find_units(res)] == [u.name for u in unravel.find_units(plain)]


def test_plain_unit_ignores_shortcut_in_forward():
    model = models.plain_mlp(6, 2, width=6, depth=2).eval()
    u = unravel.find_units(model)[0]
    x = torch.randn(3, 6)
    assert torch.equal(u.forward(x), u.residual(x))
    assert torch.equal(u.bypass(x), x)


def test_torchvision_resnets():
    tv = pytest.importorskip("torchvision", reason="torchvision is in the test extra; install unravel[test]")
    assert len(unravel.find_units(tv.models.resnet50())) == 16
    assert len(unravel.find_units(tv.models.resnet18())) == 8
    assert len(unravel.find_units(tv.models.resnext50_32x4d())) == 16
    assert len(unravel.find_units(tv.models.wide_resnet50_2())) == 16
    for build in (tv.models.resnet18, tv.models.resnet50):
        model = build(num_classes=5)
        _randomize_bn(model)
        model.eval()
        units = unravel.find_units(model)
        assert units[0].name == "layer1.0"
        assert sum(u.projection for u in units) == (3 if build is tv.models.resnet18 else 4)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            inputs, _ = _unit_inputs(model, units, x)
            for u in units:
                assert torch.equal(u.forward(inputs[u.module]), u.module(inputs[u.module])), u.name


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_two_units_per_layer(norm_first):
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True,
                                       norm_first=norm_first)
    enc = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()
    units = unravel.find_units(enc)
    assert [u.name for u in units[:2]] == ["layers.0/attention", "layers.0/feedforward"]
    assert len(units) == 6
    for u in units:
        assert (u.parts.post is None) == norm_first
        assert not u.projection
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    for i in range(3):
        mod = enc.layers[i]
        a, f = units[2 * i], units[2 * i + 1]
        # grad enabled and parameters requiring grad: the layer takes its exact (slow) path
        assert torch.equal(f.forward(a.forward(x)), mod(x))
        routed = adapter_of(mod).route(mod, lambda p, y, **kw: units[2 * i + p].forward(y, **kw), x,
                                       src_key_padding_mask=mask)
        assert torch.equal(routed, mod(x, src_key_padding_mask=mask))


def test_nested_at_any_depth_in_forward_order():
    inner = models.resmlp(4, 2, width=4, depth=2)
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ModuleDict({"a": inner})))
    names = [u.name for u in unravel.find_units(model)]
    assert names == ["1.0.a.blocks.0", "1.0.a.blocks.1"]


class Reversed(nn.Module):
    """Blocks registered in the opposite order to the one forward calls them in."""

    def __init__(self):
        super().__init__()
        self.second = models.ResidualBlock(nn.Linear(3, 3))
        self.first = models.ResidualBlock(nn.Linear(3, 3))

    def forward(self, x):
        return self.second(self.first(x))


def test_example_inputs_give_call_order_and_leave_model_alone():
    model = Reversed().train()
    assert [u.name for u in unravel.find_units(model)] == ["second", "first"]
    before = state_hash(model)
    assert [u.name for u in unravel.find_units(model, torch.randn(2, 3))] == ["first", "second"]
    assert model.training and state_hash(model) == before
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_find_units_never_changes_model():
    model = models.resnet_cifar(14, width=4).train()
    ids = [id(m) for m in model.modules()]
    before = state_hash(model)
    unravel.find_units(model)
    assert state_hash(model) == before and [id(m) for m in model.modules()] == ids and model.training
    assert all("forward" not in vars(m) for m in model.modules())


def test_unsupported_model_error():
    with pytest.raises(unravel.UnsupportedModelError) as e:
        unravel.find_units(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    msg = str(e.value)
    assert "Sequential" in msg and "register_adapter" in msg and "torchvision.models.resnet.BasicBlock" in msg
    with pytest.raises(TypeError, match="torch.nn.Module"):
        unravel.find_units("resnet")


class UserBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.f = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.proj(x) + self.f(x))


class UserBlockChild(UserBlock):
    pass


def test_register_adapter_user_block_and_subclasses():
    unravel.register_adapter(UserBlock, lambda m: unravel.UnitParts(residual=m.f, shortcut=m.proj, post=torch.tanh))
    try:
        model = nn.Sequential(UserBlock(3), UserBlockChild(3))
        units = unravel.find_units(model)
        assert len(units) == 2 and all(u.projection for u in units)
        x = torch.randn(4, 3)
        assert torch.equal(units[1].forward(x), model[1](x))
        assert any("UserBlock" in s for s in unravel.supported_blocks())
    finally:
        unravel.unregister_adapter(UserBlock)
    with pytest.raises(unravel.UnsupportedModelError):
        unravel.find_units(nn.Sequential(UserBlock(3)))


def test_register_adapter_validates():
    with pytest.raises(TypeError, match="Module subclass"):
        unravel.register_adapter(int, lambda m: None)
    with pytest.raises(TypeError, match="callable"):
        unravel.register_adapter(UserBlock, "nope")
    unravel.register_adapter(UserBlock, lambda m: "not parts")
    try:
        with pytest.raises(TypeError, match="UnitParts"):
            unravel.find_units(UserBlock(2))
    finally:
        unravel.unregister_adapter(UserBlock)
    with pytest.raises(ValueError, match="kind"):
        unravel.UnitParts(residual=torch.relu, kind="weird")


def test_unit_table():
    table = unravel.unit_table(models.resnet_cifar(20))
    assert len(table) == 9 and table.projection.sum() == 2
    assert table.parameters.sum() == sum(p.numel() for s in ("stage1", "stage2", "stage3")
                                         for p in getattr(models.resnet_cifar(20), s).parameters())


def test_model_argument_validation():
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet_cifar(21)
    with pytest.raises(ValueError, match="6n\\+4"):
        models.densenet_bc(41)
    with pytest.raises(ValueError, match="shortcut"):
        models.resnet_cifar(20, shortcut="B")
    with pytest.raises(ValueError, match="width"):
        models.resmlp(4, 2, width=0)
    with pytest.raises(ValueError, match="dims=3 is not allowed; choose one of 1, 2"):
        models.resnet_cifar(20, dims=3)


def test_verify_units_names_an_unfaithful_block():
    from unravel.errors import UnfaithfulAdapterError

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 4)

        def forward(self, x):
            return x + 2 * self.f(x)

    net = nn.Sequential(models.ResidualBlock(nn.Linear(4, 4)), Scaled())
    x = torch.randn(3, 4)
    with unravel.adapters({Scaled: lambda m: unravel.UnitParts(residual=m.f)}):  # forgets the 2
        assert len(unravel.find_units(net, x)) == 2
        with pytest.raises(UnfaithfulAdapterError, match=r"block '1' \(.*Scaled\)"):
            unravel.verify_units(net, x)
    with unravel.adapters({Scaled: lambda m: unravel.UnitParts(residual=lambda x: 2 * m.f(x))}):
        assert len(unravel.verify_units(net, x)) == 2
    assert len(unravel.verify_units(models.resnet_cifar(8), torch.randn(2, 3, 8, 8))) == 3
    with pytest.raises(TypeError):  # find_units finds; verify_units finds and checks
        unravel.find_units(net, x, verify=True)


def test_an_identity_module_shortcut_is_not_a_projection():
    block = models.ResidualBlock(nn.Linear(4, 4), shortcut=nn.Identity())
    net = nn.Sequential(block, models.ResidualBlock(nn.Linear(4, 4)))
    unit = unravel.find_units(net)[0]
    assert not unit.projection
    with unravel.lesion.reorder(net, [1, 0]):  # identity shortcuts may change places
        net(torch.randn(2, 4))


def test_recognised_blocks_without_units_are_an_error():
    from torchvision.models.mobilenetv2 import InvertedResidual

    with pytest.raises(unravel.UnsupportedModelError, match="hold no residual unit"):
        unravel.find_units(nn.Sequential(InvertedResidual(8, 16, 2, 6)))

    class Negate(nn.Identity):
        def forward(self, x):
            return -x

    block = models.ResidualBlock(nn.Linear(4, 4), shortcut=Negate())
    assert unravel.find_units(nn.Sequential(block))[0].projection
