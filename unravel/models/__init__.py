"""Reference models: CIFAR ResNets (v1, v2, plain, SE), DenseNet-BC, MLPs and a 1-D ResNet.

Every model is built from :class:`ResidualBlock`, so :func:`unravel.find_units` finds its units
exactly. Plain variants hold the same layers as their residual twins, without shortcuts.
"""

from ._blocks import PadShortcut, ResidualBlock, SqueezeExcite
from .cifar import CifarResNet, plain_cifar, preact_resnet_cifar, resnet_cifar, se_resnet_cifar
from .densenet import DenseLayer, DenseNet, densenet_bc
from .small import MLP, ResNet1d, plain1d, plain_mlp, resmlp, resnet1d

__all__ = [
    "resnet_cifar", "preact_resnet_cifar", "plain_cifar", "se_resnet_cifar", "densenet_bc",
    "resmlp", "plain_mlp", "resnet1d", "plain1d",
    "CifarResNet", "DenseNet", "DenseLayer", "MLP", "ResNet1d", "ResidualBlock", "PadShortcut", "SqueezeExcite",
]
