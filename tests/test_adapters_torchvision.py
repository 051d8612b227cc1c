"""torchvision's residual families through the built-in adapters (no user adapter): units found,
routing exact, lesions restore bit for bit, and the path-length decomposition conserves the
gradient. Small random-init models in float64; nothing is downloaded."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel

from .conftest import autograd_input_grad, randomize_bn, state_hash

tv = pytest.importorskip("torchvision", reason="torchvision is in the test extra; install unravel[test]")
from torchvision.models import convnext, efficientnet, mobilenetv2, mobilenetv3, regnet  # noqa: E402
from torchvision.models import swin_transformer as swin  # noqa: E402
from torchvision.models import vision_transformer as vit  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _vit():
    model = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                        mlp_dim=32, num_classes=5)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head: no gradient at all
    return model


def _convnext():
    # layer_scale 0.5, not 1e-6, so that the residual branches matter; stochastic depth present
    setting = [convnext.CNBlockConfig(8, 16, 2), convnext.CNBlockConfig(16, None, 2)]
    return convnext.ConvNeXt(setting, stochastic_depth_prob=0.1, layer_scale=0.5, num_classes=5)


def _swin(v2):
    # depth 2 per stage: the second block of a stage shifts its windows
    extra = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2) if v2 else {}
    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=[2, 2],
                                stochastic_depth_prob=0.1, num_classes=5, **extra)


def _efficientnet_v2_tiny():
    # FusedMBConv and MBConv stages, each with one block without its skip (stride 2)
    setting = [efficientnet.FusedMBConvConfig(1, 3, 1, 8, 8, 2), efficientnet.FusedMBConvConfig(4, 3, 2, 8, 16, 2),
               efficientnet.MBConvConfig(4, 3, 2, 16, 24, 2)]
    return efficientnet.EfficientNet(setting, dropout=0.2, num_classes=5, last_channel=32)


def _regnet_y_tiny():
    # squeeze-excitation in the branch; 4 stages, so 4 projection units
    params = regnet.BlockParams.from_init_params(depth=6, w_0=8, w_a=8.0, w_m=2.0, group_width=4, se_ratio=0.25)
    return regnet.RegNet(params, num_classes=5, stem_width=8)


def _skips(model, cls):
    return sum(m.use_res_connect for m in model.modules() if isinstance(m, cls))


def _count(model, *classes):
    return sum(isinstance(m, classes) for m in model.modules())


# name -> (builder, image size, expected units as a function of the model, projection units)
FAMILIES = {
    "vit": (_vit, 32, lambda m: 2 * _count(m, vit.EncoderBlock), 0),
    "convnext": (_convnext, 32, lambda m: _count(m, convnext.CNBlock), 0),
    "swin-v1": (functools.partial(_swin, False), 32, lambda m: 2 * _count(m, swin.SwinTransformerBlock), 0),
    "swin-v2": (functools.partial(_swin, True), 32, lambda m: 2 * _count(m, swin.SwinTransformerBlockV2), 0),
    "mobilenet-v2": (lambda: tv.models.mobilenet_v2(width_mult=0.25, num_classes=5), 32,
                     lambda m: _skips(m, mobilenetv2.InvertedResidual), 0),
    "mobilenet-v3": (lambda: tv.models.mobilenet_v3_small(num_classes=5), 32,
                     lambda m: _skips(m, mobilenetv3.InvertedResidual), 0),
    "efficientnet-v2-tiny": (_efficientnet_v2_tiny, 32,
                             lambda m: _skips(m, (efficientnet.MBConv, efficientnet.FusedMBConv)), 0),
    "regnet-y-tiny": (_regnet_y_tiny, 32, lambda m: _count(m, regnet.ResBottleneckBlock), 4),
}
# torchvision's own smallest configurations: minutes, not seconds, on 2 CPU cores
SLOW = {
    "efficientnet-b0": (lambda: tv.models.efficientnet_b0(num_classes=5), 32,
                        lambda m: _skips(m, efficientnet.MBConv), 0),
    "efficientnet-v2-s": (lambda: tv.models.efficientnet_v2_s(num_classes=5), 32,
                          lambda m: _skips(m, (efficientnet.MBConv, efficientnet.FusedMBConv)), 0),
    "regnet-x-400mf": (lambda: tv.models.regnet_x_400mf(num_classes=5), 32,
                       lambda m: _count(m, regnet.ResBottleneckBlock), 4),
}
ALL = {**FAMILIES, **SLOW}
PARAMS = list(FAMILIES) + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW]


def _calibrate(model, size):
    """Batch-norm statistics of random images: eval-mode BN then normalises, as after training
    (arbitrary statistics make deep random nets saturate to one output for every input)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    with torch.no_grad():
        model.train()(torch.randn(16, 3, size, size, dtype=torch.float64))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@functools.lru_cache(maxsize=None)
def _family(name):
    build, size, _, _ = ALL[name]
    torch.manual_seed(0)
    model = _calibrate(build().double(), size)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    return model, x, torch.tensor([1, 3])


_autograd_input_grad = autograd_input_grad


@pytest.mark.parametrize("name", PARAMS)
def test_units_found_and_routing_exact(name):
    model, x, _ = _family(name)
    _, _, expected, projections = ALL[name]
    units = unravel.find_units(model)
    assert len(units) == expected(model) > 0
    assert sum(u.projection for u in units) == projections
    # routing every block through its units reproduces the model bit for bit
    assert unravel.verify_units(model, x, rtol=0.0, atol=0.0, units=units) == units
    assert [u.index for u in unravel.find_units(model, x)] == list(range(len(units)))  # call order = registration


@pytest.mark.parametrize("name", PARAMS)
def test_delete_changes_output_and_restores_bits(name):
    model, x, _ = _family(name)
    before = state_hash(model)
    with torch.no_grad():
        want = model(x)
        with unravel.lesion.delete(model, [0, 1]):
            lesioned = model(x)
        after = model(x)
    assert not torch.allclose(lesioned, want)
    assert torch.equal(after, want)
    assert state_hash(model) == before and not model.training
    assert all(type(m) is unravel.adapters.original_class(m) for m in model.modules())


# efficientnet_v2_s (35 units) takes minutes here; its blocks are covered by efficientnet-v2-tiny
@pytest.mark.parametrize("name", list(FAMILIES) + [pytest.param(name, marks=pytest.mark.slow)
                                                   for name in SLOW if name != "efficientnet-v2-s"])
def test_path_length_gradients_conserve(name):
    model, x, y = _family(name)
    before = state_hash(model)
    res = unravel.attribution.path_length_gradients(model, x, y)
    g = _autograd_input_grad(model, x, y)
    assert float(g.abs().max()) > 0
    assert res.lengths.tolist() == list(range(len(unravel.find_units(model)) + 1))
    assert torch.allclose(res.total, g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    assert state_hash(model) == before and not model.training


@pytest.mark.parametrize("name", PARAMS)
def test_train_mode_routing_matches(name):
    # dropout and stochastic depth draw the same random numbers, in the same order, routed or not
    model, x, _ = _family(name)
    own, routed = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    torch.manual_seed(1)
    want = own(x)
    torch.manual_seed(1)
    with unravel.intervene(routed):
        got = routed(x)
    assert torch.equal(got, want)
    assert state_hash(routed) == state_hash(own)  # batch-norm statistics updated alike


@pytest.mark.parametrize("name", ["vit", "swin-v1", "swin-v2"])
def test_transformer_blocks_hold_attention_then_mlp(name):
    model, _, _ = _family(name)
    units = unravel.find_units(model)
    assert [u.parts.label for u in units] == ["attention", "mlp"] * (len(units) // 2)
    assert all(u.parts.post is None and not u.projection for u in units)
    assert units[0].module is units[1].module and units[1].position == 1
    if name == "vit":
        assert units[0].name == "encoder.layers.encoder_layer_0/attention"


def test_swin_v2_norms_close_the_branch():
    # v2 normalises the branch's output ("res-post-norm"): deleting a unit leaves x untouched
    model, x, _ = _family("swin-v2")
    unit = unravel.find_units(model)[0]
    h = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(unit.bypass(h), h)
        block = unit.module
        assert torch.equal(unit.residual(h), block.norm1(block.attn(h)))


def test_convnext_branch_holds_layer_scale():
    model, _, _ = _family("convnext")
    unit = unravel.find_units(model)[0]
    h = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(unit.residual(h), unit.module.layer_scale * unit.module.block(h))
        assert torch.equal(unit.forward(h), unit.module(h))


@pytest.mark.parametrize("block", [
    lambda: mobilenetv2.InvertedResidual(8, 16, 2, 6),
    lambda: mobilenetv2.InvertedResidual(8, 16, 1, 6),
    lambda: mobilenetv3.InvertedResidual(mobilenetv3.InvertedResidualConfig(8, 3, 16, 16, True, "HS", 2, 1, 1.0),
                                         nn.BatchNorm2d),
    lambda: efficientnet.MBConv(efficientnet.MBConvConfig(4, 3, 1, 8, 16, 1), 0.1, nn.BatchNorm2d),
    lambda: efficientnet.FusedMBConv(efficientnet.FusedMBConvConfig(4, 3, 2, 8, 8, 1), 0.1, nn.BatchNorm2d),
])
def test_block_without_skip_has_no_unit(block):
    block = block()
    assert not block.use_res_connect
    assert unravel.adapters.adapter_for(block).parts(block) == []


def test_blocks_without_skip_stay_unrouted():
    model, x, _ = _family("mobilenet-v2")
    units = unravel.find_units(model)
    hosts = {u.module for u in units}
    plain = [m for m in model.modules() if isinstance(m, mobilenetv2.InvertedResidual) and not m.use_res_connect]
    assert plain and not hosts & set(plain)
    names = {m: n for n, m in model.named_modules()}
    assert not {u.name for u in units} & {names[m] for m in plain}
    with unravel.lesion.delete(model, list(range(len(units)))):
        assert all(type(m) is mobilenetv2.InvertedResidual for m in plain)


def test_regnet_post_is_out_of_place_relu():
    model, _, _ = _family("regnet-y-tiny")
    units = unravel.find_units(model)
    assert all(u.parts.post is F.relu for u in units)
    assert all(u.module.activation.inplace for u in units)
    u = next(u for u in units if not u.projection)
    h = torch.randn(2, u.module.f.a[0].in_channels, 4, 4, dtype=torch.float64)
    kept = h.clone()
    with torch.no_grad():
        assert torch.equal(u.bypass(h), F.relu(kept)) and torch.equal(h, kept)  # the input is not overwritten
        assert torch.equal(u.forward(h), u.module(h.clone()))


def test_regnet_other_activation_is_used_as_is():
    block = regnet.ResBottleneckBlock(8, 8, 1, nn.BatchNorm2d, nn.SiLU).double().eval()
    part, = unravel.adapters.adapter_for(block).parts(block)
    assert part.post is block.activation
    h = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    u = unravel.find_units(nn.Sequential(block))[0]
    with torch.no_grad():
        assert torch.equal(u.forward(h.clone()), block(h.clone()))


@pytest.mark.parametrize("block", [lambda d: BasicBlock(8, 8, downsample=d), lambda d: Bottleneck(8, 2, downsample=d)])
def test_identity_downsample_is_no_projection(block):
    class Negate(nn.Identity):
        def forward(self, x):
            return -x

    net = nn.Sequential(block(nn.Identity()), block(None), block(Negate())).double().eval()
    randomize_bn(net)
    units = unravel.find_units(net)
    assert [u.projection for u in units] == [False, False, True]
    assert units[0].parts.shortcut is None
    unravel.verify_units(net, torch.randn(2, 8, 6, 6, dtype=torch.float64), rtol=0.0, atol=0.0)
