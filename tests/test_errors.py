"""Bad input is one UnravelError naming what was wrong and what is allowed."""

import pytest
import torch

import unravel
from unravel import attribution, lesion, models, sweeps
from unravel.errors import ArgumentError, ArgumentTypeError, UnravelError


def test_every_error_class_is_an_unravel_error_and_a_builtin():
    for name in unravel.errors.__all__:
        cls = getattr(unravel.errors, name)
        assert issubclass(cls, UnravelError)
        assert cls is UnravelError or issubclass(cls, (ValueError, TypeError))


@pytest.mark.parametrize("call, match", [
    (lambda: models.resnet_cifar(8, shortcut="option-a"), "shortcut='option-a' is not allowed"),
    (lambda: models.CifarResNet(8, variant="v3"), "variant='v3' is not allowed; choose one of 'v1', 'v2'"),
    (lambda: models.resnet_cifar(8, dims=3), "dims"),
    (lambda: models.resnet_cifar(8, width=True), "width=True must be an integer"),
])
def test_enum_like_options_are_checked(call, match):
    with pytest.raises(UnravelError, match=match):
        call()


def test_a_bool_is_not_a_number():
    net = models.resmlp(4, 2, width=4, depth=2)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    with pytest.raises(ArgumentError, match="max_length=True must be an integer"):
        attribution.path_length_gradients(net, x, y, max_length=True)
    with pytest.raises(ArgumentError, match="each k in ks=True"):
        sweeps.delete_random(net, (x, y), ks=[True], progress=False)
    with pytest.raises(ArgumentError, match="samples_per_k=2.5"):
        sweeps.delete_random(net, (x, y), ks=[1], samples_per_k=2.5, progress=False)
    with pytest.raises(ArgumentError, match="is a bool"):
        lesion.delete(net, True).__enter__()
    with pytest.raises(ArgumentTypeError, match="generator"):
        attribution.path_length_gradients(net, x, y, method="sample", generator=True)
    with pytest.raises(ArgumentError, match="wrt='both' is not allowed"):
        attribution.path_length_gradients(net, x, y, wrt="both")
