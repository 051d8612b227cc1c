"""Built-in adapters for torchvision's residual blocks, matched by qualified class name without
importing torchvision; loaded on first use through :mod:`unravel.adapters`.

Each adapter mirrors its block's forward exactly; the tests check that routing a block through
its units reproduces the block's output.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..units import UnitParts
from . import FunctionAdapter


def _tv_basic(m):
    def residual(x):
        return m.bn2(m.conv2(m.relu(m.bn1(m.conv1(x)))))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


def _tv_bottleneck(m):
    def residual(x):
        out = m.relu(m.bn1(m.conv1(x)))
        out = m.relu(m.bn2(m.conv2(out)))
        return m.bn3(m.conv3(out))

    return UnitParts(residual=residual, shortcut=m.downsample, post=F.relu)


CLASSES = {
    "torchvision.models.resnet.BasicBlock": FunctionAdapter(_tv_basic),
    "torchvision.models.resnet.Bottleneck": FunctionAdapter(_tv_bottleneck),
}
