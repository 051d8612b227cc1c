"""Built-in adapters for timm blocks that hold several kinds of units, carry more than one tensor,
or return more than one: matched without importing timm (by qualified class name, and DLA's trees
by layout); loaded on first use through :mod:`unravel.adapters`.

- Hybrid blocks with their own unit sequences: EdgeNeXt, NextViT, RepViT, FastViT, SwiftFormer,
  EfficientViM (whose blocks return a hidden state besides ``x``), MViT v2 (blocks taking and
  returning the feature size).
- DPN's dual-path block ``cat([x_s1 + out1, x_s2, out2])``: one unit whose shortcut pads the
  (projected) input with zero channels and whose residual puts zeros where the input passes
  unchanged, so that their sum is the block's concatenation.
- TNT's block updates two streams (pixel and patch embeddings); its five units act on the two
  packed into one tensor per example, so that they form a chain.
- DLA: a tree of level 1 holds two units (its two blocks; the first block's shortcut is the
  tree's ``project(downsample(x))``); its root, which aggregates the blocks' outputs, and the
  trees above it run as code between units.

Each adapter mirrors its block's forward (timm 1.0.31) in eval mode; ``benchmarks/coverage.py``
and ``tests/test_adapters_timm_more.py`` check it.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from ...units.parts import UnitParts
from .. import Adapter, Layout
from ._conv import _channels_last, _res2net
from ._spec import Spec, Unit, identity_like, two

# ------------------------------------------------------------------------------------------
# EdgeNeXt, NextViT, RepViT, FastViT, SwiftFormer


def _edgenext_conv(m, x, **_):
    x = x if m.shortcut_after_dw else m.conv_dw(x)
    return m.drop_path(_channels_last(["norm", "mlp", "gamma"])(m, x))


def _edgenext_split(m, x, **_):
    # SplitTransposeBlock: Res2Net-like split convs, then XCA with its own inner skip, then the
    # MLP; one unit around all of it (its inner sums are part of its residual branch)
    spx = x.chunk(len(m.convs) + 1, dim=1)
    spo, sp = [], spx[0]
    for i, conv in enumerate(m.convs):
        sp = conv(sp if i == 0 else sp + spx[i])
        spo.append(sp)
    x = torch.cat(spo + [spx[-1]], 1)
    B, C, H, W = x.shape
    x = x.reshape(B, C, H * W).permute(0, 2, 1)
    if m.pos_embd is not None:
        x = x + m.pos_embd((B, H, W)).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
    x = x + m.drop_path(m.gamma_xca * m.xca(m.norm_xca(x)))
    x = m.mlp(m.norm(x.reshape(B, H, W, C)))
    if m.gamma is not None:
        x = m.gamma * x
    return m.drop_path(x.permute(0, 3, 1, 2))


def _next_mhsa(m, x, **_):
    B, C, H, W = x.shape
    out = m.norm1(x).reshape(B, C, -1).transpose(-1, -2)
    return m.mhsa_drop_path(m.e_mhsa(out)).transpose(-1, -2).reshape(B, C, H, W)


def _next_mhca(m, x, **_):
    # cat([x, out + mhca(out)]) with out = projection(x): x and out pass on (the shortcut), the
    # convolutional attention is added to the new channels (the residual)
    return torch.cat([torch.zeros_like(x), m.mhca_drop_path(m.mhca(m.projection(x)))], dim=1)


def _repvgg_dw(prefix=""):
    def branch(m, x, **_):
        tm = m.get_submodule(prefix + "token_mixer")
        return tm.conv(x) + tm.conv1(x)

    return branch


def _repvit_units(prefix=""):
    """RepViTBlock: ``bn(conv(x) + conv1(x) + x)`` (the token mixer, its BatchNorm after the sum),
    the squeeze-excite between, then ``x + channel_mixer(x)``. Fused, the token mixer is a plain
    convolution."""

    def unfused(m):
        return hasattr(m.get_submodule(prefix + "token_mixer"), "conv1")

    return [Unit([_repvgg_dw(prefix)], post=lambda m, y: m.get_submodule(prefix + "token_mixer.bn")(y),
                 label="token-mixer", when=unfused, otherwise=[prefix + "token_mixer"]),
            Unit([prefix + "channel_mixer"], label="channel-mixer", before=[prefix + "se"])]


def _repmixer(m, x, **_):
    tm = m.token_mixer
    return tm.layer_scale(tm.mixer(x) - tm.norm(x))


_LOCAL = ["dwconv", "norm", "pwconv1", "act", "pwconv2", "layer_scale", "drop_path"]

# ------------------------------------------------------------------------------------------
# EfficientViM: blocks return (x, h), h the state-space mixer's hidden state


class _EfficientViMBlock(Adapter):
    """Four units, each ``x + drop_path(alpha_i * (f_i(x) - x))``: ``dwconv1``, ``mixer`` (the
    HSM-SSD on ``norm(x)``), ``dwconv2``, ``ffn``; fused blocks apply the convolutions plainly.
    The block also returns the mixer's hidden state ``h``: the mixer unit hands it over, and
    where that unit is deleted or moved, ``h`` is the mixer's state at its input."""

    NAMES = ("dwconv1", "mixer", "dwconv2", "ffn")

    def parts(self, m):
        def unit(i, name):
            def residual(x, state=None, **_):
                alpha = torch.sigmoid(m.alpha).view(4, -1, 1, 1)
                if name == "mixer":
                    y, h = m.mixer(m.norm(x))
                    if state is not None:
                        state["h"] = h
                else:
                    y = getattr(m, name)(x)
                return m.drop_path(alpha[i] * (y - x))

            return UnitParts(residual=residual, label=name)

        return [unit(i, n) for i, n in enumerate(self.NAMES) if not (m.fused and n.startswith("dwconv"))]

    def route(self, m, call_unit, x):
        position, state = 0, {}
        for name in self.NAMES:
            if m.fused and name.startswith("dwconv"):
                x = getattr(m, name)(x)
                continue
            if name == "mixer":
                x_in = x
                x = call_unit(position, x, state=state)
                if "h" not in state:
                    state["h"] = m.mixer(m.norm(x_in))[1]
            else:
                x = call_unit(position, x)
            position += 1
        return x, state["h"]


# ------------------------------------------------------------------------------------------
# MViT v2: blocks take and return the feature size


def _pooled(size, op):
    """Spatial size after a pooling or convolution ``op`` (``None``: unchanged)."""
    if op is None:
        return list(size)

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    k, s, p = pair(op.kernel_size), pair(op.stride), pair(op.padding)
    return [(n + 2 * pp - kk) // ss + 1 for n, kk, ss, pp in zip(size, k, s, p)]


class _MViTBlock(Adapter):
    """MultiScaleBlock ``(x, feat_size) -> (x, feat_size_new)``: attention (its shortcut the
    pooled, possibly projected input), then MLP (its shortcut projected where the width changes).
    The attention's shortcut reads the feature size the block is called with; the route records
    it for that (one call at a time per block)."""

    def __init__(self):
        self.sizes = weakref.WeakKeyDictionary()

    def parts(self, m):
        def attention(x, feat_size=None, **_):
            return m.drop_path1(m.attn(m.norm1(x), feat_size)[0])

        def attention_shortcut(x):
            s = x if m.shortcut_proj_attn is None else m.shortcut_proj_attn(m.norm1(x))
            return m._shortcut_pool(s, self.sizes[m])

        def mlp(x, **_):
            return m.drop_path2(m.mlp(m.norm2(x)))

        projects = m.shortcut_proj_attn is not None or m.shortcut_pool_attn is not None
        return [UnitParts(residual=attention, shortcut=attention_shortcut if projects else None, label="attention"),
                UnitParts(residual=mlp, label="mlp", shortcut=None if m.shortcut_proj_mlp is None else
                          (lambda x: m.shortcut_proj_mlp(m.norm2(x))))]

    def route(self, m, call_unit, x, feat_size):
        self.sizes[m] = feat_size
        x = call_unit(0, x, feat_size=feat_size)
        return call_unit(1, x), _pooled(feat_size, m.attn.pool_q)


# ------------------------------------------------------------------------------------------
# DPN: a residual and a dense path in one block


def _dpn_project(m, x):
    if m.c1x1_w_s1 is not None:
        return m.c1x1_w_s1(x)
    return m.c1x1_w_s2(x) if m.c1x1_w_s2 is not None else x


def _dpn_shortcut(m, x):
    x_s = _dpn_project(m, x)
    return torch.cat([x_s, x_s.new_zeros((x_s.shape[0], m.inc, *x_s.shape[2:]))], dim=1)


def _dpn_residual(m, x, **_):
    proj = m.c1x1_w_s1 if m.c1x1_w_s1 is not None else m.c1x1_w_s2
    width = proj.conv.out_channels if proj is not None else x.shape[1]
    x = m.c1x1_c(m.c3x3_b(m.c1x1_a(x)))
    if m.c1x1_c1 is not None and m.c1x1_c2 is not None:
        out1, out2 = m.c1x1_c1(x), m.c1x1_c2(x)
    else:
        out1, out2 = x[:, :m.num_1x1_c], x[:, m.num_1x1_c:]
    gap = out1.new_zeros((out1.shape[0], width - m.num_1x1_c, *out1.shape[2:]))
    return torch.cat([out1, gap, out2], dim=1)


# ------------------------------------------------------------------------------------------
# TNT: two streams packed into one


class _TNTBlock(Adapter):
    """``(pixel_embed, patch_embed) -> (pixel_embed, patch_embed)``. Units act on both streams
    flattened and concatenated per example (``pack``), each residual writing zeros into the
    stream it does not update: inner attention and MLP (pixels), pixel-to-patch projection,
    outer attention and MLP (patches)."""

    LABELS = ("inner-attention", "inner-mlp", "pixel-to-patch", "attention", "mlp")

    @staticmethod
    def unpack(m, packed):
        c_in, c = m.norm_in.normalized_shape[0], m.norm_out.normalized_shape[0]
        pixels = m.proj.in_features if m.norm2_proj is None else m.norm1_proj.normalized_shape[0]
        B, L = packed.shape
        n = (L - c) // (pixels + c)  # patches, without the class token
        pix, pat = packed[:, : n * pixels], packed[:, n * pixels:]
        return pix.reshape(B * n, pixels // c_in, c_in), pat.reshape(B, n + 1, c)

    @staticmethod
    def pack(pix, pat):
        return torch.cat([pix.reshape(pat.shape[0], -1), pat.reshape(pat.shape[0], -1)], dim=1)

    def parts(self, m):
        def on(stream, fn):
            def residual(packed, **_):
                pix, pat = self.unpack(m, packed)
                if stream == "pixel":
                    return self.pack(fn(pix, pat), torch.zeros_like(pat))
                return self.pack(torch.zeros_like(pix), fn(pix, pat))

            return residual

        def proj(pix, pat):
            B, N, _ = pat.shape
            if m.norm2_proj is None:
                p = m.proj(m.norm1_proj(pix).reshape(B, N - 1, -1))
            else:
                p = m.norm2_proj(m.proj(m.norm1_proj(pix.reshape(B, N - 1, -1))))
            return torch.cat([torch.zeros_like(pat[:, 0:1]), p], dim=1)

        fns = [("pixel", lambda pix, pat: m.drop_path(m.attn_in(m.norm_in(pix)))),
               ("pixel", lambda pix, pat: m.drop_path(m.mlp_in(m.norm_mlp_in(pix)))),
               ("patch", proj),
               ("patch", lambda pix, pat: m.drop_path(m.attn_out(m.norm_out(pat)))),
               ("patch", lambda pix, pat: m.drop_path(m.mlp(m.norm_mlp(pat))))]
        return [UnitParts(residual=on(s, f), label=lab) for (s, f), lab in zip(fns, self.LABELS)]

    def route(self, m, call_unit, pixel_embed, patch_embed):
        packed = self.pack(pixel_embed, patch_embed)
        for i in range(len(self.LABELS)):
            packed = call_unit(i, packed)
        return self.unpack(m, packed)


# ------------------------------------------------------------------------------------------
# DLA: trees of level 1


def _dla_branch(block):
    if hasattr(block, "convs"):  # DlaBottle2neck
        return lambda x, **_: _res2net(block, x)
    if hasattr(block, "conv3"):  # DlaBottleneck
        def bottleneck(x, **_):
            x = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
            return block.bn3(block.conv3(x))

        return bottleneck
    return lambda x, **_: block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))  # DlaBasic


class _DlaTree(Adapter):
    """A level-1 ``DlaTree``: ``x1 = tree1(x, project(downsample(x)))``, ``x2 = tree2(x1)``,
    ``root([x2, x1, *children])``."""

    def parts(self, m):
        def shortcut(x):
            return m.project(m.downsample(x))

        projects = not (identity_like(m.project) and identity_like(m.downsample))
        return [UnitParts(residual=_dla_branch(m.tree1), shortcut=shortcut if projects else None, post=F.relu,
                          label="tree1"),
                UnitParts(residual=_dla_branch(m.tree2), post=F.relu, label="tree2")]

    def route(self, m, call_unit, x, shortcut=None, children=None):
        children = [] if children is None else children
        if m.level_root:
            children.append(m.downsample(x))
        x1 = call_unit(0, x)
        x2 = call_unit(1, x1)
        return m.root([x2, x1] + children)


LAYOUTS = [Layout("DLA tree of level 1", _DlaTree(), module_prefix="timm.models.dla",
                  attributes=("tree1", "tree2", "root", "project"), predicate=lambda m: m.root is not None)]

_M = "timm.models."
CLASSES = {
    _M + "edgenext.ConvBlock": Spec(Unit([_edgenext_conv],
                                         before=[lambda m, x, **_: m.conv_dw(x) if m.shortcut_after_dw else x])),
    _M + "edgenext.SplitTransposeBlock": Spec(Unit([_edgenext_split])),
    _M + "nextvit.NextConvBlock": Spec(Unit(["mhca", "attn_drop_path"], before=["patch_embed"], label="attention"),
                                       Unit(["norm", "mlp", "mlp_drop_path"], label="mlp")),
    _M + "nextvit.NextTransformerBlock": Spec(
        Unit([_next_mhsa], before=["patch_embed"], label="attention"),
        Unit([_next_mhca], shortcut=lambda m, x: torch.cat([x, m.projection(x)], dim=1), label="conv-attention"),
        Unit(["norm2", "mlp", "mlp_drop_path"], label="mlp")),
    _M + "repvit.RepViTBlock": Spec(*_repvit_units()),
    _M + "repvit.RepVitDownsample": Spec(*_repvit_units("pre_block."),
                                         Unit(["ffn"], label="ffn",
                                              before=["spatial_downsample", "channel_downsample"])),
    _M + "fastvit.RepMixerBlock": Spec(
        Unit([_repmixer], label="token-mixer", when=lambda m: m.token_mixer.reparam_conv is None,
             otherwise=["token_mixer"]),
        Unit(["mlp", "layer_scale", "drop_path"], label="mlp")),
    _M + "fastvit.AttentionBlock": two(["norm", "token_mixer", "layer_scale_1", "drop_path1"],
                                       ["mlp", "layer_scale_2", "drop_path2"]),
    _M + "fastvit.RepConditionalPosEnc": Spec(Unit(["pos_enc"], when=lambda m: m.reparam_conv is None,
                                                   otherwise=["reparam_conv"])),
    _M + "swiftformer.Block": Spec(Unit(["local_representation." + s for s in _LOCAL], label="local"),
                                   Unit(["attn", "layer_scale_1", "drop_path"], label="attention"),
                                   Unit(["linear", "layer_scale_2", "drop_path"], label="mlp")),
    _M + "efficientvim.EfficientViMBlock": _EfficientViMBlock(),
    _M + "efficientvim.PatchMerging": Spec(
        Unit(["dwconv1"], label="dwconv1", when=lambda m: not m.fused, otherwise=["dwconv1"]),
        Unit(["dwconv2"], label="dwconv2", before=["conv"], when=lambda m: not m.fused, otherwise=["dwconv2"])),
    _M + "mvitv2.MultiScaleBlock": _MViTBlock(),
    _M + "dpn.DualPathBlock": Spec(Unit([_dpn_residual], shortcut=_dpn_shortcut, projection=True)),
    _M + "tnt.Block": _TNTBlock(),
}
