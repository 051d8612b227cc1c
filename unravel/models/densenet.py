"""DenseNet-BC (Huang et al., CVPR 2017) for CIFAR-sized images.

Three dense blocks of bottleneck layers (BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)), joined by
transitions that compress channels by ``compression`` and halve the resolution. Each layer is a
unit of ``kind="dense"``: its output is concatenated to its input.
"""

from __future__ import annotations

from torch import nn

from ._blocks import ResidualBlock
from .cifar import _check_positive, layers_for
from ..errors import ArgumentError

__all__ = ["DenseNet", "DenseLayer", "densenet_bc"]


class DenseLayer(nn.Sequential):
    """The bottleneck layer ``h``: its output (``growth`` channels) joins the block's state."""

    def __init__(self, cin: int, growth: int, dims: int = 2):
        conv, bn = layers_for(dims)[:2]
        super().__init__(bn(cin), nn.ReLU(), conv(cin, 4 * growth, 1, bias=False),
                         bn(4 * growth), nn.ReLU(), conv(4 * growth, growth, 3, padding=1, bias=False))
        self.out_channels = growth


class DenseNet(nn.Module):
    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10, in_channels: int = 3,
                 compression: float = 0.5, dims: int = 2):
        super().__init__()
        conv, bn, pool, avg = layers_for(dims)
        self.dims = dims
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ArgumentError(f"depth={depth!r}: DenseNet-BC has depth 6n+4 with n >= 1 (10, 22, 40, 100, ...).")
        _check_positive(growth=growth, num_classes=num_classes, in_channels=in_channels)
        if not 0 < compression <= 1:
            raise ArgumentError(f"compression={compression!r}: must lie in (0, 1].")
        n = (depth - 4) // 6
        c = 2 * growth
        self.stem = conv(in_channels, c, 3, padding=1, bias=False)
        for b in range(1, 4):
            layers = []
            for _ in range(n):
                layers.append(ResidualBlock(DenseLayer(c, growth, dims), kind="dense"))
                c += growth
            self.add_module(f"block{b}", nn.Sequential(*layers))
            if b < 3:
                out = int(c * compression)
                self.add_module(f"transition{b}", nn.Sequential(
                    bn(c), nn.ReLU(), conv(c, out, 1, bias=False), avg(2)))
                c = out
        self.final = nn.Sequential(bn(c), nn.ReLU(), pool(1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        if self.dims == 1 and x.dim() == 2:
            x = x.unsqueeze(1)
        x = self.block1(self.stem(x))
        x = self.block2(self.transition1(x))
        x = self.block3(self.transition2(x))
        return self.fc(self.final(x).flatten(1))


def densenet_bc(depth: int = 40, growth: int = 12, num_classes: int = 10, in_channels: int = 3,
                compression: float = 0.5, dims: int = 2) -> DenseNet:
    """DenseNet-BC of depth 6n+4: three dense blocks of n bottleneck layers each
    (``dims=1`` for sequences such as MNIST-1D).

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.densenet_bc(22, growth=4))
    >>> len(units), units[0].kind, units[0].name
    (9, 'dense', 'block1.0')
    """
    return DenseNet(depth, growth, num_classes, in_channels, compression, dims)
