"""CIFAR-style residual networks (He et al. 2016), their plain, pre-activation and SE relatives,
and the Procrustes ResNet (Zaeemzadeh et al. 2021).

Each model reads like the paper's table: a 3x3 stem, three stages of ``n`` units with widths
``w, 2w, 4w`` (the first unit of stages 2 and 3 halves the resolution), global pooling and a
linear classifier; depth = 6n + 2. Nothing here checks the input's resolution.
"""

from __future__ import annotations

from torch import nn

from ._blocks import PadShortcut, ResidualBlock, SqueezeExcite
from .._utils import check_choice, check_int
from ..errors import ArgumentError

__all__ = ["CifarResNet", "resnet_cifar", "preact_resnet_cifar", "plain_cifar", "preact_plain_cifar", "se_resnet_cifar"]


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
VARIANTS = ("v1", "v2", "plain", "plain_v2", "se")


def _projection(cin, cout, stride, shortcut, dims=2):
    # He et al.'s option A ("pad": subsample, zero-pad channels; what their CIFAR nets use and
    # what gives the paper's parameter counts) or option B ("conv": 1x1 conv + BN).
    if shortcut == "pad":
        return PadShortcut(cin, cout, stride)
    conv, bn = layers_for(dims)[:2]
    return nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), bn(cout))


def _basic_block(cin, cout, stride, variant, se_reduction=4, shortcut="pad", dims=2):
    """One unit. variant: 'v1' (post-activation), 'v2' (pre-activation), 'plain', 'plain_v2'
    (pre-activation layers without the shortcut), 'se'."""
    changes = stride != 1 or cin != cout
    bn = layers_for(dims)[1]
    if variant in ("v2", "plain_v2"):
        residual = nn.Sequential(bn(cin), nn.ReLU(), _conv3x3(cin, cout, stride, dims),
                                 bn(cout), nn.ReLU(), _conv3x3(cout, cout, 1, dims))
        if variant == "plain_v2":  # y = F(x): nothing is added and nothing follows
            return ResidualBlock(residual, PadShortcut(cin, cout, stride) if changes else None, None, kind="plain")
        return ResidualBlock(residual, _projection(cin, cout, stride, shortcut, dims) if changes else None, post=None)
    layers = [_conv3x3(cin, cout, stride, dims), bn(cout), nn.ReLU(), _conv3x3(cout, cout, 1, dims), bn(cout)]
    if variant == "se":
        layers.append(SqueezeExcite(cout, se_reduction))
    residual = nn.Sequential(*layers)
    if variant == "plain":
        # no shortcut in the forward; the bypass for deletions has no parameters
        return ResidualBlock(residual, PadShortcut(cin, cout, stride) if changes else None, nn.ReLU(), kind="plain")
    return ResidualBlock(residual, _projection(cin, cout, stride, shortcut, dims) if changes else None, nn.ReLU())


def _procrustes_transition(cin, cout, dims=2):
    """The transition of a Procrustes ResNet: one convolution with kernel and stride 2, nothing
    else, orthogonally initialised. Its kernel reads every input position once: in 1-D with
    ``cout = 2 cin`` its operator is a ``2cin x 2cin`` matrix per output position, orthogonal
    here, so the transition is exactly norm-preserving (in 2-D, ``cout x 4cin``: orthonormal
    rows). A plain unit: deleting it puts the subsample-and-pad bypass in its place."""
    conv = layers_for(dims)[0](cin, cout, 2, stride=2, bias=False)
    return ResidualBlock(conv, PadShortcut(cin, cout, 2), None, kind="plain")


class CifarResNet(nn.Module):
    """Stem, three stages of units, pooling and classifier. Build it with the functions below."""

    def __init__(self, depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 variant: str = "v1", se_reduction: int = 4, shortcut: str = "pad", dims: int = 2,
                 procrustes: bool = False):
        super().__init__()
        n = _units_per_stage(depth)
        check_choice("shortcut", shortcut, SHORTCUTS)  # 'pad': option A, parameter-free; 'conv': option B
        check_choice("variant", variant, VARIANTS)
        check_choice("dims", dims, (1, 2))
        if not isinstance(procrustes, bool):
            raise ArgumentError(f"procrustes={procrustes!r} must be True or False.")
        if procrustes and variant != "v2":
            raise ArgumentError(f"procrustes=True builds a pre-activation net (variant 'v2'); got variant={variant!r}.")
        _check_positive(width=width, num_classes=num_classes, in_channels=in_channels, se_reduction=se_reduction)
        widths = [width, 2 * width, 4 * width]
        conv, bn, pool, _ = layers_for(dims)
        self.dims = dims
        preact = variant in ("v2", "plain_v2")
        if preact:
            self.stem = _conv3x3(in_channels, width, 1, dims)
        else:
            self.stem = nn.Sequential(_conv3x3(in_channels, width, 1, dims), bn(width), nn.ReLU())
        cin = width
        transitions = []
        for s, cout in enumerate(widths, start=1):
            blocks = []
            if procrustes and s > 1:  # the authors' ProcResNet: a transition, then n identity units
                blocks.append(_procrustes_transition(cin, cout, dims))
                transitions.append(blocks[-1].residual)
                cin = cout
            for i in range(n):
                stride = 2 if (s > 1 and i == 0 and not procrustes) else 1
                blocks.append(_basic_block(cin, cout, stride, variant, se_reduction, shortcut, dims))
                cin = cout
            self.add_module(f"stage{s}", nn.Sequential(*blocks))
        # pre-activation nets end with the BN-ReLU their last unit leaves out
        self.final = nn.Sequential(bn(cin), nn.ReLU()) if preact else nn.Identity()
        self.pool = pool(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in transitions:  # [cout, cin * 2^dims] is the polyphase matrix: orthogonal rows/columns
            nn.init.orthogonal_(m.weight)

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
                        shortcut: str = "pad", dims: int = 2, procrustes: bool = False) -> CifarResNet:
    """Pre-activation ResNet (He et al., ECCV 2016, "identity mappings"): post is the identity.

    Parameters
    ----------
    depth, width, num_classes, in_channels, shortcut, dims
        As in :func:`resnet_cifar`.
    procrustes : bool
        Build the Procrustes ResNet of Zaeemzadeh et al. [1]_ instead: as in the authors' code,
        stages 2 and 3 open with a *transition* that is one convolution (no BatchNorm, no
        activation, no shortcut) followed by ``n`` identity units, so the net has ``3n + 2``
        units. The transition's kernel and stride are 2 (it reads every input position once;
        the authors' 2-D bottleneck nets use a 1x1 kernel of stride 2, which discards three
        positions in four) and it is initialised orthogonal: in 1-D (``2w -> 4w`` channels read
        through two phases) every singular value of its operator is 1. Keep it so in training with
        :class:`unravel.procrustes.ProcrustesCallback`.

    References
    ----------
    .. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
       Become Extremely Deep?" IEEE TPAMI 43(11), 2021.

    Examples
    --------
    >>> import unravel
    >>> units = unravel.find_units(unravel.models.preact_resnet_cifar(20))
    >>> units[0].parts.post is None
    True
    >>> net = unravel.models.preact_resnet_cifar(20, width=4, in_channels=1, dims=1, procrustes=True)
    >>> [u.name for u in unravel.find_units(net) if u.projection]
    ['stage2.0', 'stage3.0']
    >>> s = unravel.procrustes.conv_singular_values(net.stage2[0].residual, 40)
    >>> bool((s - 1).abs().max() < 1e-5)
    True
    """
    return CifarResNet(depth, width, num_classes, in_channels, "v2", shortcut=shortcut, dims=dims,
                       procrustes=procrustes)


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


def preact_plain_cifar(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                       dims: int = 2) -> CifarResNet:
    """:func:`preact_resnet_cifar` without shortcuts: each unit is ``y = F(x)`` with the same
    pre-activation layers ``F`` (BN-ReLU-conv-BN-ReLU-conv) and nothing after them, the plain
    twin of the blocks ``x + F(x)`` that Zaeemzadeh et al. analyse.

    Its units are ``kind="plain"``; deleting one puts the identity (or a parameter-free
    subsample-and-pad) in its place.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.preact_plain_cifar(8, width=4, in_channels=1, dims=1)
    >>> [(u.kind, u.parts.post) for u in unravel.find_units(net)][:1]
    [('plain', None)]
    >>> x = torch.randn(2, 4, 16)
    >>> unit = net.stage1[0]
    >>> torch.equal(unit(x), unit.residual(x))
    True
    """
    return CifarResNet(depth, width, num_classes, in_channels, "plain_v2", dims=dims)


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
