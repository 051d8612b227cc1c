"""timm's residual blocks work with no adapter of the user's: units found, routing faithful,
lesions restore the model bit for bit, the exact path-length decomposition sums to autograd's
gradient. Small random-init models (never pretrained weights)."""

import ast
import copy
import inspect
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel import attribution

from .conftest import autograd_input_grad, randomize_bn, state_hash

timm = pytest.importorskip("timm", reason="timm is optional; pip install timm to run these tests")

from timm.models import _efficientnet_blocks as eb  # noqa: E402
from timm.layers import GatedMlp  # noqa: E402
from timm.models import convnext, mlp_mixer, regnet, swin_transformer_v2, vision_transformer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these models are tiny: intra-op threads only add synchronisation (measured: 4x slower with
    # two threads on a busy 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _create(name, **kw):
    return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw)


def _regnet(**cfg):
    # depth 5 with these widths makes four stages (8, 16, 24, 24, 40 channels)
    cfg = regnet.RegNetCfg(**{**dict(depth=5, w0=8, wa=8.0, wm=1.5, group_size=4, stem_width=8), **cfg})
    return regnet.RegNet(cfg, num_classes=CLASSES, zero_init_last=False)


class _Head(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, CLASSES)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def _efficientnet_zoo():
    """One of each EfficientNet/MobileNet block, with and without its skip."""
    act = nn.SiLU
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        eb.ConvBnAct(8, 8, 3, skip=True, act_layer=act, drop_path_rate=0.1),
        eb.DepthwiseSeparableConv(8, 8, se_layer=partial(eb.SqueezeExcite, rd_ratio=0.25), act_layer=act),
        eb.InvertedResidual(8, 8, exp_ratio=2.0, se_layer=partial(eb.SqueezeExcite, rd_ratio=0.25), act_layer=act,
                            drop_path_rate=0.1),
        eb.InvertedResidual(8, 12, stride=2, exp_ratio=2.0),  # no skip: no unit
        eb.EdgeResidual(12, 12, exp_ratio=2.0, act_layer=act),
        eb.CondConvResidual(12, 12, exp_ratio=2.0, num_experts=2),
        eb.UniversalInvertedResidual(12, 12, dw_kernel_size_start=3, dw_kernel_size_mid=3, exp_ratio=2.0,
                                     layer_scale_init_value=0.5),
        eb.MobileAttention(12, 12, num_heads=2, key_dim=4, value_dim=4, use_cpe=True, layer_scale_init_value=0.5),
        eb.MobileAttention(12, 16, num_heads=2, key_dim=4, value_dim=4, use_cpe=True),  # cpe, no skip
        _Head(16),
    )


def _convnext_projection():
    """ConvNeXt blocks whose shortcut is the block's Downsample (dims and stride change)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                         convnext.ConvNeXtBlock(8, 8, kernel_size=3, ls_init_value=0.5),
                         convnext.ConvNeXtBlock(8, 16, kernel_size=3, stride=2, ls_init_value=0.5),
                         convnext.ConvNeXtBlock(16, 16, kernel_size=3, conv_mlp=True, ls_init_value=0.5),
                         _Head(16))


def _unzero_post_norms(model):
    """Swin v2 starts its res-post-norms at zero (every residual branch outputs zero): give them
    weights, so that lesions and long paths have something to measure."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, swin_transformer_v2.SwinTransformerV2Block):
                for norm in (m.norm1, m.norm2):
                    norm.weight.uniform_(0.5, 1.5)
                    norm.bias.uniform_(-0.1, 0.1)
    return model


_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
_TOKENS = dict(num_classes=CLASSES, img_size=32, patch_size=8, embed_dim=32, num_blocks=2)
_SWIN = dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=3)

# family -> (builder, image size, units expected); everything small, for float64 checks
FAMILIES = {
    # ResNet-D (deep stem, avg-pool downsample), SE, stochastic depth
    "resnet-basic": (lambda: _create("resnet18d", layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), stem_width=8,
                                     block_args=dict(attn_layer="se"), drop_path_rate=0.1, zero_init_last=False),
                     32, 4),
    # ResNeXt bottleneck with SE
    "resnet-bottleneck": (lambda: _create("resnext50d_32x4d", layers=(1, 1, 1, 1), channels=(4, 8, 12, 16),
                                          stem_width=8, cardinality=4, base_width=64,
                                          block_args=dict(attn_layer="se"), drop_path_rate=0.1,
                                          zero_init_last=False), 32, 4),
    "resnetv2-preact": (lambda: _create("resnetv2_18", layers=(1, 1, 1), channels=(8, 16, 24), stem_chs=8,
                                        drop_path_rate=0.1), 32, 3),
    "resnetv2-preact-bottleneck": (lambda: _create("resnetv2_50d", layers=(1, 2), channels=(16, 32), stem_chs=8),
                                   32, 3),
    "resnetv2-bottleneck": (lambda: _create("resnetv2_50", layers=(1, 2), channels=(16, 32), stem_chs=8,
                                            preact=False), 32, 3),
    "convnext": (lambda: _create("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                 ls_init_value=0.5, drop_path_rate=0.1), 32, 4),
    "convnextv2": (lambda: _create("convnextv2_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), 32, 4),
    "convnext-projection": (_convnext_projection, 16, 3),
    "vit": (lambda: _create("vit_tiny_patch16_224", **_VIT, init_values=0.5, drop_path_rate=0.1), 32, 4),
    "vit-respost": (lambda: _create("vit_tiny_patch16_224", **_VIT, block_fn=vision_transformer.ResPostBlock),
                    32, 4),
    "vit-parallel": (lambda: _create("vit_tiny_patch16_224", **_VIT, block_fn=vision_transformer.ParallelThingsBlock),
                     32, 4),
    "efficientnet": (_efficientnet_zoo, 16, 9),
    "regnet": (lambda: _regnet(se_ratio=0.25), 32, 5),
    "regnet-preact": (lambda: _regnet(preact=True), 32, 5),
    "swin": (lambda: _create("swin_tiny_patch4_window7_224", **_SWIN), 32, 8),
    "swinv2": (lambda: _unzero_post_norms(_create("swinv2_tiny_window8_256", **_SWIN)), 32, 8),
    "mixer": (lambda: mlp_mixer.MlpMixer(**_TOKENS), 32, 4),
    "resmlp": (lambda: mlp_mixer.MlpMixer(**_TOKENS, mlp_ratio=4, norm_layer=mlp_mixer.Affine,
                                          block_layer=partial(mlp_mixer.ResBlock, init_values=0.5)), 32, 4),
    "gmlp": (lambda: mlp_mixer.MlpMixer(**_TOKENS, mlp_ratio=6, block_layer=mlp_mixer.SpatialGatingBlock,
                                        mlp_layer=GatedMlp), 32, 2),
}


def _family(name, dtype=torch.float64):
    torch.manual_seed(0)
    build, size, n = FAMILIES[name]
    model = _nonzero_head(randomize_bn(build())).to(dtype).eval()
    x = torch.randn(2, 3, size, size, dtype=dtype)
    return model, x, torch.randint(0, CLASSES, (2,)), n


def _nonzero_head(model):
    """Some timm models start their classifier at zero (MLP-Mixer): the output would not depend
    on anything before it."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear) and not head.weight.any():
        with torch.no_grad():
            nn.init.normal_(head.weight, std=0.1)
    return model


_autograd_input_grad = autograd_input_grad


@pytest.mark.parametrize("family", list(FAMILIES))
def test_units_found_and_verified(family):
    model, x, _, n = _family(family)
    units = unravel.find_units(model)
    assert len(units) == n
    assert unravel.verify_units(model, x, units=units) == units
    # the routed model, as interventions run it, equals the model's own forward
    with torch.no_grad():
        own = model(x)
        with unravel.intervene(model):
            routed = model(x)
    assert torch.allclose(routed, own, rtol=1e-12, atol=1e-12 * float(own.abs().max()))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lesion_changes_output_and_restores_bits(family):
    model, x, _, _ = _family(family)
    before = state_hash(model)
    with torch.no_grad():
        own = model(x)
        with unravel.lesion.delete(model, [0, 1]):
            lesioned = model(x)
        after = model(x)
    assert not torch.allclose(lesioned, own, rtol=1e-6, atol=0)
    assert torch.equal(after, own)
    assert state_hash(model) == before and not model.training
    assert not any(hasattr(type(m), "_unravel_original") for m in model.modules())  # nothing left routed


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_decomposition_sums_to_autograd(family):
    model, x, y, n = _family(family)
    before = state_hash(model)
    res = attribution.path_length_gradients(model, x, y)
    g = _autograd_input_grad(model, x, y)
    assert res.lengths.tolist() == list(range(n + 1))
    atol = 1e-13 * float(g.abs().max())
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=atol)
    assert torch.allclose(res.total, g, rtol=1e-10, atol=atol)
    assert float(g.abs().max()) > 0 and float(res.by_length[1:].abs().max()) > 0  # not trivially zero
    assert state_hash(model) == before


@pytest.mark.parametrize("family", ["resnet-basic", "resnetv2-preact", "convnext", "vit", "efficientnet"])
def test_train_mode_drop_path_sits_in_the_residual_branch(family):
    # with stochastic depth active, the routed model draws the same random masks in the same
    # places as the model's own forward: drop_path is in the residual branch, nowhere else
    model, x, _, _ = _family(family)
    assert any(type(m).__name__ == "DropPath" and m.drop_prob > 0 for m in model.modules())
    own_model, routed_model = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    torch.manual_seed(1)
    own = own_model(x)
    torch.manual_seed(1)
    with unravel.intervene(routed_model):
        routed = routed_model(x)
    assert torch.allclose(routed, own, rtol=1e-12, atol=1e-12 * float(own.abs().max()))

    def run(seed):
        torch.manual_seed(seed)
        return own_model(x)

    first = run(2)  # and the masks do change the output
    assert any(not torch.allclose(run(seed), first) for seed in range(3, 12))


# ------------------------------------------------------------------------------------------
# What each family's adapter says


def test_resnet_post_is_out_of_place_relu_and_drop_path_in_residual():
    model, x, _, _ = _family("resnet-basic")
    units = unravel.find_units(model)
    assert all(u.parts.post is F.relu for u in units)
    # ResNet-D: the projection shortcut is the block's avg-pool + 1x1 conv
    assert units[1].projection and units[1].parts.shortcut is model.layer2[0].downsample
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)
    calls = []
    block = units[1].module
    handle = block.drop_path.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            units[1].residual(torch.randn(2, block.conv1.in_channels, 8, 8, dtype=torch.float64))
    finally:
        handle.remove()
    assert calls == [1]


def test_in_place_activation_as_post_leaves_the_input_alone():
    # a deleted unit computes post(x): an in-place SiLU must not overwrite x
    model = _create("resnet18", layers=(2, 1, 1, 1), channels=(8, 16, 24, 32), act_layer="silu").eval()
    unit = next(u for u in unravel.find_units(model) if not u.projection)
    assert getattr(unit.module.act2, "inplace", False)
    x = torch.randn(2, 8, 8, 8)
    saved = x.clone()
    y = unit.bypass(x)
    assert torch.equal(x, saved) and torch.equal(y, F.silu(saved))
    unravel.verify_units(model, torch.randn(2, 3, 32, 32))


def test_regnet_block_without_shortcut_is_no_unit():
    _, x, _, _ = _family("regnet")
    torch.manual_seed(0)
    plain = randomize_bn(_regnet(downsample=None)).double().eval()  # the stages' first blocks: no shortcut
    blocks = [m for m in plain.modules() if isinstance(m, regnet.Bottleneck)]
    units = unravel.verify_units(plain, x)
    assert 0 < len(units) == sum(b.downsample is not None for b in blocks) < len(blocks)


def test_convnext_projection_shortcut():
    model, x, _, _ = _family("convnext-projection")
    units = unravel.find_units(model)
    assert [u.projection for u in units] == [False, True, False]
    assert units[1].parts.shortcut is model[2].shortcut


def test_efficientnet_units_only_where_the_skip_is_used():
    model, x, _, _ = _family("efficientnet")
    units = unravel.find_units(model)
    blocks = [m for m in model if hasattr(m, "has_skip")]
    assert [m.has_skip for m in blocks] == [True, True, True, False, True, True, True, True, False]
    assert unravel.adapters.adapter_for(model[4]).parts(model[4]) == []
    # 7 skips, and the position encodings (cpe) of both attention blocks; in the last block,
    # which has no skip, the attention is what follows the cpe's sum (its post)
    assert [u.name for u in units] == ["1", "2", "3", "5", "6", "7", "8/cpe", "8/attention", "9/cpe"]
    assert units[-1].parts.post is not None
    # a block without its skip is code between units, not a unit; routed, it runs its own forward
    assert model[4] not in {u.module for u in units}
    h = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(unravel.adapters.adapter_for(model[4]).route(model[4], None, h), model[4](h))


@pytest.mark.parametrize("family", ["vit", "vit-respost", "vit-parallel"])
def test_vit_two_units_and_attn_mask_is_routed(family):
    model, x, _, _ = _family(family)
    units = unravel.find_units(model)
    assert [u.name for u in units[:2]] == ["blocks.0/attention", "blocks.0/mlp"]
    n_tokens = 1 + (32 // 8) ** 2
    mask = torch.zeros(n_tokens, n_tokens, dtype=torch.bool)
    mask[:, : n_tokens // 2] = True  # attend to the first half only
    mask = mask.expand(2, 1, n_tokens, n_tokens)

    class Masked(nn.Module):
        def __init__(self, vit):
            super().__init__()
            self.vit = vit

        def forward(self, x, attn_mask=None):
            return self.vit.forward_head(self.vit.forward_features(x, attn_mask=attn_mask))

    wrapped = Masked(model).eval()
    with torch.no_grad():
        masked, unmasked = wrapped(x, attn_mask=mask), wrapped(x)
    assert not torch.allclose(masked, unmasked)
    unravel.verify_units(wrapped, {"x": x, "attn_mask": mask})
    seen = []

    def record(unit, xin, position, **kw):
        seen.append(sorted(kw))
        return unit.forward(xin, **kw)

    with torch.no_grad(), unravel.intervene(wrapped, compute=record):
        routed = wrapped(x, attn_mask=mask)
    assert torch.allclose(routed, masked, rtol=1e-12, atol=1e-12)
    assert seen[:2] == [["attn_mask", "is_causal"], []]


def test_swin_windows_pad_and_shift():
    model, x, _, _ = _family("swin")
    blocks = [u.module for u in unravel.find_units(model)][::2]
    # the 8x8 and 4x4 token grids do not divide into 3x3 windows: padding; odd blocks shift
    assert [tuple(b.window_size) for b in blocks] == [(3, 3)] * 4
    assert [any(b.shift_size) for b in blocks] == [False, True, False, True]


def test_mixer_units_are_token_then_channel_mixing():
    model, *_ = _family("mixer")
    assert [u.name for u in unravel.find_units(model)[:2]] == ["blocks.0/token-mixing", "blocks.0/channel-mixing"]


def test_subclass_with_own_forward_is_refused():
    class Tweaked(vision_transformer.Block):
        def forward(self, x, attn_mask=None, is_causal=False):
            return super().forward(x) * 2

    net = nn.Sequential(Tweaked(8, 2))
    with pytest.raises(unravel.errors.UnsupportedModelError, match="Tweaked"):
        unravel.find_units(net)


def test_adapters_module_does_not_import_timm():
    # matched by qualified name: loading the adapters must work without timm installed
    import unravel.adapters._timm._base as module

    tree = ast.parse(inspect.getsource(module))
    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "timm"]
    assert "timm.models.vision_transformer.Block" in unravel.supported_blocks()


# ------------------------------------------------------------------------------------------
# Models as timm names them (no arguments changed but the classes and the image size)

NAMED = [
    ("resnet10t", {}, 32),  # tiered stem, avg-pool downsample
    ("resnet50d", {}, 32),
    ("seresnext26d_32x4d", {}, 32),
    ("resnetv2_50d", {}, 32),
    ("convnextv2_atto", {}, 32),
    ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8), 32),
    ("mobilenetv3_small_050", {}, 32),
    ("efficientnet_b0", {}, 32),
    ("tf_efficientnetv2_b0", {}, 32),  # EdgeResidual, ConvBnAct with skip
    ("mobilenetv4_hybrid_medium", {}, 64),  # UniversalInvertedResidual, MobileAttention
    ("regnetx_002", {}, 32),
    ("regnety_002", {}, 32),
    ("swin_tiny_patch4_window7_224", dict(img_size=64), 64),
    ("swinv2_tiny_window8_256", dict(img_size=64), 64),
    ("mixer_s32_224", dict(img_size=64), 64),
]


def _wake(model):
    """timm starts many residual branches at (nearly) zero -- the last norm of ResNet and RegNet
    branches, ConvNeXt's layer scale (1e-6), Swin v2's res-post-norms -- and MLP-Mixer's head: a
    wrong residual branch would then go unnoticed. Give every such weight values near one."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("bias") and float(p.abs().max()) < 1e-4:
                p.uniform_(0.5, 1.5)
    return randomize_bn(model)


@pytest.mark.parametrize("name,kwargs,size", NAMED)
def test_named_models_found_and_verified(name, kwargs, size):
    torch.manual_seed(0)
    model = _wake(_create(name, **kwargs)).eval()
    units = unravel.verify_units(model, torch.randn(2, 3, size, size))
    assert len(units) > 0
    with torch.no_grad():  # the residual branches are awake: deleting units changes the output
        own = model(torch.ones(2, 3, size, size))
        with unravel.lesion.delete(model, [0, len(units) - 1]):
            assert not torch.allclose(model(torch.ones(2, 3, size, size)), own)
