"""Built-in adapters for timm's residual blocks, matched by qualified class name without importing
timm; loaded on first use through :mod:`unravel.adapters`.

Each adapter mirrors its block's forward (timm 1.0) exactly in eval mode;
``tests/test_adapters_timm.py`` checks that routing every block of small timm models through its
units reproduces their output. It does not check train-mode randomness beyond placing dropout,
DropBlock and stochastic depth (``drop_path``) where the block applies them: inside the residual
branch.

Families and units (``y = post(shortcut(x) + residual(x))``):

- ResNet (``resnet.BasicBlock``/``Bottleneck``: ResNet, ResNet-D, SE-ResNet(Xt), ResNeXt) and
  ResNet v2 (``resnetv2.Bottleneck``): one unit, ``post`` the activation after the sum,
  ``shortcut`` the ``downsample`` (a projection) or the identity. Pre-activation ResNet v2
  (``PreActBasic``/``PreActBottleneck``): ``post`` is the identity; a projection shortcut
  reads the pre-activation ``norm1(x)``, an identity shortcut reads ``x``.
- RegNet (``regnet.Bottleneck``/``PreBottleneck``): one unit where the block has a shortcut, none
  where it has not.
- ConvNeXt v1/v2 (``convnext.ConvNeXtBlock``): one unit; layer scale (``gamma``) and
  ``drop_path`` belong to the residual branch; ``shortcut`` is the block's ``Downsample`` where
  dims or stride change.
- EfficientNet/MobileNet blocks (``_efficientnet_blocks``): one unit where the block uses its
  skip (``has_skip``), none where it does not -- such a block is a plain layer between units.
  ``MobileAttention`` with a conditional position encoding adds one unit for it first.
- ViT/DeiT (``vision_transformer.Block``, ``ResPostBlock``, ``ParallelThingsBlock``): two units,
  ``"attention"`` then ``"mlp"``; the attention unit takes the ``attn_mask``/``is_causal`` the
  block is called with. Every norm is inside the residual branch, so ``post`` is the identity.
- Swin v1/v2 (``SwinTransformerBlock``, ``SwinTransformerV2Block``): two units, ``"attention"``
  (shifted-window attention, padding and all) then ``"mlp"``.
- MLP-Mixer, ResMLP (``mlp_mixer.MixerBlock``, ``ResBlock``): two units, ``"token-mixing"`` then
  ``"channel-mixing"``; gMLP (``SpatialGatingBlock``): one unit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...units.parts import UnitParts, is_identity
from .. import Adapter, FunctionAdapter, original_class

# ------------------------------------------------------------------------------------------
# Shortcuts and activations after the sum


def _post(act):
    """An activation as ``post``: ``None`` for the identity, ``F.relu`` for a ReLU (bit for bit
    what ``nn.ReLU(inplace=True)`` computes, and known to the attribution as a ReLU), else the
    module itself (unravel runs an in-place ``post`` on a copy where its input must survive)."""
    if is_identity(act):
        return None
    if type(act) is nn.ReLU:
        return F.relu
    return act


class _Units(Adapter):
    """Routes a one-input block through its units in order; a block with no unit (its skip
    unused) runs its own forward."""

    def route(self, m, call_unit, x, *args, **kwargs):
        n = len(self.parts(m))
        if n == 0:
            return original_class(m).forward(m, x, *args, **kwargs)
        return super().route(m, call_unit, x, *args, **kwargs)


class _Fn(_Units, FunctionAdapter):
    """A :class:`~unravel.adapters.FunctionAdapter` whose blocks may hold no unit."""


# ------------------------------------------------------------------------------------------
# ResNet, ResNet v2, RegNet: one unit per block


def _resnet_basic(m):
    # forward: act2(drop_path(se(bn2(conv2(aa(act1(drop_block(bn1(conv1(x))))))))) + downsample(x))
    def residual(x):
        x = m.aa(m.act1(m.drop_block(m.bn1(m.conv1(x)))))
        x = m.bn2(m.conv2(x))
        if m.se is not None:
            x = m.se(x)
        return x if m.drop_path is None else m.drop_path(x)

    return UnitParts(residual=residual, shortcut=m.downsample, post=_post(m.act2))


def _resnet_bottleneck(m):
    def residual(x):
        x = m.act1(m.bn1(m.conv1(x)))
        x = m.aa(m.act2(m.drop_block(m.bn2(m.conv2(x)))))
        x = m.bn3(m.conv3(x))
        if m.se is not None:
            x = m.se(x)
        return x if m.drop_path is None else m.drop_path(x)

    return UnitParts(residual=residual, shortcut=m.downsample, post=_post(m.act3))


def _preact_shortcut(m):
    """ResNet v2 pre-activation: a projection reads ``norm1(x)``, the identity reads ``x``."""
    if m.downsample is None:
        return None

    def shortcut(x):
        return m.downsample(m.norm1(x))

    return shortcut


def _resnetv2_preact(m):
    # PreActBasic and PreActBottleneck: x_preact = norm1(x); drop_path(convs(x_preact)) + shortcut
    def residual(x):
        x = m.conv2(m.norm2(m.conv1(m.norm1(x))))
        if hasattr(m, "conv3"):  # the bottleneck
            x = m.conv3(m.norm3(x))
        return m.drop_path(x)

    return UnitParts(residual=residual, shortcut=_preact_shortcut(m))


def _resnetv2_bottleneck(m):
    def residual(x):
        x = m.norm2(m.conv2(m.norm1(m.conv1(x))))
        return m.drop_path(m.norm3(m.conv3(x)))

    return UnitParts(residual=residual, shortcut=m.downsample, post=_post(m.act3))


def _regnet_bottleneck(m):
    # forward: act3(drop_path(conv3(se(conv2(conv1(x))))) + downsample(x)); without downsample
    # the block has no shortcut and is a plain layer
    if m.downsample is None:
        return []

    def residual(x):
        return m.drop_path(m.conv3(m.se(m.conv2(m.conv1(x)))))

    return [UnitParts(residual=residual, shortcut=m.downsample, post=_post(m.act3))]


def _regnet_prebottleneck(m):
    # forward: x = norm1(x); drop_path(conv3(norm3(se(conv2(norm2(conv1(x))))))) + downsample(x)
    if m.downsample is None:
        return []
    downsample = m.downsample

    def shortcut(x):
        x = m.norm1(x)
        return x if downsample is None else downsample(x)

    def residual(x):
        x = m.se(m.conv2(m.norm2(m.conv1(m.norm1(x)))))
        return m.drop_path(m.conv3(m.norm3(x)))

    # the shortcut holds norm1: never the identity
    return [UnitParts(residual=residual, shortcut=shortcut, projection=True)]


# ------------------------------------------------------------------------------------------
# ConvNeXt


def _convnext(m):
    # forward: drop_path(gamma * mlp(norm(conv_dw(x)))) + shortcut(x), channels-last inside
    # unless conv_mlp
    def residual(x):
        x = m.conv_dw(x)
        if m.use_conv_mlp:
            x = m.mlp(m.norm(x))
        else:
            x = m.mlp(m.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if m.gamma is not None:
            x = x.mul(m.gamma.reshape(1, -1, 1, 1))
        return m.drop_path(x)

    return UnitParts(residual=residual, shortcut=m.shortcut)


# ------------------------------------------------------------------------------------------
# EfficientNet / MobileNet blocks: a unit only where the skip is used


def _skip_only(branch):
    """Adapter body for blocks whose forward is ``drop_path(branch(x)) + x if has_skip else
    branch(x)``."""

    def parts(m):
        if not m.has_skip:
            return []

        def residual(x):
            return m.drop_path(branch(m, x))

        return [UnitParts(residual=residual)]

    return _Fn(parts)


def _conv_bn_act(m, x):
    return m.aa(m.bn1(m.conv(x)))


def _space_to_depth(m, x):
    if getattr(m, "conv_s2d", None) is not None:
        x = m.bn_s2d(m.conv_s2d(x))
    return x


def _depthwise_separable(m, x):
    x = m.aa(m.bn1(m.conv_dw(_space_to_depth(m, x))))
    return m.bn2(m.conv_pw(m.se(x)))


def _inverted_residual(m, x):
    x = m.bn1(m.conv_pw(_space_to_depth(m, x)))
    x = m.se(m.aa(m.bn2(m.conv_dw(x))))
    return m.bn3(m.conv_pwl(x))


def _cond_conv_residual(m, x):
    routing_weights = torch.sigmoid(m.routing_fn(F.adaptive_avg_pool2d(x, 1).flatten(1)))
    x = m.bn1(m.conv_pw(x, routing_weights))
    x = m.se(m.bn2(m.conv_dw(x, routing_weights)))
    return m.bn3(m.conv_pwl(x, routing_weights))


def _universal_inverted_residual(m, x):
    x = m.se(m.dw_mid(m.pw_exp(m.dw_start(x))))
    return m.layer_scale(m.dw_end(m.pw_proj(x)))


def _edge_residual(m, x):
    x = m.se(m.aa(m.bn1(m.conv_exp(x))))
    return m.bn2(m.conv_pwl(x))


def _mobile_attention(m):
    # forward: x = x + conv_cpe_dw(x) (optional); then drop_path(layer_scale(attn(norm(x)))) + x
    # if has_skip, else without the sum
    def attend(x):
        return m.layer_scale(m.attn(m.norm(x)))

    def residual(x):
        return m.drop_path(attend(x))

    parts = []
    if m.conv_cpe_dw is not None:
        # without its skip, the attention is what follows the position encoding's sum
        parts.append(UnitParts(residual=m.conv_cpe_dw, post=None if m.has_skip else attend, label="cpe"))
    if m.has_skip:
        parts.append(UnitParts(residual=residual, label="attention" if parts else None))
    return parts


# ------------------------------------------------------------------------------------------
# Vision transformers, Swin, MLP-Mixer: two units per block


class _ViTAdapter(Adapter):
    """Two units, attention then MLP; the attention unit takes ``attn_mask`` and ``is_causal``."""

    def route(self, m, call_unit, x, attn_mask=None, is_causal=False):
        x = call_unit(0, x, attn_mask=attn_mask, is_causal=is_causal)
        return call_unit(1, x)


class _ViTBlockAdapter(_ViTAdapter):
    """``vision_transformer.Block`` (pre-norm): ``x + drop_path1(ls1(attn(norm1(x))))``, then
    ``x + drop_path2(ls2(mlp(norm2(x))))``. ``ResPostBlock`` (``post_norm``; the norm closes the
    residual branch, nothing follows the sum): ``x + drop_path1(norm1(attn(x)))``, then
    ``x + drop_path2(norm2(mlp(x)))``."""

    def __init__(self, post_norm=False):
        self.post_norm = post_norm

    def parts(self, m):
        def attend(x, attn_mask=None, is_causal=False):
            if self.post_norm:
                return m.drop_path1(m.norm1(m.attn(x, attn_mask=attn_mask, is_causal=is_causal)))
            return m.drop_path1(m.ls1(m.attn(m.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))

        # **_ : an MLP unit moved to the attention's position ignores the mask
        def mlp(x, **_):
            return m.drop_path2(m.norm2(m.mlp(x)) if self.post_norm else m.ls2(m.mlp(m.norm2(x))))

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]


class _ViTParallelThingsAdapter(_ViTAdapter):
    """``vision_transformer.ParallelThingsBlock``: the sum of parallel attention branches, then
    the sum of parallel MLP branches, each branch pre-norm with layer scale and drop_path."""

    def parts(self, m):
        def attend(x, attn_mask=None, is_causal=False):
            if attn_mask is None and not is_causal:
                return torch.stack([attn(x) for attn in m.attns]).sum(dim=0)
            out = [a.drop_path(a.ls(a.attn(a.norm(x), attn_mask=attn_mask, is_causal=is_causal))) for a in m.attns]
            return torch.stack(out).sum(dim=0)

        def mlp(x, **_):
            return torch.stack([ffn(x) for ffn in m.ffns]).sum(dim=0)

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]


def _swin(post_norm):
    """Swin v1 (pre-norm) and v2 (res-post-norm) blocks on ``(B, H, W, C)``: the shifted-window
    attention (cyclic shift, padding to whole windows, mask) is the block's own ``_attn``; the MLP
    runs on the tokens flattened as the block flattens them."""

    def parts(m):
        def attend(x):
            return m.drop_path1(m.norm1(m._attn(x)) if post_norm else m._attn(m.norm1(x)))

        def mlp(x):
            B, H, W, C = x.shape
            t = x.reshape(B, -1, C)
            t = m.norm2(m.mlp(t)) if post_norm else m.mlp(m.norm2(t))
            return m.drop_path2(t).reshape(B, H, W, C)

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]

    return _Fn(parts)


def _mixer(m):
    # MixerBlock: x + drop_path(mlp_tokens(norm1(x)^T)^T), then x + drop_path(mlp_channels(norm2(x)));
    # ResMLP's ResBlock: the same with a linear token mixer and layer scales ls1, ls2
    resmlp = hasattr(m, "linear_tokens")

    def tokens(x):
        t = m.norm1(x).transpose(1, 2)
        t = m.ls1 * m.linear_tokens(t).transpose(1, 2) if resmlp else m.mlp_tokens(t).transpose(1, 2)
        return m.drop_path(t)

    def channels(x):
        c = m.mlp_channels(m.norm2(x))
        return m.drop_path(m.ls2 * c if resmlp else c)

    return [UnitParts(residual=tokens, label="token-mixing"), UnitParts(residual=channels, label="channel-mixing")]


def _gmlp(m):
    def residual(x):
        return m.drop_path(m.mlp_channels(m.norm(x)))

    return UnitParts(residual=residual)


_M = "timm.models."
_E = _M + "_efficientnet_blocks."
CLASSES = {
    _M + "resnet.BasicBlock": _Fn(_resnet_basic),
    _M + "resnet.Bottleneck": _Fn(_resnet_bottleneck),
    _M + "resnetv2.PreActBasic": _Fn(_resnetv2_preact),
    _M + "resnetv2.PreActBottleneck": _Fn(_resnetv2_preact),
    _M + "resnetv2.Bottleneck": _Fn(_resnetv2_bottleneck),
    _M + "regnet.Bottleneck": _Fn(_regnet_bottleneck),
    _M + "regnet.PreBottleneck": _Fn(_regnet_prebottleneck),
    _M + "convnext.ConvNeXtBlock": _Fn(_convnext),
    _E + "ConvBnAct": _skip_only(_conv_bn_act),
    _E + "DepthwiseSeparableConv": _skip_only(_depthwise_separable),
    _E + "InvertedResidual": _skip_only(_inverted_residual),
    _E + "CondConvResidual": _skip_only(_cond_conv_residual),
    _E + "UniversalInvertedResidual": _skip_only(_universal_inverted_residual),
    _E + "EdgeResidual": _skip_only(_edge_residual),
    _E + "MobileAttention": _Fn(_mobile_attention),
    _M + "vision_transformer.Block": _ViTBlockAdapter(),
    _M + "vision_transformer.ResPostBlock": _ViTBlockAdapter(post_norm=True),
    _M + "vision_transformer.ParallelThingsBlock": _ViTParallelThingsAdapter(),
    _M + "swin_transformer.SwinTransformerBlock": _swin(post_norm=False),
    _M + "swin_transformer_v2.SwinTransformerV2Block": _swin(post_norm=True),
    _M + "mlp_mixer.MixerBlock": _Fn(_mixer),
    _M + "mlp_mixer.ResBlock": _Fn(_mixer),
    _M + "mlp_mixer.SpatialGatingBlock": _Fn(_gmlp),
}
