"""The bottleneck Procrustes ResNet of Zaeemzadeh, Rahnavard & Shah (TPAMI 2021), as their code
builds it: a 3x3 stem, three stages of pre-activation bottleneck units with identity shortcuts,
and between the stages a *transition* that is one 1x1 convolution of stride 2 doubling the width.
Nothing here checks the input's resolution.
"""

from __future__ import annotations

from torch import nn

from .._utils import check_choice, check_int
from ..errors import ArgumentError
from ._blocks import PadShortcut, ResidualBlock
from .cifar import layers_for

__all__ = ["ProcResNet", "procresnet"]


def _bottleneck(channels: int, planes: int, dims: int) -> ResidualBlock:
    """``x + F(x)``, F = BN-ReLU-conv1x1 (to ``planes``), BN-ReLU-conv3x3, BN-ReLU-conv1x1 (back to ``channels``)."""
    conv, bn = layers_for(dims)[:2]
    residual = nn.Sequential(bn(channels), nn.ReLU(), conv(channels, planes, 1, bias=False),
                             bn(planes), nn.ReLU(), conv(planes, planes, 3, padding=1, bias=False),
                             bn(planes), nn.ReLU(), conv(planes, channels, 1, bias=False))
    return ResidualBlock(residual, None, None)


def _transition(cin: int, cout: int, dims: int) -> ResidualBlock:
    """One 1x1 convolution of stride 2, nothing else: a plain unit whose deletion puts the
    subsample-and-pad bypass in its place."""
    conv = layers_for(dims)[0](cin, cout, 1, stride=2, bias=False)
    return ResidualBlock(conv, PadShortcut(cin, cout, 2), None, kind="plain")


class ProcResNet(nn.Module):
    """Stem, three stages (stages 2 and 3 open with a transition), BN-ReLU, pooling, classifier.
    Build it with :func:`procresnet`."""

    def __init__(self, depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3, dims: int = 2):
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 13 or (depth - 4) % 9:
            raise ArgumentError(f"depth={depth!r}: a bottleneck ProcResNet has depth 9n+4 with n >= 1 "
                                "(13, 22, 166, 274, 634, 1003, ...).")
        n = (depth - 4) // 9
        check_choice("dims", dims, (1, 2))
        for name, v in (("width", width), ("num_classes", num_classes), ("in_channels", in_channels)):
            check_int(name, v, 1)
        conv, bn, pool, _ = layers_for(dims)
        self.dims = dims
        channels = 4 * width
        self.stem = conv(in_channels, channels, 3, padding=1, bias=False)
        for s in (1, 2, 3):
            blocks = []
            if s > 1:
                blocks.append(_transition(channels, 2 * channels, dims))
                channels *= 2
            blocks += [_bottleneck(channels, channels // 4, dims) for _ in range(n)]
            self.add_module(f"stage{s}", nn.Sequential(*blocks))
        self.final = nn.Sequential(bn(channels), nn.ReLU())
        self.pool = pool(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        if self.dims == 1 and x.dim() == 2:  # (batch, length) -> one channel
            x = x.unsqueeze(1)
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(self.pool(self.final(x)).flatten(1))


def procresnet(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3, dims: int = 2) -> ProcResNet:
    """The bottleneck Procrustes ResNet of Zaeemzadeh et al. [1]_ (their ``ProcResNet166`` is depth 166).

    A 3x3 stem to ``4 width`` channels (no BatchNorm after it: pre-activation), three stages of
    ``n`` pre-activation bottleneck units (BN-ReLU-1x1 conv to ``width * 2^(s-1)`` channels,
    BN-ReLU-3x3 conv, BN-ReLU-1x1 conv back; identity shortcuts), each of stages 2 and 3 opened
    by a transition: one 1x1 convolution of stride 2 from ``c`` to ``2c`` channels, nothing else
    (a plain unit). Then BN-ReLU, global pooling and a linear classifier; depth = 9n + 4 (the
    convolutions and the classifier). It has ``3n + 2`` units, the two transitions its only
    projection units. Initialised with PyTorch's defaults, as in the authors' code. Train it with
    ``ProcrustesCallback(recipe="authors")`` (:mod:`unravel.procrustes`), which keeps the stem's
    and the transitions' stride-1 operators at singular values ``sqrt(c_out / c_in)``. A 1x1
    convolution of stride 2 reads one input position in ``2^dims``: its strided operator
    discards the others whatever its weights.

    Parameters
    ----------
    depth : int
        9n + 4: 13, 22, ..., 166 (n = 18), 274, 634, 1003.
    width : int
        The bottleneck width of stage 1 (16 in the paper: 64 channels at the sums).
    num_classes, in_channels : int
    dims : {1, 2}
        2 for images; 1 for sequences such as MNIST-1D.

    References
    ----------
    .. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
       Become Extremely Deep?" IEEE TPAMI 43(11), 2021.

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.procresnet(22, width=2, in_channels=1, dims=1)
    >>> [u.name for u in unravel.find_units(net) if u.projection]
    ['stage2.0', 'stage3.0']
    >>> len(unravel.find_units(net))
    8
    """
    return ProcResNet(depth, width, num_classes, in_channels, dims)
