"""timm's residual families beyond ResNet/ViT/Swin (the adapters of ``_timm._vit``, ``_timm._conv``
and ``_timm._mixed``) work with no adapter of the user's: every residual block of the model holds
units, routing through them reproduces the model, lesions restore it bit for bit, and the exact
path-length decomposition sums to autograd's gradient. One small random-init model per adapter
(timm's own configuration, shrunk through its constructor's arguments), in float64, with every
near-zero weight woken up (timm zero-initialises many residual branches' last layers)."""

from functools import partial

import pytest
import torch
from torch import nn

import unravel
from unravel import attribution

from .conftest import autograd_input_grad, randomize_bn, state_hash

timm = pytest.importorskip("timm", reason="timm is optional; pip install timm to run these tests")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _create(name, **kw):
    return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw)


def _wake(model):
    """Give every (nearly) zero weight values near one -- timm starts many residual branches at
    zero (last norms, layer scales, skip-init gains) -- and BatchNorms running statistics."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("bias") and p.numel() and float(p.abs().max()) < 1e-4:
                p.uniform_(0.5, 1.5)
    return randomize_bn(model)


_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _model(module, cls, **kw):
    """A timm model class built directly (where the entry point fixes the arguments we shrink)."""
    import importlib

    return getattr(importlib.import_module(f"timm.models.{module}"), cls)(num_classes=CLASSES, **kw)


def _metaformer(*mixers):
    from timm.models import metaformer

    classes = tuple(getattr(metaformer, m) for m in mixers)
    return classes[0] if len(classes) == 1 else classes


def _maxxvit(name):
    """A MaxxViT/CoAtNet configuration with every stage one block deep and narrow."""
    from dataclasses import replace

    from timm.models import maxxvit

    cfg = maxxvit.model_cfgs[name]
    cfg = replace(cfg, embed_dim=(8, 16, 16, 32), depths=(1, 1, 1, 1), stem_width=8,
                  conv_cfg=(replace(cfg.conv_cfg, init_values=0.5) if hasattr(cfg.conv_cfg, "init_values")
                            else cfg.conv_cfg),
                  transformer_cfg=replace(cfg.transformer_cfg, dim_head=8, window_size=(2, 2), grid_size=(2, 2),
                                          init_values=0.5))
    return maxxvit.MaxxVit(cfg, img_size=64, num_classes=CLASSES)


def _mvitv2(cls):
    from timm.models import mvitv2

    cfg = mvitv2.MultiScaleVitCfg(depths=(1, 2, 1, 1), embed_dim=16, num_heads=1, use_cls_token=cls,
                                  pool_first=False)
    return mvitv2.MultiScaleVit(cfg, img_size=64, num_classes=CLASSES)


class _GcvitChain(nn.Module):
    """GC ViT blocks (local attention: no global query) and its MBConv blocks, in a chain."""

    def __init__(self):
        super().__init__()
        from timm.models import gcvit

        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Sequential(gcvit.MbConvBlock(16, 16), gcvit.MbConvBlock(16, 16))
        self.blocks = nn.ModuleList([gcvit.GlobalContextVitBlock(16, (16, 16), num_heads=2, window_size=(4, 4),
                                                                 use_global=False, layer_scale=0.5) for _ in range(2)])
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        x = self.conv(self.stem(x)).permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean((1, 2)))


def _gcvit_chain():
    return _GcvitChain()


def _byob(*stages, **cfg):
    """A ByobNet of the given stages ``(block type, depth, channels, stride)``, narrow."""
    from timm.models import byobnet

    blocks = tuple(byobnet.ByoBlockCfg(t, d=d, c=c, s=st, gs=0 if t in ("bottle", "self_attn") else None, br=0.5)
                   for t, d, c, st in stages)
    cfg = byobnet.ByoModelCfg(blocks=blocks, stem_chs=8, stem_pool=None, **cfg)
    return byobnet.ByobNet(cfg, num_classes=CLASSES, img_size=32)


def _blocks(module, specs, **kw):
    import importlib

    mod = importlib.import_module(f"timm.models.{module}")
    return [getattr(mod, name)(*args, **kw) for name, *args in specs]


def _cspnet(name):
    from dataclasses import replace

    from timm.models import cspnet

    cfg = cspnet.model_cfgs[name]
    stages = replace(cfg.stages, depth=tuple(min(d, 2) for d in cfg.stages.depth),
                     out_chs=tuple(c // 16 for c in cfg.stages.out_chs))
    cfg = replace(cfg, stem=replace(cfg.stem, out_chs=8), stages=stages)
    return cspnet.CspNet(cfg, num_classes=CLASSES)


def _dla_block(name):
    from timm.models import dla

    return getattr(dla, name)


def _senet(*blocks):
    """SENet stages of each block type (one block each, channel counts shrunk)."""
    from timm.models import senet

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            kinds = [getattr(senet, b) for b in blocks]
            layers, c = [], 16
            for kind in kinds:
                planes = c // kind.expansion
                extra = dict(groups=2, base_width=32) if "NeXt" in kind.__name__ else dict(groups=1)
                layers.append(kind(c, planes, reduction=4, **extra))
            self.blocks, self.head = nn.Sequential(*layers), _Head(c, False)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    return Mixed()


def _nfnet(name):
    from dataclasses import replace

    from timm.models import nfnet

    cfg = replace(nfnet.model_cfgs[name], depths=(1, 1, 1, 1), channels=(16, 32, 32, 32), stem_chs=8,
                  num_features=0, group_size=8 if nfnet.model_cfgs[name].group_size else None)
    return nfnet.NormFreeNet(cfg, num_classes=CLASSES)


def _xception_aligned(pre):
    from timm.models import xception_aligned as xa

    block_cfg = [dict(in_chs=64, out_chs=16, stride=2), dict(in_chs=16, out_chs=16, stride=1),
                 dict(in_chs=16, out_chs=(16, 24, 24), stride=2, no_skip=False)]
    return xa.XceptionAligned(block_cfg, num_classes=CLASSES, preact=pre)


class _InceptionResNetChain(nn.Module):
    def __init__(self):
        super().__init__()
        import importlib

        irv = importlib.import_module("timm.models.inception_resnet_v2")

        self.stem, self.b35 = nn.Conv2d(3, 320, 1), irv.Block35(scale=0.5)
        self.to17, self.b17 = nn.Conv2d(320, 1088, 1), irv.Block17(scale=0.5)
        self.to8, self.b8 = nn.Conv2d(1088, 2080, 1), irv.Block8(scale=0.5, no_relu=True)
        self.head = nn.Linear(2080, CLASSES)

    def forward(self, x):
        x = self.b8(self.to8(self.b17(self.to17(self.b35(self.stem(x))))))
        return self.head(x.mean((2, 3)))


def _inception_resnet_chain():
    return _InceptionResNetChain()


def _hgnet():
    from timm.models import hgnet

    cfg = {"stem_type": "v2", "stem_chs": [8, 8],
           "stage1": [8, 8, 16, 2, False, False, 3, 2], "stage2": [16, 8, 24, 1, True, False, 3, 2],
           "stage3": [24, 8, 24, 2, True, True, 5, 2], "stage4": [24, 8, 32, 1, True, True, 5, 2]}
    return hgnet.HighPerfGpuNet(cfg, num_classes=CLASSES, use_lab=True)


def _vovnet():
    from timm.models import vovnet

    cfg = dict(stem_chs=[8, 8, 16], stage_conv_chs=[8, 8, 16, 16], stage_out_chs=[16, 16, 24, 24], layer_per_block=2,
               block_per_stage=[1, 2, 1, 2], residual=True, depthwise=False, attn="ese")
    return vovnet.VovNet(cfg, num_classes=CLASSES)


class _EfficientViMChain(nn.Module):
    """EfficientViM blocks in a chain (the model sums heads over every stage's hidden state)."""

    def __init__(self):
        super().__init__()
        from timm.models import efficientvim as ev

        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList([ev.EfficientViMBlock(16, state_dim=4), ev.EfficientViMBlock(16, state_dim=4)])
        self.merge = ev.PatchMerging(16, 24)
        self.head = nn.Linear(24, CLASSES)

    def forward(self, x):
        x = self.stem(x)
        for blk in self.blocks:
            x, _ = blk(x)
        return self.head(self.merge(x).mean((2, 3)))


def _efficientvim_chain():
    return _EfficientViMChain()


def _relpos_respost():
    from timm.models import vision_transformer_relpos as relpos

    return relpos.ResPostRelPosBlock


class _Chain(nn.Sequential):
    """Blocks in a chain between a stem and a head, for adapters whose models are not chains of
    units (CSP stages split and concatenate, DLA roots aggregate, GC ViT's global query)."""

    def __init__(self, c_in, c_out, *blocks, tokens=False):
        stem = nn.Conv2d(3, c_in, 3, padding=1)
        super().__init__(stem, *blocks, _Head(c_out, tokens))


class _Head(nn.Module):
    def __init__(self, c, tokens):
        super().__init__()
        self.tokens, self.fc = tokens, nn.Linear(c, CLASSES)

    def forward(self, x):
        return self.fc(x.mean(1) if self.tokens else x.mean((2, 3)))


# name -> (builder, image size, block classes every instance of which must hold units, chain)
# "chain": the model's units form a chain, so the exact decomposition must equal autograd
MODELS = {
    "beit": (lambda: _create("beitv2_base_patch16_224", **_VIT, init_values=0.5, use_rel_pos_bias=True), 32,
             ["Block"], True),
    "beit-shared-relpos": (lambda: _create("beit_base_patch16_224", **_VIT, use_shared_rel_pos_bias=True,
                                           use_rel_pos_bias=False), 32, ["Block"], True),
    "cait": (lambda: _create("cait_xxs24_224", **_VIT, init_values=0.5, depth_token_only=1), 32,
             ["LayerScaleBlock"], True),
    "convit": (lambda: _create("convit_tiny", **_VIT, local_up_to_layer=1), 32, ["Block"], True),
    "eva": (lambda: _create("eva02_tiny_patch14_224", img_size=28, patch_size=14, embed_dim=32, depth=2,
                            num_heads=2, init_values=0.5), 28, ["EvaBlock"], True),
    "deepseek-vit": (lambda: _create("deepseek_vit_412m", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                     num_heads=2), 32, ["DeepseekVitBlock"], True),
    "gemma4-vit": (lambda: _create("gemma4_vit_167m", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                   head_dim=16, num_kv_heads=2, intermediate_size=48, pooling_kernel_size=2),
                   32, ["Gemma4Block"], True),
    "qwen3-vit": (lambda: _create("qwen3_vit_88m", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
                  32, ["EvaBlock"], True),
    "nest": (lambda: _model("nest", "Nest", img_size=32, patch_size=4, embed_dims=(16, 32, 64), num_heads=(1, 2, 4),
                            depths=(1, 1, 1)), 32, ["TransformerLayer"], True),
    "pvt-v2": (lambda: _create("pvt_v2_b0", depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1)),
               64, ["Block"], True),
    "twins": (lambda: _create("twins_svt_small", img_size=64, embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1),
                              depths=(2, 1, 1, 1), wss=(2, 2, 2, 2), sr_ratios=(2, 2, 1, 1)), 64,
              ["Block", "PosConv"], True),
    "visformer": (lambda: _create("visformer_tiny", img_size=32, init_channels=8, embed_dim=24, depth=(1, 1, 1),
                                  num_heads=2), 32, ["Block"], True),
    "relpos": (lambda: _create("vit_relpos_small_patch16_224", **_VIT, init_values=0.5), 32, ["RelPosBlock"], True),
    "relpos-shared": (lambda: _create("vit_srelpos_small_patch16_224", **_VIT), 32, ["RelPosBlock"], True),
    "relpos-respost": (lambda: _create("vit_relpos_small_patch16_224", **_VIT, block_fn=_relpos_respost()), 32,
                       ["ResPostRelPosBlock"], True),
    "sam": (lambda: _create("samvit_base_patch16", **_VIT, window_size=2, global_attn_indexes=(1,), neck_chans=16,
                            init_values=0.5), 32, ["Block"], True),
    "volo": (lambda: _model("volo", "VOLO", layers=(1, 1, 1, 1), img_size=32, embed_dims=(16, 32, 32, 32),
                            num_heads=(1, 2, 2, 2), stem_hidden_dim=8, post_layers=("ca",)), 32,
             ["Outlooker", "Transformer", "ClassBlock"], True),
    "xcit": (lambda: _create("xcit_nano_12_p8_224", **_VIT, cls_attn_layers=1, eta=0.5), 32,
             ["XCABlock", "ClassAttentionBlock"], True),
    "sequencer": (lambda: _create("sequencer2d_s", img_size=32, layers=(1, 1, 1, 1), patch_sizes=(4, 2, 1, 1),
                                  embed_dims=(8, 16, 16, 16), hidden_sizes=(4, 8, 8, 8)), 32,
                  ["Sequencer2dBlock"], True),
    "levit": (lambda: _create("levit_128s", img_size=64), 64, ["LevitBlock", "LevitDownsample"], True),
    "efficientformer": (lambda: _model("efficientformer", "EfficientFormer", depths=(1, 1, 1, 2),
                                       embed_dims=(8, 8, 16, 16), num_vit=1), 224, ["MetaBlock2d", "MetaBlock1d"], True),
    "efficientformer-v2": (lambda: _create("efficientformerv2_s0", depths=(1, 1, 2, 2), embed_dims=(8, 16, 24, 32),
                                           num_vit=1, img_size=64), 64, ["EfficientFormerV2Block"], True),
    "poolformer-v2": (lambda: _model("metaformer", "MetaFormer", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                     token_mixers=_metaformer("Pooling"), res_scale_init_values=(None, None, 1.0, 1.0)),
                      32, ["MetaFormerBlock"], True),
    "caformer": (lambda: _model("metaformer", "MetaFormer", depths=(1, 1, 1, 1), dims=(8, 16, 32, 32),
                                token_mixers=_metaformer("SepConv", "SepConv", "Attention", "Attention"),
                                norm_layers=_metaformer(*["LayerNorm2dNoBias"] * 2, *["LayerNormNoBias"] * 2)), 32,
                 ["MetaFormerBlock"], True),
    "focalnet": (lambda: _model("focalnet", "FocalNet", embed_dim=8, depths=(1, 1, 1, 1), layerscale_value=0.5,
                                use_post_norm=True), 32, ["FocalNetBlock"], True),
    "gcvit": (lambda: _model("gcvit", "GlobalContextVit", img_size=64, embed_dim=16, depths=(1, 1, 1, 1),
                             num_heads=(1, 1, 2, 2), window_size=(4, 4, 4, 2), layer_scale=0.5), 64,
              ["GlobalContextVitBlock", "MbConvBlock"], True),
    "gcvit-blocks": (_gcvit_chain, 16, ["GlobalContextVitBlock", "MbConvBlock"], True),
    "maxvit": (lambda: _maxxvit("maxvit_rmlp_pico_rw"), 64, ["MbConvBlock", "PartitionAttentionCl"], True),
    "coatnet": (lambda: _maxxvit("coatnet_nano_rw"), 64, ["MbConvBlock", "TransformerBlock2d"], True),
    "coatnext": (lambda: _maxxvit("coatnext_nano_rw"), 64, ["ConvNeXtBlock", "TransformerBlock2d"], True),
    "maxvit-parallel": (lambda: _maxxvit("maxvit_tiny_pm"), 64, ["MbConvBlock", "ParallelPartitionAttention"],
                        True),
    "hiera": (lambda: _create("hiera_tiny_224", img_size=64, embed_dim=16, num_heads=1, stages=(1, 2, 1, 1),
                              init_values=0.5), 64, ["HieraBlock"], True),
    "hieradet-sam2": (lambda: _create("sam2_hiera_tiny", embed_dim=16, num_heads=1, stages=(1, 2, 1, 1),
                                      global_att_blocks=(2,), window_spec=(4, 2, 2, 2), init_values=0.5), 64,
                      ["MultiScaleBlock"], True),
    "mvitv2": (lambda: _mvitv2(cls=False), 64, ["MultiScaleBlock"], True),
    "mvitv2-cls": (lambda: _mvitv2(cls=True), 64, ["MultiScaleBlock"], True),
    "tiny-vit": (lambda: _model("tiny_vit", "TinyVit", embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1),
                                num_heads=(1, 1, 2, 2), window_sizes=(2, 2, 3, 2)), 64, ["TinyVitBlock", "MBConv"], True),
    "swinv2-cr": (lambda: _create("swinv2_cr_tiny_224", img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                  window_size=4, extra_norm_stage=True), 32, ["SwinTransformerV2CrBlock"], True),
    "davit": (lambda: _model("davit", "DaVit", depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1),
                             window_size=3), 64, ["SpatialBlock", "ChannelBlock"], True),
    "coat-lite": (lambda: _create("coat_lite_tiny", img_size=32, embed_dims=(16, 16, 32, 32), serial_depths=(1, 1, 1, 1),
                                  num_heads=8), 32, ["SerialBlock"], True),
    "coat": (lambda: _create("coat_tiny", img_size=32, embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1),
                             parallel_depth=1, num_heads=8), 32, ["SerialBlock"], False),  # parallel blocks: 4 streams
    "csatv2": (lambda: _create("csatv2", dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), transformer_depths=(0, 0, 1, 1),
                               ls_init_value=0.5), 64, ["Block", "TransformerBlock"], True),
    "tnt": (lambda: _create("tnt_s_patch16_224", img_size=32, patch_size=16, embed_dim=32, inner_dim=8, depth=2,
                            num_heads_inner=2, num_heads_outer=2), 32, ["Block"], True),
    "tnt-legacy": (lambda: _create("tnt_s_legacy_patch16_224", img_size=32, patch_size=16, embed_dim=32, inner_dim=8,
                                   depth=2, num_heads_inner=2, num_heads_outer=2), 32, ["Block"], True),
    # ---- convolutional blocks (_timm_conv)
    "byobnet": (lambda: _byob(("basic", 2, 8, 1), ("bottle", 2, 16, 2), ("dark", 2, 16, 1), ("edge", 2, 24, 2)), 32,
                ["BasicBlock", "BottleneckBlock", "DarkBlock", "EdgeBlock"], True),
    "byobnet-plain-down": (lambda: _byob(("bottle", 2, 8, 1), ("bottle", 2, 16, 2), downsample=""), 32, [], True),
    "byobnet-selfattn": (lambda: _byob(("bottle", 1, 16, 1), ("self_attn", 2, 16, 2), self_attn_layer="halo",
                                       self_attn_kwargs=dict(block_size=4, halo_size=1)), 32,
                         ["BottleneckBlock", "SelfAttnBlock"], True),
    "repvgg": (lambda: _byob(("rep", 2, 8, 1), ("rep", 2, 16, 2), stem_type="rep"), 32, [], True),
    "mobileone": (lambda: _byob(("one", 2, 8, 1), ("one", 2, 16, 2), stem_type="one",
                                block_kwargs=dict(num_conv_branches=2)), 32, [], True),
    "cspnet-blocks": (lambda: _Chain(8, 8, *_blocks("cspnet", [("BottleneckBlock", 8, 8), ("DarkBlock", 8, 8),
                                                                ("EdgeBlock", 8, 8)], bottle_ratio=0.5)), 16,
                      ["BottleneckBlock", "DarkBlock", "EdgeBlock"], True),
    "cspnet": (lambda: _create("cs3darknet_focus_s", zero_init_last=True), 32, ["CrossStage3"], True),
    "cspresnet": (lambda: _cspnet("cspresnet50"), 32, ["CrossStage"], True),
    "cspdarknet": (lambda: _cspnet("cspdarknet53"), 32, ["CrossStage", "DarkStage"], True),
    "cspnext": (lambda: _create("cspnext_tiny", deepen_factor=0.34, widen_factor=0.125), 64, [], True),  # last: no skip
    "cspnext-blocks": (lambda: _Chain(8, 8, *_blocks("cspnext", [("CspNextBlock", 8, 8)] * 2)), 16,
                       ["CspNextBlock"], True),
    "res2net": (lambda: _create("res2net50_14w_8s", layers=(1, 1, 1, 1), base_width=8, stem_width=8,
                                zero_init_last=True), 32, ["Bottle2neck"], True),
    "resnest": (lambda: _create("resnest14d", layers=(1, 1, 1, 1), stem_width=8, channels=(8, 16, 16, 16),
                                zero_init_last=True), 32, ["ResNestBottleneck"], True),
    "sknet": (lambda: _create("skresnet18", layers=(1, 1, 1, 1), channels=(8, 16, 16, 16)), 32,
              ["SelectiveKernelBasic"], True),
    "sknet-bottleneck": (lambda: _create("skresnet50", layers=(1, 1, 1, 1), channels=(8, 16, 16, 16)), 32,
                         ["SelectiveKernelBottleneck"], True),
    "tresnet": (lambda: _model("tresnet", "TResNet", layers=[1, 1, 1, 1], width_factor=0.125), 64,
                ["BasicBlock", "Bottleneck"], True),
    "senet": (lambda: _senet("SEResNetBlock", "SEResNetBottleneck", "SEResNeXtBottleneck"), 32,
              ["SEResNetBlock", "SEResNetBottleneck", "SEResNeXtBottleneck"], True),
    "nfnet": (lambda: _nfnet("nfnet_f0"), 32, ["NormFreeBlock"], True),
    "nf-regnet": (lambda: _nfnet("nf_regnet_b0"), 32, ["NormFreeBlock"], True),
    "xception": (lambda: _Chain(8, 16, *_blocks("xception", [("Block", 8, 8, 2, 1), ("Block", 8, 16, 2, 2)])), 16,
                 ["Block"], True),
    "xception-aligned": (lambda: _xception_aligned(False), 32, ["XceptionModule"], True),
    "xception-aligned-pre": (lambda: _xception_aligned(True), 32, ["PreXceptionModule"], True),
    "inception-resnet": (_inception_resnet_chain, 8, ["Block35", "Block17", "Block8"], True),
    "ghostnet": (lambda: _create("ghostnet_050"), 32, ["GhostBottleneck"], True),
    "ghostnet-v3": (lambda: _create("ghostnetv3_050"), 64, ["GhostBottleneckV3"], True),
    "repghost": (lambda: _create("repghostnet_050"), 32, ["RepGhostBottleneck"], True),
    "rexnet": (lambda: _create("rexnet_100", width_mult=0.5, depth_mult=0.5), 32, [], True),
    "lcnetv2": (lambda: _model("lcnetv2", "LCNetV2", scale=0.25, depths=(1, 1, 1, 2), head_hidden_size=32), 32, [],
                True),
    "hgnet": (lambda: _hgnet(), 64, [], True),
    "vovnet": (lambda: _vovnet(), 32, [], True),
    "starnet": (lambda: _create("starnet_s050", base_dim=8, depths=(1, 1, 1, 1)), 32, ["Block"], True),
    "fasternet": (lambda: _create("fasternet_t0", embed_dim=8, depths=(1, 1, 1, 1), layer_scale_init_value=0.5), 32,
                  ["MLPBlock"], True),
    "mambaout": (lambda: _create("mambaout_femto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), 32,
                 ["GatedConvBlock"], True),
    "inception-next": (lambda: _create("inception_next_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), 32,
                       ["MetaNeXtBlock"], True),
    "convmixer": (lambda: _model("convmixer", "ConvMixer", dim=16, depth=3, kernel_size=3, patch_size=4), 16,
                  ["Residual"], True),
    "vitamin-blocks": (lambda: _Chain(8, 16, *_blocks("vitamin", [("MbConvLNBlock", 8, 8), ("MbConvLNBlock", 8, 16, 2),
                                                                   ("MbConvLNBlock", 16, 16)])), 16,
                       ["MbConvLNBlock"], True),
    "swiftformer": (lambda: _create("swiftformer_xs", layers=(1, 1, 1, 2), embed_dims=(8, 16, 24, 32)), 32,
                    ["ConvEncoder", "Block"], True),
    "cpubone": (lambda: _create("cpubone_nano", width_list=(8, 8, 16, 16, 24, 32), depth_list=(1, 1, 1, 1, 1, 1),
                                head_widths=(32, 48)), 32, [], True),
    "lowformer": (lambda: _create("lowformer_b0", width_list=(8, 8, 16, 16, 24, 32), depth_list=(1, 1, 1, 1, 1, 1),
                                  head_widths=(32, 48)), 64, [], True),
    "efficientvit-mit": (lambda: _create("efficientvit_b0", widths=(8, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1),
                                         head_dim=8, head_widths=(32, 48)), 32, [], True),
    "efficientvit-msra": (lambda: _create("efficientvit_m0", img_size=64, embed_dim=(16, 32, 48), key_dim=(8, 8, 8),
                                          depth=(1, 1, 1), num_heads=(2, 2, 2), window_size=(2, 2, 2)), 64,
                          ["ResidualDrop"], True),
    "shvit": (lambda: _create("shvit_s1", embed_dim=(16, 32, 48), partial_dim=(8, 8, 8), qk_dim=(8, 8, 8),
                              depth=(1, 1, 1)), 64, ["Residual"], True),
    "iformer": (lambda: _create("iformer_t", dims=(8, 16, 32, 64), depths=(1, 1, 3, 3), attn_groups=(0, 0, 1, 1)), 64,
                ["Residual"], True),
    # ---- hybrid and multi-output blocks (_timm_mixed)
    "edgenext": (lambda: _create("edgenext_xx_small", dims=(8, 16, 24, 32), depths=(1, 1, 2, 2),
                                 global_block_counts=(0, 1, 1, 1), heads=(1, 1, 1, 1), ls_init_value=0.5), 32,
                 ["ConvBlock", "SplitTransposeBlock"], True),
    "edgenext-rw": (lambda: _create("edgenext_small_rw", dims=(16, 32, 64, 128), depths=(2, 2, 2, 2),
                                    global_block_counts=(0, 1, 1, 1), heads=(1, 1, 1, 1), ls_init_value=0.5), 32,
                    ["ConvBlock", "SplitTransposeBlock"], True),
    "nextvit": (lambda: _model("nextvit", "NextViT", in_chans=3, stem_chs=(8, 8, 16), depths=(1, 2, 5, 1),
                               head_dim=8), 64, ["NextConvBlock", "NextTransformerBlock"], True),
    "repvit": (lambda: _model("repvit", "RepVit", img_size=32, embed_dim=(8, 16, 24), depth=(2, 1, 1)), 32,
               ["RepViTBlock", "RepVitDownsample"], True),
    "repvit-legacy": (lambda: _model("repvit", "RepVit", img_size=32, embed_dim=(8, 16), depth=(2, 1), legacy=True), 32,
                      ["RepViTBlock", "RepVitDownsample"], True),
    "fastvit": (lambda: _create("fastvit_t8", layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                                layer_scale_init_value=0.5), 64, ["RepMixerBlock"], True),
    "fastvit-sa": (lambda: _create("fastvit_sa12", layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                                   layer_scale_init_value=0.5), 64, ["RepMixerBlock", "AttentionBlock"], True),
    "efficientvim": (lambda: _create("efficientvim_m1", embed_dim=(8, 16, 24), depths=(1, 1, 1), state_dim=(4, 4, 4)),
                     64, ["EfficientViMBlock"], False),  # each stage's hidden state feeds a head
    "efficientvim-blocks": (_efficientvim_chain, 16, ["EfficientViMBlock", "PatchMerging"], True),
    "dpn": (lambda: _model("dpn", "DPN", k_sec=(1, 2, 1, 1), inc_sec=(4, 4, 4, 4), k_r=16, groups=4,
                           num_init_features=8), 32, ["DualPathBlock"], True),
    "dla": (lambda: _model("dla", "DLA", levels=(1, 1, 1, 2, 1, 1), channels=(8, 8, 8, 16, 16, 16)), 32, [],
            False),  # the roots aggregate the blocks' outputs
    "dla-bottleneck": (lambda: _model("dla", "DLA", levels=(1, 1, 1, 2, 1, 1), channels=(8, 8, 16, 16, 32, 32),
                                      block=_dla_block("DlaBottleneck")), 32, [], False),
    "dla-basic": (lambda: _model("dla", "DLA", levels=(1, 1, 1, 1, 1, 1), channels=(8, 8, 8, 16, 16, 16),
                                 block=_dla_block("DlaBasic")), 32, [], False),
    "dla-res2net": (lambda: _model("dla", "DLA", levels=(1, 1, 1, 1, 1, 1), channels=(16, 32, 64, 64, 128, 128),
                                   base_width=8), 32, [], False),
}


def _build(name, dtype=torch.float64):
    build, size, _, _ = MODELS[name]
    torch.manual_seed(0)
    model = _wake(build()).to(dtype).eval()
    x = torch.randn(2, 3, size, size, dtype=dtype)
    return model, x, torch.randint(0, CLASSES, (2,))


# float32 inside a float64 model (DeepSeek's RmsNormFp32, EfficientViT's linear attention): each
# length channel's VJP is rounded to float32 there, so the parts sum to autograd's gradient to ~1e-7
LOOSE = {"deepseek-vit": 1e-6, "efficientvit-mit": 1e-6}


def _check(name):
    model, x, y = _build(name)
    _, _, blocks, chain = MODELS[name]
    units = unravel.verify_units(model, x)
    hosts = {u.module for u in units}
    # every residual block of the listed classes holds units: none runs unrecognised
    host_names = [n for n, m in model.named_modules() if m in hosts]
    missing = [n for n, m in model.named_modules() if type(m).__name__ in blocks
               and not any(n == h or n.startswith(h + ".") for h in host_names)]
    assert not missing, missing
    with torch.no_grad():
        own = model(x)
        with unravel.intervene(model):
            routed = model(x)
        assert torch.allclose(routed, own, rtol=1e-10, atol=1e-10 * float(own.abs().max()))
        before = state_hash(model)
        with unravel.lesion.delete(model, [units[0], units[-1]]):
            lesioned = model(x)
        assert not torch.allclose(lesioned, own, rtol=1e-6, atol=0)
        assert torch.equal(model(x), own) and state_hash(model) == before
    assert not any(hasattr(type(m), "_unravel_original") for m in model.modules())
    if chain:
        res = attribution.path_length_gradients(model, x, y)
        g = autograd_input_grad(model, x, y)
        assert res.lengths.tolist() == list(range(len(units) + 1))
        tol = LOOSE.get(name, 1e-10)
        assert torch.allclose(res.by_length.sum(0), g, rtol=tol, atol=tol * float(g.abs().max()))
        assert float(g.abs().max()) > 0 and float(res.by_length[1:].abs().max()) > 0
    return units


# the fast suite: one model per kind of adapter (extra forward arguments, class-token blocks,
# packed streams, sizes returned, conv blocks with projections and BatchNorm shortcuts, dense
# paths, hidden states, trees); every other model is in the slow suite
FAST = ["beit-shared-relpos", "eva", "twins", "xcit", "tnt", "sam", "volo", "mvitv2", "coat", "poolformer-v2",
        "swinv2-cr", "byobnet", "repvgg", "cspnet-blocks", "nfnet", "convmixer", "repvit-legacy", "efficientvim-blocks",
        "dla"]


@pytest.mark.parametrize("name", FAST)
def test_found_verified_lesioned_decomposed(name):
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if n not in FAST])
def test_found_verified_lesioned_decomposed_slow(name):
    _check(name)


# ------------------------------------------------------------------------------------------
# What the adapters say


def _hosts(model):
    return {u.module for u in unravel.find_units(model)}


@pytest.mark.slow
@pytest.mark.parametrize("name,block,uses_skip", [
    ("byobnet-plain-down", "BottleneckBlock", lambda m: m.shortcut is not None),
    ("repvgg", "RepVggBlock", lambda m: m.identity is not None),
    ("mobileone", "MobileOneBlock", lambda m: m.identity is not None),
    ("rexnet", "LinearBottleneck", lambda m: m.use_shortcut),
    ("lcnetv2", "RepDepthwiseSeparable", lambda m: m.use_shortcut),
    ("hgnet", "HighPerfGpuBlock", lambda m: m.residual),
    ("vovnet", "OsaBlock", lambda m: m.residual),
    ("efficientformer-v2", "EfficientFormerV2Block", lambda m: True),
    ("cpubone", "ResidualBlock", lambda m: m.shortcut is not None),
])
def test_units_only_where_the_skip_is_used(name, block, uses_skip):
    model, x, _ = _build(name)
    blocks = [m for m in model.modules() if type(m).__name__ == block]
    hosts = _hosts(model)
    assert [m in hosts for m in blocks] == [bool(uses_skip(m)) for m in blocks]
    assert any(m in hosts for m in blocks) and (name == "efficientformer-v2" or not all(m in hosts for m in blocks))
    # a block without its skip is a plain layer: routed, it runs its own forward
    plain = next((m for m in blocks if m not in hosts), None)
    if plain is not None:
        adapter = unravel.adapters.adapter_for(plain)
        assert adapter.parts(plain) == []


def test_reparameterised_blocks_hold_no_unit():
    # RepVGG once fused (reparameterize) is a plain network of convolutions: no unit is left
    model, x, _ = _build("repvgg")
    assert len(unravel.find_units(model)) > 0
    with torch.no_grad():
        own = model(x)
        for m in model.modules():
            if type(m).__name__ == "RepVggBlock":
                m.reparameterize()
        assert torch.allclose(model(x), own, rtol=1e-9, atol=1e-9 * float(own.abs().max()))
    with pytest.raises(unravel.errors.UnsupportedModelError, match="hold no residual unit"):
        unravel.find_units(model)


@pytest.mark.parametrize("name,block,labels", [
    ("xcit", "XCABlock", ["attention", "local", "mlp"]),
    ("xcit", "ClassAttentionBlock", ["attention", "mlp"]),
    ("tnt", "Block", ["inner-attention", "inner-mlp", "pixel-to-patch", "attention", "mlp"]),
    ("davit", "SpatialBlock", ["cpe1", "attention", "cpe2", "mlp"]),
    ("efficientvim-blocks", "EfficientViMBlock", ["dwconv1", "mixer", "dwconv2", "ffn"]),
    pytest.param("nextvit", "NextTransformerBlock", ["attention", "conv-attention", "mlp"], marks=pytest.mark.slow),
    ("dla", "DlaTree", ["tree1", "tree2"]),
    ("cspresnet", "CrossStage", ["blocks.0", "blocks.1"]),
    ("gcvit", "GlobalContextVitStage", ["global.conv1", "global.conv2", "blocks.0/attention", "blocks.0/mlp"]),
])
def test_unit_labels(name, block, labels):
    model, x, _ = _build(name)
    units = unravel.find_units(model, x)
    first = next(u.module for u in units if type(u.module).__name__ == block)
    assert [u.name.split("/", 1)[1] for u in units if u.module is first] == labels


def test_extra_forward_arguments_reach_the_units():
    # BEiT's shared relative position bias, EVA's rotary embedding, PVT's feature size: what the
    # caller passes each block reaches the unit that reads it
    seen = []

    def record(unit, xin, position, **kw):
        seen.append((type(unit.module).__name__, unit.name.rsplit("/", 1)[-1], sorted(kw)))
        return unit.forward(xin, **kw)

    for name in ("beit-shared-relpos", "eva", "pvt-v2", "xcit", "gemma4-vit"):
        model, x, _ = _build(name)
        seen.clear()
        with torch.no_grad(), unravel.intervene(model, compute=record):
            model(x)
        assert seen, name
        kinds = {(b, label): kw for b, label, kw in seen}
        expected = {"beit-shared-relpos": ("Block", "attention", ["shared_rel_pos_bias"]),
                    "eva": ("EvaBlock", "attention", ["attn_mask", "is_causal", "rope"]),
                    "pvt-v2": ("Block", "mlp", ["feat_size"]),
                    "xcit": ("XCABlock", "local", ["H", "W"]),
                    "gemma4-vit": ("Gemma4Block", "attention", ["attn_mask", "rope_cos", "rope_sin"])}[name]
        assert kinds[expected[:2]] == expected[2]


def _byob_drop():
    from timm.models import byobnet

    cfg = byobnet.ByoModelCfg(blocks=(byobnet.ByoBlockCfg("bottle", d=2, c=8, s=1, br=0.5),
                                      byobnet.ByoBlockCfg("basic", d=1, c=8, s=1)), stem_chs=8, stem_pool=None)
    return byobnet.ByobNet(cfg, num_classes=CLASSES, drop_path_rate=0.5)


DROPPING = {
    "beit": lambda: _create("beitv2_base_patch16_224", **_VIT, init_values=0.5, drop_path_rate=0.5),
    "byobnet": _byob_drop,
    "metaformer": lambda: _model("metaformer", "MetaFormer", depths=(2, 1, 1, 1), dims=(8, 16, 24, 32),
                                 token_mixers=_metaformer("Pooling"), drop_path_rate=0.5),
    "efficientvit-msra": lambda: _residual_drop(MODELS["efficientvit-msra"][0](), 0.5),
}


def _residual_drop(model, p):
    for m in model.modules():
        if type(m).__name__ == "ResidualDrop":
            m.drop = p
    return model


@pytest.mark.parametrize("name", ["beit", "byobnet", "metaformer",
                                  pytest.param("efficientvit-msra", marks=pytest.mark.slow)])
def test_train_mode_stochastic_depth_sits_in_the_residual_branch(name):
    # in train mode the routed model draws the same random masks in the same places as the
    # model's own forward: stochastic depth is in the residual branch, nowhere else
    import copy

    torch.manual_seed(0)
    model = _wake(DROPPING[name]()).double()
    size = 64 if name == "efficientvit-msra" else 32
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    assert any(getattr(m, "drop_prob", getattr(m, "drop", 0)) > 0 for m in model.modules()
               if type(m).__name__ in ("DropPath", "ResidualDrop"))
    own_model, routed_model = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    torch.manual_seed(1)
    own = own_model(x)
    torch.manual_seed(1)
    with unravel.intervene(routed_model):
        routed = routed_model(x)
    assert torch.allclose(routed, own, rtol=1e-10, atol=1e-10 * float(own.abs().max()))
    torch.manual_seed(2)
    assert not torch.allclose(own_model(x), own)  # and the masks do change the output


def test_efficientvim_hidden_state_follows_the_mixer():
    # the block returns the mixer's hidden state; with the mixer's branch deleted, the state is
    # the mixer's at the unit's input (the block still returns one)
    model, x, _ = _build("efficientvim-blocks")
    block = model.blocks[0]
    mixer = next(u for u in unravel.find_units(model) if u.module is block and u.name.endswith("/mixer"))
    h = torch.randn(2, 16, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        out, state = block(h)
        with unravel.intervene(model):
            routed, routed_state = block(h)
        assert torch.allclose(routed, out, rtol=1e-12, atol=1e-12) and torch.allclose(routed_state, state)
        with unravel.lesion.delete(model, [mixer]):
            _, lesioned_state = block(h)
            x1 = block.dwconv1(h) if block.fused else h + block.drop_path(
                torch.sigmoid(block.alpha).view(4, -1, 1, 1)[0] * (block.dwconv1(h) - h))
        assert torch.allclose(lesioned_state, block.mixer(block.norm(x1))[1])


def test_cait_class_attention_runs_between_units():
    # CaiT's class-attention blocks read the patch tokens beside the class token: they are not
    # units (their units would not form a chain); the model's output is still routed exactly
    model, x, _ = _build("cait")
    hosts = _hosts(model)
    assert not any(type(m).__name__ == "LayerScaleBlockClassAttn" for m in hosts)
    assert all(type(m).__name__ == "LayerScaleBlock" for m in hosts)


def test_new_adapter_modules_do_not_import_timm():
    import ast
    import inspect

    from unravel.adapters._timm import _conv, _mixed, _spec, _stages, _vit

    for module in (_spec, _vit, _conv, _mixed, _stages):
        tree = ast.parse(inspect.getsource(module))
        imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in imported if n.split(".")[0] == "timm"], module.__name__
    supported = unravel.supported_blocks()
    assert "timm.models.beit.Block" in supported and "timm.models.dpn.DualPathBlock" in supported
    assert "timm.models.cspnet.CrossStage" in supported
    assert any("DLA tree" in s for s in supported)
