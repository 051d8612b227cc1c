"""Built-in adapters for timm's convolutional residual blocks beyond ResNet, RegNet and
EfficientNet, matched by qualified class name without importing timm; loaded on first use through
:mod:`unravel.adapters`.

One unit per block, ``y = post(shortcut(x) + residual(x))``: ``post`` is the activation after
the sum where the block has one, ``shortcut`` the block's downsample/projection or the identity,
and every ``drop_path``, layer scale and attention module of the branch sits in ``residual``.
Blocks whose skip is conditional (``use_shortcut``, ``has_skip``, ``residual``, a shortcut
``None``) hold a unit only where it is used; elsewhere they are plain layers between units.
Re-parameterisable blocks (RepVGG, MobileOne) are units in their multi-branch (training) form,
their shortcut the identity branch's BatchNorm (a projection); once fused they hold none.

Each adapter mirrors its block's forward (timm 1.0.31) in eval mode; ``benchmarks/coverage.py``
and ``tests/test_adapters_timm_more.py`` check it. In train mode the random masks are drawn in the
same places, in the same order, except in ResNeSt with both DropBlock and stochastic depth on:
its ``drop_path`` acts on the shortcut, which a unit computes before the residual branch.
"""

from __future__ import annotations

import torch

from ._spec import Spec, Unit

# ------------------------------------------------------------------------------------------
# Branches that are more than a sequence of attributes


def _sum_branches(m, x, **_):
    # RepVGG: conv_1x1(x) + conv_kxk(x)
    return m.conv_1x1(x) + m.conv_kxk(x)


def _mobileone_branches(m, x, **_):
    # MobileOne: the scale branch plus every kxk branch
    out = m.conv_scale(x) if m.conv_scale is not None else 0
    for ck in m.conv_kxk or ():
        out = out + ck(x)
    return out


def _training_form(m) -> bool:
    """A re-parameterisable block before fusion that has its identity (BatchNorm) branch."""
    return getattr(m, "reparam_conv", None) is None and getattr(m, "identity", None) is not None


def _res2net(m, x, **_):
    # Res2Net's hierarchical split (res2net.Bottle2neck, dla.DlaBottle2neck)
    out = m.relu(m.bn1(m.conv1(x)))
    spx = torch.split(out, m.width, 1)
    spo = []
    sp = spx[0]
    for i, (conv, bn) in enumerate(zip(m.convs, m.bns)):
        sp = spx[i] if i == 0 or m.is_first else sp + spx[i]
        sp = m.relu(bn(conv(sp)))
        spo.append(sp)
    if m.scale > 1:
        spo.append(m.pool(spx[-1]) if m.pool is not None else spx[-1])
    out = torch.cat(spo, 1)
    if hasattr(m, "drop_block"):
        out = m.drop_block(out)
    out = m.bn3(m.conv3(out))
    if getattr(m, "se", None) is not None:
        out = m.se(out)
    return out if getattr(m, "drop_path", None) is None else m.drop_path(out)


def _resnest_shortcut(m, x):
    # ResNeSt drops the input (drop_path) before the downsample, not the branch
    return m.downsample(x if m.drop_path is None else m.drop_path(x))


def _rexnet_shortcut(m, x):
    # ReXNet adds the input to the first in_channels channels: the shortcut pads with zeros
    pad = m.out_channels - m.in_channels
    return torch.cat([x, x.new_zeros((x.shape[0], pad, *x.shape[2:]))], dim=1)


def _nfnet_pre(m, x):
    return m.act1(x) * m.beta


def _nfnet(m, x, **_):
    out = m.conv1(_nfnet_pre(m, x))
    out = m.conv2(m.act2(out))
    if m.conv2b is not None:
        out = m.conv2b(m.act2b(out))
    if m.attn is not None:
        out = m.attn_gain * m.attn(out)
    out = m.conv3(m.act3(out))
    if m.attn_last is not None:
        out = m.attn_gain * m.attn_last(out)
    out = m.drop_path(out)
    if m.skipinit_gain is not None:
        out = out * m.skipinit_gain
    return out * m.alpha


def _ghost_v3_dw(m, x, **_):
    if m.stride > 1:
        if m.infer_mode:
            return m.bn_dw(m.conv_dw(x))
        x1 = m.dw_rpr_scale(x)
        for conv in m.dw_rpr_conv:
            x1 = x1 + conv(x)
        return x1
    return x


def _inception_resnet(m, x, **_):
    # Block35/17/8: conv2d(cat(branches)) * scale
    branches = [getattr(m, f"branch{i}") for i in range(4) if hasattr(m, f"branch{i}")]
    return m.conv2d(torch.cat([b(x) for b in branches], 1)) * m.scale


def _hgnet(m, x, **_):
    out = [x]
    for layer in m.layers:
        x = layer(x)
        out.append(x)
    return m.drop_path(m.aggregation(torch.cat(out, dim=1)))


def _vovnet(m, x, **_):
    output = [x]
    if m.conv_reduction is not None:
        x = m.conv_reduction(x)
    x = m.conv_concat(m.conv_mid(x, output))
    if m.attn is not None:
        x = m.attn(x)
    return x if m.drop_path is None else m.drop_path(x)


def _lcnetv2_dw(m, x, **_):
    if m.dw_conv is not None:
        return m.dw_act(m.dw_conv(x))
    out = m.dw_conv_list[0](x)
    for conv in m.dw_conv_list[1:]:
        out = out + conv(x)
    return m.dw_act(out)


def _starnet(m, x, **_):
    x = m.dwconv(x)
    x = m.act(m.f1(x)) * m.f2(x)
    return m.drop_path(m.dwconv2(m.g(x)))


def _fasternet(m, x, **_):
    x = m.mlp(m.spatial_mixing(x))
    if m.layer_scale is not None:
        x = m.layer_scale.unsqueeze(-1).unsqueeze(-1) * x
    return m.drop_path(x)


def _mambaout(m, x, **_):
    x = m.fc1(m.norm(x))
    g, i, c = torch.split(x, m.split_indices, dim=-1)
    c = m.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return m.drop_path(m.ls(m.fc2(m.act(g) * torch.cat((i, c), dim=-1))))


def _nchw_gamma(m, x, **_):
    return x if m.gamma is None else x.mul(m.gamma.reshape(1, -1, 1, 1))


def _channels_last(steps):
    """A branch run channels-last: (B, C, H, W) -> (B, H, W, C) -> steps -> back."""
    from ._spec import run

    def branch(m, x, **args):
        return run(m, steps, x.permute(0, 2, 3, 1), args).permute(0, 3, 1, 2)

    return branch


def _csatv2(m, x, **_):
    x = _channels_last(["norm", "pwconv1", "act", "grn", "pwconv2"])(m, m.dwconv(x))
    attn = torch.nn.functional.interpolate(m.attn(x), size=x.shape[2:], mode="bilinear", align_corners=True)
    return m.drop_path(m.ls(x * attn))


def _maxxvit_convnext(m, x, **_):
    x = m.conv_dw(m.down(x))
    if m.use_conv_mlp:
        x = m.ls(m.mlp(m.norm(x)))
    else:
        x = _channels_last(["norm", "mlp", "ls"])(m, x)
    return m.drop_path(x)


def _msra_residual_drop(m, x, **_):
    # efficientvit_msra.ResidualDrop: per-example stochastic depth drawn as the block draws it
    if m.training and m.drop > 0:
        return m.m(x) * torch.rand(x.size(0), 1, 1, 1, device=x.device).ge_(m.drop).div(1 - m.drop).detach()
    return m.m(x)


# ------------------------------------------------------------------------------------------
# Tables

_M = "timm.models."


def _byob(*steps):
    """byobnet blocks: ``act(branch(x) + shortcut(x))``; no unit where the shortcut is ``None``."""
    return Spec(Unit([*steps, "drop_path"], shortcut="shortcut", post="act", when=lambda m: m.shortcut is not None))


def _resnet_like(*steps, post="act", shortcut="downsample"):
    return Spec(Unit(list(steps), shortcut=shortcut, post=post))


_SE_RESNET = _resnet_like("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3", "se_module", post="relu")
_GHOST = Spec(Unit(["ghost1", "conv_dw", "bn_dw", "se", "ghost2"], shortcut="shortcut"))
_CSP_DARK = Spec(Unit(["conv1", "attn", "conv2", "drop_path"]))
_RESIDUAL_BLOCK = Spec(Unit(["main", "drop_path"], shortcut="shortcut", when=lambda m: m.shortcut is not None))

CLASSES = {
    # byobnet: ResNet-like blocks with configurable layers; RepVGG and MobileOne re-parameterisable
    _M + "byobnet.BasicBlock": _byob("conv1_kxk", "attn", "conv2_kxk", "attn_last"),
    _M + "byobnet.BottleneckBlock": _byob("conv1_1x1", "conv2_kxk", "conv2b_kxk", "attn", "conv3_1x1", "attn_last"),
    _M + "byobnet.DarkBlock": _byob("conv1_1x1", "attn", "conv2_kxk", "attn_last"),
    _M + "byobnet.EdgeBlock": _byob("conv1_kxk", "attn", "conv2_1x1", "attn_last"),
    _M + "byobnet.SelfAttnBlock": _byob("conv1_1x1", "conv2_kxk", "self_attn", "post_attn", "conv3_1x1"),
    _M + "byobnet.RepVggBlock": Spec(Unit([_sum_branches, "drop_path"], shortcut="identity", when=_training_form,
                                          post=lambda m, y: m.act(m.attn(y)), projection=True)),
    _M + "byobnet.MobileOneBlock": Spec(Unit([_mobileone_branches, "drop_path"], shortcut="identity",
                                             when=_training_form, post=lambda m, y: m.act(m.attn(y)),
                                             projection=True)),
    _M + "fastvit.MobileOneBlock": Spec(Unit([_mobileone_branches], shortcut="identity", when=_training_form,
                                             post=lambda m, y: m.act(m.se(y)), projection=True)),
    # CSPNet, CSPNeXt: inside a cross stage the stage holds these blocks' units, on its whole
    # stream (see _timm_stages); a dark stage's blocks are found one by one
    _M + "cspnet.BottleneckBlock": Spec(Unit(["conv1", "conv2", "attn2", "conv3", "attn3", "drop_path"], post="act3")),
    _M + "cspnet.DarkBlock": _CSP_DARK,
    _M + "cspnet.EdgeBlock": _CSP_DARK,
    _M + "cspnext.CspNextBlock": Spec(Unit(["conv1", "conv2", "drop_path"], when=lambda m: m.add_identity)),
    # ResNet relatives
    _M + "res2net.Bottle2neck": _resnet_like(_res2net, post="relu"),
    _M + "resnest.ResNestBottleneck": Spec(Unit(["conv1", "bn1", "act1", "avd_first", "conv2", "bn2", "drop_block",
                                                 "act2", "avd_last", "conv3", "bn3"], shortcut=_resnest_shortcut,
                                                shortcut_when=lambda m: m.downsample is not None, post="act3")),
    _M + "sknet.SelectiveKernelBasic": _resnet_like("conv1", "conv2", "se", "drop_path"),
    _M + "sknet.SelectiveKernelBottleneck": _resnet_like("conv1", "conv2", "conv3", "se", "drop_path"),
    _M + "tresnet.BasicBlock": _resnet_like("conv1", "conv2", "se", "drop_path"),
    _M + "tresnet.Bottleneck": _resnet_like("conv1", "conv2", "se", "conv3", "drop_path"),
    _M + "senet.SEResNetBlock": _resnet_like("conv1", "bn1", "relu", "conv2", "bn2", "relu", "se_module", post="relu"),
    _M + "senet.SEBottleneck": _SE_RESNET,
    _M + "senet.SEResNetBottleneck": _SE_RESNET,
    _M + "senet.SEResNeXtBottleneck": _SE_RESNET,
    _M + "nfnet.NormFreeBlock": Spec(Unit([_nfnet], shortcut=lambda m, x: m.downsample(_nfnet_pre(m, x)),
                                          shortcut_when=lambda m: m.downsample is not None)),
    _M + "xception.Block": Spec(Unit(["rep"], shortcut=lambda m, x: m.skipbn(m.skip(x)),
                                     shortcut_when=lambda m: m.skip is not None)),
    _M + "xception_aligned.XceptionModule": Spec(Unit(["stack", "drop_path"], shortcut="shortcut",
                                                      when=lambda m: not m.no_skip)),
    _M + "xception_aligned.PreXceptionModule": Spec(Unit(["stack", "drop_path"], shortcut="shortcut", before=["norm"],
                                                         when=lambda m: not m.no_skip)),
    _M + "inception_resnet_v2.Block35": Spec(Unit([_inception_resnet], post="act")),
    _M + "inception_resnet_v2.Block17": Spec(Unit([_inception_resnet], post="act")),
    _M + "inception_resnet_v2.Block8": Spec(Unit([_inception_resnet], post="relu")),
    # mobile-style blocks
    _M + "ghostnet.GhostBottleneck": _GHOST,
    _M + "ghostnet.GhostBottleneckV3": Spec(Unit(["ghost1", _ghost_v3_dw, "se", "ghost2"], shortcut="shortcut")),
    _M + "repghost.RepGhostBottleneck": _GHOST,
    _M + "rexnet.LinearBottleneck": Spec(Unit(["conv_exp", "conv_dw", "se", "act_dw", "conv_pwl", "drop_path"],
                                              shortcut=_rexnet_shortcut, when=lambda m: m.use_shortcut,
                                              shortcut_when=lambda m: m.out_channels != m.in_channels)),
    _M + "lcnetv2.RepDepthwiseSeparable": Spec(Unit([_lcnetv2_dw, "se", "pw_conv"], when=lambda m: m.use_shortcut)),
    _M + "hgnet.HighPerfGpuBlock": Spec(Unit([_hgnet], when=lambda m: m.residual)),
    _M + "vovnet.OsaBlock": Spec(Unit([_vovnet], when=lambda m: m.residual)),
    _M + "starnet.Block": Spec(Unit([_starnet])),
    _M + "fasternet.MLPBlock": Spec(Unit([_fasternet])),
    _M + "mambaout.GatedConvBlock": Spec(Unit([_mambaout])),
    _M + "inception_next.MetaNeXtBlock": Spec(Unit(["token_mixer", "norm", "mlp", _nchw_gamma, "drop_path"])),
    _M + "csatv2.Block": Spec(Unit([_csatv2])),
    _M + "convmixer.Residual": Spec(Unit(["fn"])),
    _M + "gcvit.MbConvBlock": Spec(Unit(["conv_dw", "act", "se", "conv_pw"])),
    _M + "tiny_vit.MBConv": Spec(Unit(["conv1", "act1", "conv2", "act2", "conv3", "drop_path"], post="act3")),
    _M + "maxxvit.MbConvBlock": Spec(Unit(["pre_norm", "down", "conv1_1x1", "norm1", "conv2_kxk", "se_early", "norm2",
                                           "se", "conv3_1x1", "drop_path"], shortcut="shortcut")),
    _M + "vitamin.MbConvLNBlock": Spec(Unit(["pre_norm", "down", "conv1_1x1", "act1", "conv2_kxk", "act2", "conv3_1x1",
                                             "drop_path"], shortcut="shortcut")),
    _M + "maxxvit.ConvNeXtBlock": Spec(Unit([_maxxvit_convnext], shortcut="shortcut")),
    _M + "swiftformer.ConvEncoder": Spec(Unit(["dwconv", "norm", "pwconv1", "act", "pwconv2", "layer_scale",
                                               "drop_path"])),
    # wrappers: x + f(x) around another module
    _M + "cpubone.ResidualBlock": _RESIDUAL_BLOCK,
    _M + "lowformer.ResidualBlock": _RESIDUAL_BLOCK,
    _M + "efficientvit_mit.ResidualBlock": Spec(Unit(["pre_norm", "main"], shortcut="shortcut",
                                                     when=lambda m: m.shortcut is not None)),
    _M + "efficientvit_msra.ResidualDrop": Spec(Unit([_msra_residual_drop])),
    _M + "shvit.Residual": Spec(Unit(["m"])),
    _M + "iformer.Residual": Spec(Unit(["module", "drop_path", "gamma"])),
}
