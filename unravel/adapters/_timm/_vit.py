"""Built-in adapters for timm's transformer-style blocks beyond ViT and Swin, matched by qualified
class name without importing timm; loaded on first use through :mod:`unravel.adapters`.

Most of these blocks share one layout, ``x = x + drop_path(ls(attn(norm1(x))))`` then
``x = x + drop_path(ls(mlp(norm2(x))))``, with their own attribute names, layer scales and extra
forward arguments; each is written as a :class:`~unravel.adapters._timm._spec.Spec` of two units,
``"attention"`` then ``"mlp"``, whose steps are the block's attributes in the order its forward
applies them (so every norm, layer scale and ``drop_path`` sits in the residual branch, and
``post`` is the identity unless the block normalises after the sum). Extra forward arguments
(BEiT's ``shared_rel_pos_bias``, EVA's ``rope``/``attn_mask``/``is_causal``, PVT and Twins'
sizes, XCiT's ``H, W``, GC ViT's global query) go to the units that read them.

Each adapter mirrors its block's forward (timm 1.0.31) in eval mode; ``benchmarks/coverage.py``
and ``tests/test_adapters_timm_more.py`` check that routing reproduces the blocks' outputs.

Blocks that read a second stream are left out (they run as code between units): CaiT's
class-attention blocks (``LayerScaleBlockClassAttn``, given the patch tokens besides the class
token), CoaT's ``ParallelBlock`` (four scales at once).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ._spec import Spec, Unit, two

# ------------------------------------------------------------------------------------------
# Helpers


def _module(m):
    """The timm module that defines ``m``'s class (for its window helpers), already imported."""
    from .. import original_class

    return sys.modules[original_class(m).__module__]


def _cat_zeros(r, x):
    """``r`` (the class token's update) followed by zeros for the other tokens of ``x``."""
    return torch.cat([r, torch.zeros_like(x[:, r.shape[1]:])], dim=1)


# ------------------------------------------------------------------------------------------
# Two units, pre-norm: the layout shared by most


def _pre(attn="attn", *, ls=("ls1", "ls2"), dp=("drop_path1", "drop_path2"), norms=("norm1", "norm2"),
         mlp="mlp", args=(), mlp_args=()):
    attn_step = (attn, *args) if args else attn
    mlp_step = (mlp, *mlp_args) if mlp_args else mlp
    return Spec(Unit([norms[0], attn_step, ls[0], dp[0]], label="attention", args=args),
                Unit([norms[1], mlp_step, ls[1], dp[1]], label="mlp", args=mlp_args))


def _post_norm(args=()):
    """Res-post-norm (EVA ``EvaBlockPostNorm``, ``ResPostRelPosBlock``): the norm closes the branch."""
    return two([("attn", *args), "norm1", "drop_path1"], ["mlp", "norm2", "drop_path2"], args=args)


_GAMMA = dict(ls=("gamma_1", "gamma_2"))
_ONE_DP = dict(dp=("drop_path", "drop_path"))

# ------------------------------------------------------------------------------------------
# Blocks with more to them


def _sam_attention(m, x, **_):
    # vision_transformer_sam.Block on (B, H, W, C): windowed attention, padding undone
    mod, (H, W) = _module(m), x.shape[1:3]
    x = m.norm1(x)
    pad_hw = None
    if m.window_size > 0:
        x, pad_hw = mod.window_partition(x, m.window_size)
    x = m.drop_path1(m.ls1(m.attn(x)))
    if m.window_size > 0:
        x = mod.window_unpartition(x, m.window_size, (H, W), pad_hw)
    return x


def _tokens(steps):
    """A branch run on ``(B, H, W, C)`` flattened to ``(B, H * W, C)``, as blocks run their MLP."""
    from ._spec import run

    def branch(m, x, **args):
        B, H, W = x.shape[:3]
        return run(m, steps, x.reshape(B, H * W, -1), args).reshape(B, H, W, -1)

    return branch


def _xcit_cls_attention(m, x, **_):
    n = m.norm1(x)
    return m.drop_path1(m.gamma1 * torch.cat([m.attn(n), n[:, 1:]], dim=1))


def _xcit_cls_norm(m, y):
    return m.norm2(y) if m.tokens_norm else torch.cat([m.norm2(y[:, 0:1]), y[:, 1:]], dim=1)


def _xcit_cls_mlp(m, x, **_):
    return m.drop_path2(torch.cat([m.gamma2 * m.mlp(x[:, 0:1]), x[:, 1:]], dim=1))


def _volo_cls_attention(m, x, **_):
    return _cat_zeros(m.drop_path1(m.attn(m.norm1(x))), x)


def _volo_cls_mlp(m, x, **_):
    return _cat_zeros(m.drop_path2(m.mlp(m.norm2(x[:, :1]))), x)


def _hiera_shortcut(m, x):
    # HieraBlock at a stage change: the shortcut is the pooled projection of norm1(x)
    if m.proj is not None:
        x = m.proj(m.norm1(x))
        return x.view(x.shape[0], m.attn.q_stride, -1, x.shape[-1]).amax(dim=1)
    v = x.view(x.shape[0], m.attn.q_stride, -1, x.shape[-1])
    return torch.cat([v.amax(dim=1), v.mean(dim=1)], dim=-1)


def _sam2_shortcut(m, x):
    x = m.proj(m.norm1(x))
    if m.pool is not None:
        x = m.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x


def _sam2_attention(m, x, **_):
    # hieradet_sam2.MultiScaleBlock: windowed attention with query pooling at a stage change
    mod = _module(m)
    H, W = x.shape[1:3]
    Hs, Ws = H, W
    if m.dim != m.dim_out and m.pool is not None:  # the shortcut's size: MaxPool2d(q_stride)
        Hs, Ws = H // m.q_stride[0], W // m.q_stride[1]
    x = m.norm1(x)
    window_size = m.window_size
    Hp, Wp = H, W
    if m.is_windowed:
        Hp, Wp, pad_h, pad_w = mod._calc_pad(H, W, window_size)
        x = mod.window_partition(F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), window_size)
    x = m.attn(x)
    H, W = Hs, Ws
    if m.q_stride is not None:
        window_size = (m.window_size[0] // m.q_stride[0], m.window_size[1] // m.q_stride[1])
        Hp, Wp, _, _ = mod._calc_pad(H, W, window_size)
    if m.is_windowed:
        x = mod.window_unpartition(x, window_size, (Hp, Wp))[:, :H, :W, :].contiguous()
    return m.drop_path1(m.ls1(x))


def _tiny_vit_attention(m, x, **_):
    # TinyVitBlock on (B, H, W, C): attention over (padded) windows; its norm is in m.attn
    B, H, W, C = x.shape
    ws = m.window_size
    if H == ws and W == ws:
        return m.drop_path1(m.attn(x.reshape(B, H * W, C)).view(B, H, W, C))
    pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
    if pad_b > 0 or pad_r > 0:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    pH, pW = H + pad_b, W + pad_r
    nH, nW = pH // ws, pW // ws
    x = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws * ws, C)
    x = m.attn(x).view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
    if pad_b > 0 or pad_r > 0:
        x = x[:, :H, :W].contiguous()
    return m.drop_path1(x)


def _tiny_vit_local_conv(m, x, **_):
    # between the units: (B, H, W, C) -> local_conv -> tokens (B, L, C)
    B, H, W, C = x.shape
    return m.local_conv(x.permute(0, 3, 1, 2)).reshape(B, C, H * W).transpose(1, 2)


class _TinyVit(Spec):
    """TinyVitBlock: attention on (B, H, W, C); the local conv between the units turns it into
    tokens; the MLP unit runs on tokens; the block returns (B, H, W, C)."""

    def __init__(self):
        super().__init__(Unit([_tiny_vit_attention], label="attention"), Unit(["mlp", "drop_path2"], label="mlp"))

    def route(self, m, call_unit, x):
        shape = x.shape
        x = call_unit(0, x)
        x = call_unit(1, _tiny_vit_local_conv(m, x))
        return x.view(shape)


def _swin_cr_mlp(m, x, **_):
    B, H, W, C = x.shape
    return m.drop_path2(m.norm2(m.mlp(x.reshape(B, -1, C)))).reshape(B, H, W, C)


def _davit_tokens(steps):
    """DaViT runs its attention and MLP on tokens (B, N, C) between (B, C, H, W) position encodings."""
    from ._spec import run

    def branch(m, x, **args):
        B, C, H, W = x.shape
        t = run(m, steps, x.flatten(2).transpose(1, 2), args)
        return t.transpose(1, 2).view(B, C, H, W)

    return branch


def _davit_window_attention(m, x, **_):
    # SpatialBlock's window attention on tokens, from (B, C, H, W)
    mod = _module(m)
    B, C, H, W = x.shape
    x = m.norm1(x.flatten(2).transpose(1, 2)).view(B, H, W, C)
    ws = m.window_size
    pad_r, pad_b = (ws[1] - W % ws[1]) % ws[1], (ws[0] - H % ws[0]) % ws[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, Hp, Wp, _ = x.shape
    windows = mod.window_partition(x, ws).view(-1, ws[0] * ws[1], C)
    x = mod.window_reverse(m.attn(windows).view(-1, ws[0], ws[1], C), ws, Hp, Wp)
    x = x[:, :H, :W, :].contiguous().view(B, H * W, C)
    return m.drop_path1(x).transpose(1, 2).view(B, C, H, W)


def _cpe(name):
    """DaViT's ConvPosEnc: ``x + act(proj(x))``, a unit of its own."""
    return Unit([f"{name}.proj", f"{name}.act"], label=name)


def _davit(attention):
    return Spec(_cpe("cpe1"), Unit([attention], label="attention"), _cpe("cpe2"),
                Unit([_davit_tokens(["norm2", "mlp", "drop_path2"])], label="mlp", when=lambda m: m.mlp is not None))


def _coat_cpe(m, x, size=None, **_):
    # ConvPosEnc: the class token is kept, image tokens get proj(feat) added
    B, N, C = x.shape
    H, W = size
    feat = x[:, 1:].transpose(1, 2).view(B, C, H, W)
    return torch.cat([torch.zeros_like(x[:, :1]), m.cpe.proj(feat).flatten(2).transpose(1, 2)], dim=1)


def _csat_attention(m, x, **_):
    # csatv2.TransformerBlock: attention on (pooled) tokens with a convolutional position encoding
    x = m.pool2(x) if m.downsample else x
    B, C, H, W = x.shape
    t = m.pos_embed(m.norm1(x.flatten(2).transpose(1, 2)), (H, W))
    return m.drop_path1(m.ls1(m.attn(t)).transpose(1, 2).reshape(B, -1, H, W))


def _nchw_tokens(steps):
    """A branch run on tokens (B, H * W, C) of a (B, C, H, W) map."""
    from ._spec import run

    def branch(m, x, **args):
        B, C, H, W = x.shape
        return run(m, steps, x.flatten(2).transpose(1, 2), args).transpose(1, 2).reshape(B, C, H, W)

    return branch


def _twins_pos_conv(m, x, size=None, **_):
    B, N, C = x.shape
    return m.proj(x.transpose(1, 2).view(B, C, *size)).flatten(2).transpose(1, 2)


_M = "timm.models."
CLASSES = {
    _M + "beit.Block": _pre(args=("shared_rel_pos_bias",), **_GAMMA),
    _M + "cait.LayerScaleBlock": _pre(**_GAMMA, **_ONE_DP),
    _M + "convit.Block": _pre(ls=(None, None), **_ONE_DP),
    _M + "deepseek_vit.DeepseekVitBlock": _pre(args=("rope",), ls=(None, None)),
    _M + "eva.EvaBlock": _pre(args=("rope", "attn_mask", "is_causal"), **_GAMMA),
    _M + "eva.EvaBlockPostNorm": _post_norm(args=("rope", "attn_mask", "is_causal")),
    _M + "gemma4_vit.Gemma4Block": two(["norm1", ("attn", "rope_cos", "rope_sin", "attn_mask"), "norm2", "drop_path"],
                                       ["norm3", "mlp", "norm4", "drop_path"],
                                       args=("rope_cos", "rope_sin", "attn_mask")),
    _M + "nest.TransformerLayer": _pre(ls=(None, None)),
    _M + "pvt_v2.Block": _pre(ls=(None, None), args=("feat_size",), mlp_args=("feat_size",)),
    _M + "twins.Block": _pre(ls=(None, None), args=("size",)),
    _M + "twins.PosConv": Spec(Unit([_twins_pos_conv], args=("size",), when=lambda m: m.stride == 1)),
    _M + "visformer.Block": Spec(Unit(["norm1", "attn", "drop_path"], label="attention",
                                      when=lambda m: m.attn is not None),
                                 Unit(["norm2", "mlp", "drop_path"], label="mlp")),
    _M + "vision_transformer_relpos.RelPosBlock": _pre(args=("shared_rel_pos",)),
    _M + "vision_transformer_relpos.ResPostRelPosBlock": _post_norm(args=("shared_rel_pos",)),
    _M + "vision_transformer_sam.Block": two([_sam_attention], [_tokens(["norm2", "mlp", "ls2", "drop_path2"])]),
    _M + "volo.Outlooker": _pre(ls=(None, None)),
    _M + "volo.Transformer": _pre(ls=(None, None)),
    _M + "volo.ClassBlock": two([_volo_cls_attention], [_volo_cls_mlp]),
    _M + "xcit.XCABlock": Spec(Unit(["norm1", "attn", "gamma1", "drop_path1"], label="attention"),
                               Unit(["norm3", ("local_mp", "H", "W"), "gamma3", "drop_path3"], label="local",
                                    args=("H", "W")),
                               Unit(["norm2", "mlp", "gamma2", "drop_path2"], label="mlp")),
    _M + "xcit.ClassAttentionBlock": Spec(Unit([_xcit_cls_attention], post=_xcit_cls_norm, label="attention"),
                                          Unit([_xcit_cls_mlp], label="mlp")),
    _M + "sequencer.Sequencer2dBlock": _pre("rnn_tokens", mlp="mlp_channels", ls=(None, None), **_ONE_DP),
    _M + "levit.LevitBlock": _pre(norms=(None, None), ls=(None, None)),
    _M + "levit.LevitDownsample": Spec(Unit(["mlp", "drop_path"], before=["attn_downsample"])),
    _M + "efficientformer.MetaBlock1d": _pre("token_mixer"),
    _M + "efficientformer.MetaBlock2d": _pre("token_mixer", norms=(None, None)),
    _M + "efficientformer_v2.EfficientFormerV2Block": Spec(
        Unit(["token_mixer", "ls1", "drop_path1"], label="attention", when=lambda m: m.token_mixer is not None),
        Unit(["mlp", "ls2", "drop_path2"], label="mlp")),
    _M + "metaformer.MetaFormerBlock": Spec(
        Unit(["norm1", "token_mixer", "drop_path1", "layer_scale1"], shortcut="res_scale1", label="attention"),
        Unit(["norm2", "mlp", "drop_path2", "layer_scale2"], shortcut="res_scale2", label="mlp")),
    _M + "focalnet.FocalNetBlock": two(["norm1", "modulation", "norm1_post", "ls1", "drop_path1"],
                                       ["norm2", "mlp", "norm2_post", "ls2", "drop_path2"]),
    _M + "gcvit.GlobalContextVitBlock": _pre("_window_attn", args=("q_global",)),
    _M + "maxxvit.PartitionAttentionCl": _pre("_partition_attn"),
    _M + "maxxvit.PartitionAttention2d": _pre("_partition_attn"),
    _M + "maxxvit.ParallelPartitionAttention": _pre("_partition_attn"),
    _M + "maxxvit.TransformerBlock2d": Spec(
        Unit(["norm1", ("attn", "shared_rel_pos"), "ls1", "drop_path1"], shortcut="shortcut", label="attention",
             args=("shared_rel_pos",)),
        Unit(["norm2", "mlp", "ls2", "drop_path2"], label="mlp")),
    _M + "hiera.HieraBlock": Spec(
        Unit(["norm1", "attn", "ls1", "drop_path1"], label="attention", shortcut=_hiera_shortcut,
             shortcut_when=lambda m: m.do_expand),
        Unit(["norm2", "mlp", "ls2", "drop_path2"], label="mlp")),
    _M + "hieradet_sam2.MultiScaleBlock": Spec(
        Unit([_sam2_attention], label="attention", shortcut=_sam2_shortcut, shortcut_when=lambda m: m.dim != m.dim_out),
        Unit(["norm2", "mlp", "ls2", "drop_path2"], label="mlp")),
    _M + "tiny_vit.TinyVitBlock": _TinyVit(),
    _M + "swin_transformer_v2_cr.SwinTransformerV2CrBlock": Spec(
        Unit(["_shifted_window_attn", "norm1", "drop_path1"], label="attention"),
        Unit([_swin_cr_mlp], label="mlp", post=lambda m, y: m.norm3(y))),
    _M + "davit.SpatialBlock": _davit(_davit_window_attention),
    _M + "davit.ChannelBlock": _davit(_davit_tokens(["norm1", "attn", "drop_path1"])),
    _M + "coat.SerialBlock": Spec(Unit([_coat_cpe], label="cpe", args=("size",)),
                                  Unit(["norm1", ("factoratt_crpe", "size"), "drop_path"], label="attention",
                                       args=("size",)),
                                  Unit(["norm2", "mlp", "drop_path"], label="mlp")),
    _M + "csatv2.TransformerBlock": Spec(
        Unit([_csat_attention], label="attention", shortcut=lambda m, x: m.proj(m.pool1(x)),
             shortcut_when=lambda m: m.downsample),
        Unit([_nchw_tokens(["norm2", "mlp", "ls2"]), "drop_path2"], label="mlp")),
}
