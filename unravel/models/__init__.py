"""Reference models: CIFAR ResNets (v1, v2, plain, pre-activation plain, SE, Procrustes), the bottleneck ProcResNet, DenseNet-BC, MLPs and a 1-D ResNet.

Every model is built from :class:`ResidualBlock`, so :func:`unravel.find_units` finds its units
exactly. Plain variants hold the same layers as their residual twins, without shortcuts. Each is
registered by name (:mod:`unravel.models.registry`), which is how study specs and the command line
name them.
"""

from ._blocks import PadShortcut, ResidualBlock, SqueezeExcite
from .cifar import CifarResNet, plain_cifar, preact_plain_cifar, preact_resnet_cifar, resnet_cifar, se_resnet_cifar
from .densenet import DenseLayer, DenseNet, densenet_bc
from . import registry
from .registry import build_model, model_names, register_model
from .procresnet import ProcResNet, procresnet
from .small import MLP, ResNet1d, plain1d, plain_mlp, resmlp, resnet1d

__all__ = [
    "resnet_cifar", "preact_resnet_cifar", "procresnet", "ProcResNet", "plain_cifar", "se_resnet_cifar", "densenet_bc",
    "resmlp", "plain_mlp", "resnet1d", "plain1d", "preact_plain_cifar",
    "CifarResNet", "DenseNet", "DenseLayer", "MLP", "ResNet1d", "ResidualBlock", "PadShortcut", "SqueezeExcite",
    "build_model", "model_names", "register_model", "registry",
]

# name, builder, how the input shape sizes it, the command line's default depth, what --width sets
for _name, _builder, _sizing, _depth, _width in [
        ("resnet_cifar", resnet_cifar, "conv", 20, "width"),
        ("preact_resnet_cifar", preact_resnet_cifar, "conv", 20, "width"),
        ("plain_cifar", plain_cifar, "conv", 20, "width"),
        ("se_resnet_cifar", se_resnet_cifar, "conv", 20, "width"),
        ("densenet_bc", densenet_bc, "conv", 22, "growth"),
        ("resmlp", resmlp, "flat", None, "width"),
        ("plain_mlp", plain_mlp, "flat", None, "width"),
        ("resnet1d", resnet1d, "channels", None, "width"),
        ("plain1d", plain1d, "channels", None, "width"),
        ("preact_plain_cifar", preact_plain_cifar, "conv", 20, "width"),
        ("procresnet", procresnet, "conv", 22, "width")]:
    register_model(_name, _builder, sizing=_sizing, depth=_depth, width=_width, replace=True)
del _name, _builder, _sizing, _depth, _width
