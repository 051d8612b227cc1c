"""The one block class of unravel's models, and the parameter-free shortcut of plain units.

A :class:`ResidualBlock` holds its parts as submodules named ``residual``, ``shortcut`` and
``post``, so its forward *is* ``post(shortcut(x) + residual(x))`` and its adapter is exact by
construction. It does not check that the parts' shapes agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..units.parts import UnitParts
from ..errors import ArgumentError

__all__ = ["ResidualBlock", "PadShortcut", "SqueezeExcite"]


class PadShortcut(nn.Module):
    """Parameter-free shortcut: subsample the spatial dimensions and zero-pad the channels.

    He et al.'s option A [1]_. Used as the bypass of plain units whose shape changes.

    References
    ----------
    .. [1] K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition."
       CVPR 2016.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ArgumentError(f"PadShortcut cannot shrink channels ({in_channels} -> {out_channels}).")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        if self.stride > 1:
            index = (slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.dim() - 2)
            x = x[index]
        extra = self.out_channels - self.in_channels
        if extra:
            x = torch.cat([x, x.new_zeros((x.shape[0], extra) + tuple(x.shape[2:]))], dim=1)
        return x

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018) for 1-D or 2-D feature maps."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        s = x.flatten(2).mean(-1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.view(s.shape + (1,) * (x.dim() - 2))


class ResidualBlock(nn.Module):
    """``y = post(shortcut(x) + residual(x))``, or one of its two relatives (``kind``).

    Parameters
    ----------
    residual : nn.Module
        The residual branch (for ``kind="dense"``: the layer ``h`` whose output is concatenated).
    shortcut : nn.Module or None
        None is the identity. For ``kind="plain"`` it is not used in the forward: it is the
        bypass a deletion puts in the unit's place.
    post : nn.Module or None
        Applied after the sum; None is the identity.
    kind : {"residual", "plain", "dense"}

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> block = ResidualBlock(nn.Linear(3, 3), post=nn.ReLU())
    >>> x = torch.randn(2, 3)
    >>> torch.equal(block(x), torch.relu(x + block.residual(x)))
    True
    """

    def __init__(self, residual: nn.Module, shortcut: nn.Module | None = None,
                 post: nn.Module | None = None, kind: str = "residual"):
        super().__init__()
        if kind not in ("residual", "plain", "dense"):
            raise ArgumentError(f"kind={kind!r}; allowed: 'residual', 'plain', 'dense'.")
        self.residual = residual
        self.shortcut = shortcut
        self.post = post
        self.kind = kind

    def forward(self, x):
        if self.kind == "dense":
            return self._concat(x)
        out = self.residual(x)
        if self.kind == "residual":
            out = (x if self.shortcut is None else self.shortcut(x)) + out
        return out if self.post is None else self.post(out)

    def _concat(self, x):
        # kept apart from forward so the unit's own computation survives a routed forward
        return torch.cat([x, self.residual(x)], dim=1)

    def unit_parts(self) -> UnitParts:
        if self.kind != "dense":
            return UnitParts(residual=self.residual, shortcut=self.shortcut, post=self.post, kind=self.kind)
        h = self.residual

        # concat(x, h(x)) = [x; 0] + [0; h(x)]: a unit whose shortcut pads and whose residual
        # branch writes only the new channels.
        def residual(x):
            out = h(x)
            return torch.cat([out.new_zeros(x.shape), out], dim=1)

        def shortcut(x):
            extra = h.out_channels
            return torch.cat([x, x.new_zeros((x.shape[0], extra) + tuple(x.shape[2:]))], dim=1)

        return UnitParts(residual=residual, shortcut=shortcut, projection=True, kind="dense",
                         forward=self._concat)

    def extra_repr(self):
        return f"kind={self.kind!r}"
