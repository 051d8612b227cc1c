"""Built-in adapters for timm stages that split their input between residual blocks and a bypass
(CSPNet's cross stages, CSPNeXt's layers), matched by qualified class name without importing
timm; loaded on first use through :mod:`unravel.adapters`.

A cross stage splits its (expanded) input into two halves, runs residual blocks on one and
concatenates the other back after them. Found block by block, the blocks' units would not form a
chain: the bypassed half reaches the stage's output around them, so the path-length analyses
would miss it. Here the stage holds its blocks' units, each acting on the whole stream (both halves
in the order the stage concatenates them): the block's residual branch writes its half and zeros
into the other, its shortcut and ``post`` act on its half and pass the other unchanged. The sum is
the stage's concatenation, exactly, and the units form a chain through the stage. A block whose
skip is unused (CSPNeXt's ``add_identity=False``) runs on its half between units.

Each adapter mirrors its stage's forward (timm 1.0.31) in eval mode; ``benchmarks/coverage.py``
and ``tests/test_adapters_timm_more.py`` check it.
"""

from __future__ import annotations

import torch

from ..units import UnitParts, _inplace
from . import Adapter, adapter_for


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
        copy = _inplace(p.post)  # an in-place activation must not write into the stream it reads

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
    from . import match

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


_M = "timm.models."
CLASSES = {
    _M + "cspnet.CrossStage": _CrossStage(),
    _M + "cspnet.CrossStage3": _CrossStage3(),
    _M + "cspnext.CspNextLayer": _CspNextLayer(),
}
