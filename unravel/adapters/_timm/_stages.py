"""Built-in adapters for timm stages whose blocks' units would not form a chain on their own
(CSPNet's cross stages, CSPNeXt's layers, GC ViT's stages), matched by qualified class name
without importing timm; loaded on first use through :mod:`unravel.adapters`.

A cross stage splits its (expanded) input into two halves, runs residual blocks on one and
concatenates the other back after them. Found block by block, the blocks' units would not form a
chain: the bypassed half reaches the stage's output around them, so the path-length analyses
would miss it. Here the stage holds its blocks' units, each acting on the whole stream (both halves
in the order the stage concatenates them): the block's residual branch writes its half and zeros
into the other, its shortcut and ``post`` act on its half and pass the other unchanged. The sum is
the stage's concatenation, exactly, and the units form a chain through the stage. A block whose
skip is unused (CSPNeXt's ``add_identity=False``) runs on its half between units.

A GC ViT stage computes a global query from its input (a feature block of MBConv units and
poolings) and gives it to every transformer block beside ``x``. Here the stage holds all of
those units on one packed stream ``[x | query]`` (each tensor flattened per example): the feature
block's units update the query part, the transformer blocks' units update ``x`` and read the
query from the stream. The stage's downsample (an MBConv unit) comes first.

Each adapter mirrors its stage's forward (timm 1.0.31) in eval mode; ``benchmarks/coverage.py``
and ``tests/test_adapters_timm_more.py`` check it.
"""

from __future__ import annotations

import math
import weakref

import torch

from ...units.parts import UnitParts, inplace
from .. import Adapter, adapter_for


def _sliced(p: UnitParts, lo: int, hi: int, label: str) -> UnitParts:
    """Unit ``p`` of a block that acts on channels ``lo:hi`` of a wider stream."""

    def place(z, mid):
        return torch.cat([z[:, :lo], mid, z[:, hi:]], dim=1)

    def residual(z, **kw):
        r = p.residual(z[:, lo:hi], **kw)
        return torch.cat([torch.zeros_like(z[:, :lo]), r, torch.zeros_like(z[:, hi:])], dim=1)

    shortcut = None if p.shortcut is None else (lambda z: place(z, p.shortcut(z[:, lo:hi])))
    post = None
    if p.post is not None:
        copy = inplace(p.post)  # an in-place activation must not write into the stream it reads

        def post(y):
            part = y[:, lo:hi]
            return place(y, p.post(part.clone() if copy else part))

    label = label if p.label is None else f"{label}/{p.label}"
    return UnitParts(residual=residual, shortcut=shortcut, post=post, projection=p.projection, label=label)


class _SplitStage(Adapter):
    """A stage ``enter(x) -> [blocks on channels lo:hi] -> leave(stream)``."""

    def enter(self, m, x):  # pragma: no cover - interface
        raise NotImplementedError

    def leave(self, m, z):  # pragma: no cover - interface
        raise NotImplementedError

    def span(self, m) -> tuple[int, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def parts(self, m):
        lo, hi = self.span(m)
        out = []
        for i, block in enumerate(m.blocks):
            for p in adapter_for(block).parts(block) if _known(block) else []:
                out.append(_sliced(p, lo, hi, f"blocks.{i}"))
        return out

    def route(self, m, call_unit, x):
        lo, hi = self.span(m)
        z, position = self.enter(m, x), 0
        for block in m.blocks:
            n = len(adapter_for(block).parts(block)) if _known(block) else 0
            if n == 0:  # a plain layer on its half
                z = torch.cat([z[:, :lo], block(z[:, lo:hi]), z[:, hi:]], dim=1)
            for _ in range(n):
                z = call_unit(position, z)
                position += 1
        return self.leave(m, z)


def _known(block) -> bool:
    from .. import match

    return match(block)[0] is not None


class _CrossStage(_SplitStage):
    """cspnet.CrossStage: ``xs, xb = split(conv_exp(conv_down(x)))``; blocks on ``xb``;
    ``conv_transition(cat([xs, conv_transition_b(xb)]))``."""

    def span(self, m):
        return m.expand_chs // 2, m.expand_chs

    def enter(self, m, x):
        return m.conv_exp(m.conv_down(x))

    def leave(self, m, z):
        xs, xb = z.split(m.expand_chs // 2, dim=1)
        return m.conv_transition(torch.cat([xs, m.conv_transition_b(xb).contiguous()], dim=1))


class _CrossStage3(_SplitStage):
    """cspnet.CrossStage3: ``x1, x2 = split(conv_exp(conv_down(x)))``; blocks on ``x1``;
    ``conv_transition(cat([x1, x2]))``."""

    def span(self, m):
        return 0, m.expand_chs // 2

    def enter(self, m, x):
        return m.conv_exp(m.conv_down(x))

    def leave(self, m, z):
        return m.conv_transition(z)


class _CspNextLayer(_SplitStage):
    """cspnext.CspNextLayer: ``main = main_conv(x)``, ``short = short_conv(x)``; blocks on
    ``main``; ``final_conv(attention(cat([main, short])))``."""

    def span(self, m):
        return 0, m.main_conv.conv.out_channels

    def enter(self, m, x):
        short = m.short_conv(x)
        return torch.cat([m.main_conv(x), short], dim=1)

    def leave(self, m, z):
        return m.final_conv(m.attention(z))


# ------------------------------------------------------------------------------------------
# GC ViT: the global query travels in the stream


def _pack(*ts):
    return torch.cat([t.reshape(t.shape[0], -1) for t in ts], dim=1)


def _unpack(z, shapes):
    sizes = [math.prod(s) for s in shapes]
    return [t.reshape(z.shape[0], *s) for t, s in zip(z.split(sizes, dim=1), shapes)]


class _GcVitStage(Adapter):
    """GlobalContextVitStage: ``downsample`` (norm, MBConv unit, reduction, norm), then the
    feature block's units on the query part, ``global_norm``, then every block's units on the
    ``x`` part (each reading the query), ``norm``. The stream's layout (shapes of ``x`` and the
    query) is recorded by the route as it changes (one call at a time per stage)."""

    def __init__(self):
        self.shapes = weakref.WeakKeyDictionary()

    @staticmethod
    def _downsampling(m):
        return hasattr(m.downsample, "conv_block")

    def _wrap(self, m, p, part, label, query=False):
        def residual(z, **kw):
            parts = _unpack(z, self.shapes[m])
            extra = {"q_global": parts[1]} if query else {}
            r = p.residual(parts[part], **kw, **extra)
            return _pack(*[r if i == part else torch.zeros_like(t) for i, t in enumerate(parts)])

        if p.shortcut is not None or p.post is not None:  # pragma: no cover - timm's blocks have neither
            raise NotImplementedError(f"{label}: a shortcut or post inside a GC ViT stage")
        return UnitParts(residual=residual, label=label if p.label is None else f"{label}/{p.label}")

    def parts(self, m):
        out = []
        if self._downsampling(m):
            out += [UnitParts(residual=q.residual, shortcut=q.shortcut, post=q.post, label="downsample")
                    for q in adapter_for(m.downsample.conv_block).parts(m.downsample.conv_block)]
        for name, layer in m.global_block.blocks.named_children():
            if _known(layer):
                out += [self._wrap(m, q, 1, f"global.{name}") for q in adapter_for(layer).parts(layer)]
        for i, blk in enumerate(m.blocks):
            out += [self._wrap(m, q, 0, f"blocks.{i}", query=True) for q in adapter_for(blk).parts(blk)]
        return out

    def route(self, m, call_unit, x):
        position = 0
        if self._downsampling(m):
            ds = m.downsample
            x = call_unit(position, ds.norm1(x))
            x = ds.norm2(ds.reduction(x))
            position += 1
        else:
            x = m.downsample(x)
        x_cl, g = x.permute(0, 2, 3, 1), x
        self.shapes[m] = [x_cl.shape[1:], g.shape[1:]]
        z = _pack(x_cl, g)
        for layer in m.global_block.blocks:
            if _known(layer):
                z = call_unit(position, z)
                position += 1
            else:  # a pooling between the feature block's units
                x_cl, g = _unpack(z, self.shapes[m])
                g = layer(g)
                self.shapes[m] = [x_cl.shape[1:], g.shape[1:]]
                z = _pack(x_cl, g)
        x_cl, g = _unpack(z, self.shapes[m])
        q = m.global_norm(g.permute(0, 2, 3, 1))
        self.shapes[m] = [x_cl.shape[1:], q.shape[1:]]
        z = _pack(x_cl, q)
        for blk in m.blocks:
            for _ in adapter_for(blk).parts(blk):
                z = call_unit(position, z)
                position += 1
        x_cl = _unpack(z, self.shapes[m])[0]
        return m.norm(x_cl).permute(0, 3, 1, 2).contiguous()


_M = "timm.models."
CLASSES = {
    _M + "cspnet.CrossStage": _CrossStage(),
    _M + "cspnet.CrossStage3": _CrossStage3(),
    _M + "cspnext.CspNextLayer": _CspNextLayer(),
    _M + "gcvit.GlobalContextVitStage": _GcVitStage(),
}
