"""Built-in adapters for torchvision's residual blocks, matched by qualified class name without
importing torchvision; loaded on first use through :mod:`unravel.adapters`.

Each adapter mirrors its block's forward exactly (``tests/test_adapters_torchvision.py`` checks
that routing a block through its units reproduces its output); it does not check train-mode
randomness beyond placing dropout and stochastic depth where the block applies them.

Families and units (``y = post(shortcut(x) + residual(x))``):

- ResNet ``BasicBlock``/``Bottleneck``: one unit, ``post`` the ReLU after the sum, ``shortcut``
  the ``downsample`` (a projection) or the identity.
- RegNet ``ResBottleneckBlock``: one unit, ``post`` the block's activation, ``shortcut`` its
  ``proj`` or the identity.
- ConvNeXt ``CNBlock``: one unit; layer scale and stochastic depth belong to the residual branch.
- MobileNetV2/V3 ``InvertedResidual``, EfficientNet ``MBConv``/``FusedMBConv``: one unit where
  the block has its skip connection (``use_res_connect``), none where it has not -- such a block
  is a plain layer between units.
- ViT ``EncoderBlock``, Swin ``SwinTransformerBlock``/``SwinTransformerBlockV2``: two units,
  ``"attention"`` then ``"mlp"``. Every norm is inside the residual branch (pre-norm in ViT and
  Swin v1, "res-post-norm" after the branch in Swin v2), so ``post`` is the identity.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..units.parts import UnitParts
from . import Adapter, FunctionAdapter

# Activations whose functional, out-of-place form computes bit for bit what the module computes
# in place: a deleted unit's ``post(shortcut(x))`` must not overwrite the block's input.
_OUT_OF_PLACE = {nn.ReLU: F.relu}


def _post(activation):
    """An activation as ``post``: its out-of-place equivalent where one is exact, else itself."""
    if getattr(activation, "inplace", False) and type(activation) in _OUT_OF_PLACE:
        return _OUT_OF_PLACE[type(activation)]
    return activation


# ------------------------------------------------------------------------------------------
# ResNet, RegNet, ConvNeXt: one unit per block


def _tv_basic(m):
    def residual(x):
        return m.bn2(m.conv2(m.relu(m.bn1(m.conv1(x)))))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


def _tv_bottleneck(m):
    def residual(x):
        out = m.relu(m.bn1(m.conv1(x)))
        out = m.relu(m.bn2(m.conv2(out)))
        return m.bn3(m.conv3(out))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


def _regnet_bottleneck(m):
    # forward: activation(proj(x) + f(x)), or activation(x + f(x)) without proj
    return UnitParts(residual=m.f, shortcut=m.proj, post=_post(m.activation))


def _convnext(m):
    # forward: stochastic_depth(layer_scale * block(x)) + x
    def residual(x):
        return m.stochastic_depth(m.layer_scale * m.block(x))

    return UnitParts(residual=residual)


# ------------------------------------------------------------------------------------------
# Inverted residuals: a unit only where the block keeps its skip connection


def _mobilenet_v2(m):
    # forward: x + conv(x) if use_res_connect else conv(x)
    return [UnitParts(residual=m.conv)] if m.use_res_connect else []


def _mobilenet_v3(m):
    # forward: block(x) + x if use_res_connect else block(x)
    return [UnitParts(residual=m.block)] if m.use_res_connect else []


def _mbconv(m):
    # MBConv and FusedMBConv: stochastic_depth(block(x)) + x if use_res_connect else block(x)
    if not m.use_res_connect:
        return []

    def residual(x):
        return m.stochastic_depth(m.block(x))

    return [UnitParts(residual=residual)]


# ------------------------------------------------------------------------------------------
# Vision transformers: two units per block, attention then MLP


class _TwoUnits(Adapter):
    """Routes a one-input block through its attention unit, then its MLP unit."""

    def route(self, m, call_unit, x):
        return call_unit(1, call_unit(0, x))


class _ViTEncoderBlockAdapter(_TwoUnits):
    """``vision_transformer.EncoderBlock``, pre-LN: ``x + dropout(attn(ln_1(x)))``, then
    ``x + mlp(ln_2(x))``."""

    def parts(self, m):
        def attend(x):
            h = m.ln_1(x)
            h, _ = m.self_attention(h, h, h, need_weights=False)
            return m.dropout(h)

        def mlp(x):
            return m.mlp(m.ln_2(x))

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]


class _SwinBlockAdapter(_TwoUnits):
    """``swin_transformer.SwinTransformerBlock`` (v1, pre-norm):
    ``x + sd(attn(norm1(x)))``, then ``x + sd(mlp(norm2(x)))``."""

    def parts(self, m):
        def attend(x):
            return m.stochastic_depth(m.attn(m.norm1(x)))

        def mlp(x):
            return m.stochastic_depth(m.mlp(m.norm2(x)))

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]


class _SwinBlockV2Adapter(_TwoUnits):
    """``swin_transformer.SwinTransformerBlockV2`` ("res-post-norm": the norm closes the residual
    branch, nothing follows the sum): ``x + sd(norm1(attn(x)))``, then ``x + sd(norm2(mlp(x)))``."""

    def parts(self, m):
        def attend(x):
            return m.stochastic_depth(m.norm1(m.attn(x)))

        def mlp(x):
            return m.stochastic_depth(m.norm2(m.mlp(x)))

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=mlp, label="mlp")]


_M = "torchvision.models."
CLASSES = {
    _M + "resnet.BasicBlock": FunctionAdapter(_tv_basic),
    _M + "resnet.Bottleneck": FunctionAdapter(_tv_bottleneck),
    _M + "regnet.ResBottleneckBlock": FunctionAdapter(_regnet_bottleneck),
    _M + "convnext.CNBlock": FunctionAdapter(_convnext),
    _M + "mobilenetv2.InvertedResidual": FunctionAdapter(_mobilenet_v2),
    _M + "mobilenetv3.InvertedResidual": FunctionAdapter(_mobilenet_v3),
    _M + "efficientnet.MBConv": FunctionAdapter(_mbconv),
    _M + "efficientnet.FusedMBConv": FunctionAdapter(_mbconv),
    _M + "vision_transformer.EncoderBlock": _ViTEncoderBlockAdapter(),
    _M + "swin_transformer.SwinTransformerBlock": _SwinBlockAdapter(),
    _M + "swin_transformer.SwinTransformerBlockV2": _SwinBlockV2Adapter(),
}
