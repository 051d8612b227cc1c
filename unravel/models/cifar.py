"""CIFAR-style residual networks (He et al. 2016), their plain, pre-activation and SE relatives.

Each model reads like the paper's table: a 3x3 stem, three stages of ``n`` units with widths
``w, 2w, 4w`` (the first unit of stages 2 and 3 halves the resolution), global pooling and a
linear classifier; depth = 6n + 2. Nothing here checks the input's resolution.
"""

from __future__ import annotations

from torch import nn

from ._blocks import PadShortcut, ResidualBlock, SqueezeExcite
from .._utils import check_choice, check_int
from ..errors import ArgumentError

__all__ = ["CifarResNet", "resnet_cifar", "preact_resnet_cifar", "plain_cifar", "se_resnet_cifar"]


def layers_for(dims: int):
    """(Conv, BatchNorm, AdaptiveAvgPool, AvgPool) classes for 1-D or 2-D inputs."""
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d, nn.AvgPool1d
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d
    raise ArgumentError(f"dims={dims!r}; allowed: 1 (sequences such as MNIST-1D) or 2 (images).")


def _conv3x3(cin, cout, stride=1, dims=2):
    return layers_for(dims)[0](cin, cout, 3, stride=stride, padding=1, bias=False)


SHORTCUTS = ("pad", "conv")
VARIANTS = ("v1", "v2", "plain", "se")


def _projection(cin, cout, stride, shortcut, dims=2):
    # He et al.'s option A ("pad": subsample, zero-pad channels; what their CIFAR nets use and
    # what gives the paper's parameter counts) or option B ("conv": 1x1 conv + BN).
    if shortcut == "pad":
        return PadShortcut(cin, cout, stride)
    conv, bn = layers_for(dims)[:2]
    return nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), bn(cout))


def _basic_block(cin, cout, stride, variant, se_reduction=4, shortcut="pad", dims=2):
    """One unit. variant: 'v1' (post-activation), 'v2' (pre-activation), 'plain', 'se'."""
    changes = stride != 1 or cin != cout
    bn = layers_for(dims)[1]
    if variant == "v2":
        residual = nn.Sequential(bn(cin), nn.ReLU(), _conv3x3(cin, cout, stride, dims),
                                 bn(cout), nn.ReLU(), _conv3x3(cout, cout, 1, dims))
        return ResidualBlock(residual, _projection(cin, cout, stride, shortcut, dims) if changes else None, post=None)
    layers = [_conv3x3(cin, cout, stride, dims), bn(cout), nn.ReLU(), _conv3x3(cout, cout, 1, dims), bn(cout)]
    if variant == "se":
        layers.append(SqueezeExcite(cout, se_reduction))
    residual = nn.Sequential(*layers)
    if variant == "plain":
        # no shortcut in the forward; the bypass for deletions has no parameters
        return ResidualBlock(residual, PadShortcut(cin, cout, stride) if changes else None, nn.ReLU(), kind="plain")
    return ResidualBlock(residual, _projection(cin, cout, stride, shortcut, dims) if changes else None, nn.ReLU())


class CifarResNet(nn.Module):
    """Stem, three stages of units, pooling and classifier. Build it with the functions below."""

    def __init__(self, depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 variant: str = "v1", se_reduction: int = 4, shortcut: str = "pad", dims: int = 2):
        super().__init__()
        n = _units_per_stage(depth)
        check_choice("shortcut", shortcut, SHORTCUTS)  # 'pad': option A, parameter-free; 'conv': option B
        check_choice("variant", variant, VARIANTS)
        check_choice("dims", dims, (1, 2))
        _check_positive(width=width, num_classes=num_classes, in_channels=in_channels, se_reduction=se_reduction)
        widths = [width, 2 * width, 4 * width]
        conv, bn, pool, _ = layers_for(dims)
        self.dims = dims
        if variant == "v2":
            self.stem = _conv3x3(in_channels, width, 1, dims)
        else:
            self.stem = nn.Sequential(_conv3x3(in_channels, width, 1, dims), bn(width), nn.ReLU())
        cin = width
        for s, cout in enumerate(widths, start=1):
            blocks = []
            for i in range(n):
                stride = 2 if (s > 1 and i == 0) else 1
                blocks.append(_basic_block(cin, cout, stride, variant, se_reduction, shortcut, dims))
                cin = cout
            self.add_module(f"stage{s}", nn.Sequential(*blocks))
        # pre-activation nets end with the BN-ReLU their last unit leaves out
        self.final = nn.Sequential(bn(cin), nn.ReLU()) if variant == "v2" else nn.Identity()
        self.pool = pool(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        if self.dims == 1 and x.dim() == 2:  # (batch, length) -> one channel
            x = x.unsqueeze(1)
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(self.final(x)).flatten(1))


def _units_per_stage(depth):
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ArgumentError(f"depth={depth!r}: a CIFAR ResNet has depth 6n+2 with n >= 1 "
                         "(8, 14, 20, 32, 44, 56, 110, ...).")
    return (depth - 2) // 6


def _check_positive(**values):
    for name, v in values.items():
        check_int(name, v, 1)


def resnet_cifar(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 shortcut: str = "pad", dims: int = 2) -> CifarResNet:
    """The CIFAR ResNet of He et al. 2016 (post-activation, "v1").

    Parameters
    ----------
    depth : int
        6n + 2: 20, 32, 44, 56, 110, ... It has 3n units; the first of stages 2 and 3 are
        projection units.
    width : int
        Channels of the first stage (16 in the paper).
    num_classes, in_channels : int
    shortcut : {"pad", "conv"}
        The projection units' shortcut: "pad" (option A: subsample and zero-pad channels, no
        parameters; the paper's CIFAR choice and parameter counts 0.27M, 0.85M, 1.7M for depth
        20, 56, 110) or "conv" (option B: 1x1 conv + BN).
    dims : {1, 2}
        2 for images; 1 for sequences such as MNIST-1D (the same net with 1-D convolutions).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resnet_cifar(110)
    >>> len(unravel.find_units(net))
    54
    >>> round(sum(p.numel() for p in net.parameters()) / 1e6, 1)
    1.7
    """
    return CifarResNet(depth, width, num_classes, in_channels, "v1", shortcut=shortcut, dims=dims)


def preact_resnet_cifar(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                        shortcut: str = "pad", dims: int = 2) -> CifarResNet:
    """Pre-activation ResNet (He et al., ECCV 2016, "identity mappings"): post is the identity.

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.preact_resnet_cifar(20))
    >>> units[0].parts.post is None
    True
    """
    return CifarResNet(depth, width, num_classes, in_channels, "v2", shortcut=shortcut, dims=dims)


def plain_cifar(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                dims: int = 2) -> CifarResNet:
    """:func:`resnet_cifar` without shortcuts: the paper's plain (VGG-like) comparison.

    Its units are ``kind="plain"``: the same layers, ``y = relu(residual(x))``. Deleting one
    puts the identity (or a parameter-free subsample-and-pad) in its place, as Veit et al.
    delete a layer of VGG.

    Examples
    --------
    >>> import unravel
    >>> {u.kind for u in unravel.find_units(unravel.models.plain_cifar(20))}
    {'plain'}
    """
    return CifarResNet(depth, width, num_classes, in_channels, "plain", dims=dims)


def se_resnet_cifar(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                    reduction: int = 4, shortcut: str = "pad", dims: int = 2) -> CifarResNet:
    """:func:`resnet_cifar` with a squeeze-and-excitation gate closing every residual branch.

    Examples
    --------
    >>> import unravel
    >>> len(unravel.find_units(unravel.models.se_resnet_cifar(20)))
    9
    """
    return CifarResNet(depth, width, num_classes, in_channels, "se", reduction, shortcut, dims)
