"""What a removed unit leaves behind in a pruned model: :class:`Bypass` (``post(shortcut(x))``
as modules), :class:`BypassChain`, :class:`ZeroChannels` (a removed DenseNet layer) and
:class:`ZeroBranch` (a removed sublayer of a transformers layer). It does not check that a
unit's shortcut and ``post`` are modules (:func:`unravel.prune.remove` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError
from ..units import ResidualUnit, inplace

__all__ = ["Bypass", "BypassChain", "ZeroChannels", "ZeroBranch"]


class Bypass(nn.Module):
    """What a removed unit computes: ``post(shortcut(x))`` (``None`` is the identity).

    Extra arguments (attention masks and the like, which the removed block took) are ignored.
    An in-place ``post`` after an identity shortcut runs on a copy, as in a lesion, so the input is
    never overwritten.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> b = Bypass(post=nn.ReLU())
    >>> b(torch.tensor([-1.0, 2.0]), attention_mask=None)
    tensor([0., 2.])
    """

    def __init__(self, shortcut: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.shortcut = shortcut
        self.post = post

    def forward(self, x, *args, **kwargs):
        s = x if self.shortcut is None else self.shortcut(x)
        if self.post is None:
            return s
        if s is x and inplace(self.post):
            s = s.clone()
        return self.post(s)


class BypassChain(nn.Sequential):
    """The bypasses of a block's removed units in forward order (extra arguments ignored)."""

    def forward(self, x, *args, **kwargs):
        for m in self:
            x = m(x)
        return x


class ZeroChannels(nn.Module):
    """``concat(x, zeros)`` along dim 1: a removed DenseNet layer adds ``channels`` zero channels.

    Examples
    --------
    >>> import torch
    >>> ZeroChannels(2)(torch.ones(1, 1, 3)).shape
    torch.Size([1, 3, 3])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)

    def forward(self, x):
        return torch.cat([x, x.new_zeros((x.shape[0], self.channels) + tuple(x.shape[2:]))], dim=1)

    def extra_repr(self):
        return str(self.channels)


class ZeroBranch(nn.Module):
    """Stands in a ``transformers`` layer for a removed sublayer (attention or MLP): it returns a
    zero, so the layer's sum ``x + branch`` is ``x`` bit for bit.

    Parameters
    ----------
    outputs : int or None
        ``None``: the sublayer returned a tensor, the zero is returned; ``n``: it returned a tuple
        that the layer unpacks, an n-tuple is returned with the zero at ``index`` and ``None``
        elsewhere.
    index : int
    data : int or str
        Where the call passes its hidden states (a positional index or a keyword): the zero is
        a 0-dim tensor of their dtype and device (the sum broadcasts it).
    passthrough : bool
        For a module whose output only fed removed modules: return the hidden states unchanged.
    """

    def __init__(self, outputs: int | None = None, index: int = 0, data: int | str = 0, passthrough: bool = False):
        super().__init__()
        self.outputs, self.index, self.data, self.passthrough = outputs, index, data, passthrough

    def forward(self, *args, **kwargs):
        x = args[self.data] if isinstance(self.data, int) else kwargs[self.data]
        if self.passthrough:
            return x
        zero = x.new_zeros(())
        if self.outputs is None:
            return zero
        return tuple(zero if i == self.index else None for i in range(self.outputs))

    def extra_repr(self):
        return "passthrough" if self.passthrough else f"outputs={self.outputs}, index={self.index}"


def _as_module(fn, unit: ResidualUnit, what: str):
    """A unit's shortcut or post as a module a pruned model can hold."""
    if fn is None or isinstance(fn, nn.Module):
        return fn
    if fn in (F.relu, torch.relu):
        return nn.ReLU()
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(fn, "__name__", None) == "forward":
        return owner
    raise UnsupportedModelError(
        f"cannot remove unit {unit.index} ({unit.name}) physically: its {what} is a function ({fn!r}), not a "
        "module, so no smaller model can hold what its deletion leaves. Use unravel.lesion.delete, or an "
        f"adapter for {type(unit.module).__name__} whose {what} is a module.")


def _bypass(unit: ResidualUnit) -> nn.Module | None:
    """The module computing ``unit``'s bypass; ``None`` where it is the identity."""
    if unit.kind == "dense":
        from ..models import ResidualBlock

        h = getattr(unit.module, "residual", None)
        if not isinstance(unit.module, ResidualBlock) or not isinstance(getattr(h, "out_channels", None), int):
            raise UnsupportedModelError(f"cannot remove dense unit {unit.index} ({unit.name}) physically: only "
                                        "unravel's DenseNet layers say how many channels they add. Use "
                                        "unravel.lesion.delete.")
        return ZeroChannels(h.out_channels)
    shortcut = _as_module(unit.parts.shortcut, unit, "shortcut")
    post = _as_module(unit.parts.post, unit, "post")
    if shortcut is None and post is None:
        return None
    return Bypass(shortcut, post)


def _is_identity(unit: ResidualUnit) -> bool:
    return unit.kind != "dense" and unit.parts.shortcut is None and unit.parts.post is None
