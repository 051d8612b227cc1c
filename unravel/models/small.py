"""Small models for vector data and MNIST-1D: residual and plain MLPs, a 1-D convolutional ResNet.

Small enough to train in seconds on a CPU, so that tests and quick studies use real training.
They do not check the input's shape.
"""

from __future__ import annotations

from torch import nn

from ._blocks import PadShortcut, ResidualBlock
from .cifar import _check_positive
from ..errors import ArgumentError

__all__ = ["MLP", "resmlp", "plain_mlp", "ResNet1d", "resnet1d", "plain1d"]


class MLP(nn.Module):
    """``Linear`` stem, a chain of units of width ``width``, ``Linear`` head."""

    def __init__(self, in_features: int, num_classes: int, width: int = 64, depth: int = 4, plain: bool = False):
        super().__init__()
        _check_positive(in_features=in_features, num_classes=num_classes, width=width, depth=depth)
        self.stem = nn.Linear(in_features, width)
        # pre-activation units: LayerNorm inside the branch, nothing after the sum
        self.blocks = nn.Sequential(*[
            ResidualBlock(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(),
                                        nn.Linear(width, width)),
                          kind="plain" if plain else "residual")
            for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x.flatten(1))))


def resmlp(in_features: int, num_classes: int, width: int = 64, depth: int = 4) -> MLP:
    """Residual MLP of ``depth`` pre-activation units ``x + W2 relu(W1 LN(x))``.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(40, 10, width=32, depth=6)
    >>> net(torch.randn(3, 40)).shape, len(unravel.find_units(net))
    (torch.Size([3, 10]), 6)
    """
    return MLP(in_features, num_classes, width, depth, plain=False)


def plain_mlp(in_features: int, num_classes: int, width: int = 64, depth: int = 4) -> MLP:
    """:func:`resmlp` without the shortcuts (units of ``kind="plain"``, same layers).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.plain_mlp(40, 10, width=32, depth=6)
    >>> [u.kind for u in unravel.find_units(net)][:2]
    ['plain', 'plain']
    """
    return MLP(in_features, num_classes, width, depth, plain=True)


class ResNet1d(nn.Module):
    """A 1-D convolutional ResNet for sequences such as MNIST-1D (length 40)."""

    def __init__(self, blocks=(2, 2, 2), width: int = 32, num_classes: int = 10, in_channels: int = 1,
                 plain: bool = False):
        super().__init__()
        _check_positive(width=width, num_classes=num_classes, in_channels=in_channels)
        if not blocks or any(not isinstance(b, int) or b < 1 for b in blocks):
            raise ArgumentError(f"blocks={blocks!r}: a non-empty sequence of positive integers (units per stage).")
        self.stem = nn.Sequential(nn.Conv1d(in_channels, width, 5, padding=2, bias=False),
                                  nn.BatchNorm1d(width), nn.ReLU())
        cin = width
        stages = []
        for s, n in enumerate(blocks):
            cout = width * 2 ** s
            units = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                residual = nn.Sequential(
                    nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm1d(cout), nn.ReLU(),
                    nn.Conv1d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm1d(cout))
                changes = stride != 1 or cin != cout
                if plain:
                    shortcut = PadShortcut(cin, cout, stride) if changes else None
                elif changes:
                    shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))
                else:
                    shortcut = None
                units.append(ResidualBlock(residual, shortcut, nn.ReLU(), kind="plain" if plain else "residual"))
                cin = cout
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        if x.dim() == 2:  # (batch, length) -> one channel
            x = x.unsqueeze(1)
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet1d(blocks=(2, 2, 2), width: int = 32, num_classes: int = 10, in_channels: int = 1) -> ResNet1d:
    """1-D convolutional ResNet; ``blocks`` gives the units per stage (widths double per stage).

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet1d()
    >>> net(torch.randn(2, 40)).shape, len(unravel.find_units(net))
    (torch.Size([2, 10]), 6)
    """
    return ResNet1d(blocks, width, num_classes, in_channels, plain=False)


def plain1d(blocks=(2, 2, 2), width: int = 32, num_classes: int = 10, in_channels: int = 1) -> ResNet1d:
    """:func:`resnet1d` without shortcuts (plain units, the same layers).

    Examples
    --------
    >>> import unravel
    >>> len(unravel.find_units(unravel.models.plain1d()))
    6
    """
    return ResNet1d(blocks, width, num_classes, in_channels, plain=True)
