"""The geometry of a convolution as a linear operator on a periodic input: sizes, stride,
padding, dilation and groups read from a module or given with a weight, checked. It computes
nothing of the spectrum (:mod:`~unravel.procrustes.spectrum` does).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .._utils import check_int
from ..errors import ArgumentError, ArgumentTypeError

__all__: list = []

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Geometry:
    """A convolution's kernel and how it meets its input: everything the operator depends on."""

    def __init__(self, weight, input_size, stride, padding, dilation, groups):
        self.weight = weight
        self.d = d = weight.dim() - 2
        self.k = tuple(weight.shape[2:])
        self.n = _sizes("input_size", input_size, d)
        self.stride = _sizes("stride", stride, d)
        self.dilation = _sizes("dilation", dilation, d)
        self.padding = _sizes("padding", padding, d, minimum=0)
        self.groups = check_int("groups", groups, 1)
        c_out = weight.shape[0]
        if c_out % self.groups:
            raise ArgumentError(f"groups={self.groups} does not divide the kernel's {c_out} output channels.")
        for n, s in zip(self.n, self.stride):
            if n % s:
                raise ArgumentError(
                    f"input_size={self.n} is not divisible by stride={self.stride}: a strided circular convolution "
                    "is a convolution of polyphase components only when the stride divides the size. Give sizes "
                    "divisible by the stride, or stride=1 for the stride-1 operator of the same kernel.")
        self.m = tuple(n // s for n, s in zip(self.n, self.stride))
        # where tap a of the kernel lands: offset a*dilation - padding, modulo n
        self.positions = [(torch.arange(k) * dl - p) % n
                          for k, dl, p, n in zip(self.k, self.dilation, self.padding, self.n)]

    def live_columns(self) -> torch.Tensor:
        """Which columns ``(c, r)`` of the polyphase matrices the kernel can fill: phase ``r`` is
        read by some tap. A 1x1 kernel of stride 2 reads one phase in 2^d; the other columns are
        zero whatever the weights, and so are as many singular values (structural zeros)."""
        live = torch.ones((), dtype=torch.bool)
        for pos, s in zip(self.positions, self.stride):
            phase = torch.zeros(s, dtype=torch.bool)
            phase[pos % s] = True
            live = live.unsqueeze(-1) & phase
        return live.reshape(1, -1).expand(self.weight.shape[1], -1).reshape(-1)

    def structural_zero_count(self) -> int:
        """How many of the operator's singular values are zero whatever the weights."""
        c_out_g = self.weight.shape[0] // self.groups
        cols, live = self.live_columns().numel(), int(self.live_columns().sum())
        return math.prod(self.m) * self.groups * (min(c_out_g, cols) - min(c_out_g, live))

    def check_support(self):
        """The kernel's taps must land on distinct input positions for restriction to make sense."""
        for j, pos in enumerate(self.positions):
            if len(set(pos.tolist())) < len(pos):
                raise ArgumentError(
                    f"the kernel (size {self.k}, dilation {self.dilation}) wraps around an input of size {self.n} "
                    f"in dimension {j}: its operator is well defined (conv_singular_values folds it), but the "
                    "projected kernel cannot be restricted back to its support. Use a larger input_size.")


def _sizes(name, value, d, minimum=1):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * d
    if not isinstance(value, (tuple, list, torch.Size)) or len(value) != d:
        raise ArgumentError(f"{name}={value!r}: give an int or a tuple of {d} ints (the kernel has {d} spatial "
                            f"dimension{'s' * (d > 1)}).")
    return tuple(check_int(name, v, minimum) for v in value)


def _bounds(low, high):
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise ArgumentError(f"{name}={v!r} must be a real number.")
    if low < 0 or math.isinf(low):
        raise ArgumentError(f"low={low!r} must be finite and >= 0 (singular values are never negative).")
    if low > high:
        raise ArgumentError(f"low={low!r} > high={high!r}: the interval [low, high] is empty.")
    return float(low), float(high)


def _is_conv(module) -> bool:
    return isinstance(module, _CONVS) and not getattr(module, "transposed", False)


def _geometry(conv_or_weight, input_size, stride, padding, dilation, groups) -> _Geometry:
    """Read a conv module's settings (keywords given here override them) or a bare kernel's."""
    if isinstance(conv_or_weight, nn.Module):
        conv = conv_or_weight
        if not _is_conv(conv):
            raise ArgumentError(f"expected a convolution (nn.Conv1d, nn.Conv2d or nn.Conv3d), got "
                                f"{type(conv).__name__}: only convolutions have a convolution operator.")
        weight = conv.weight
        k = weight.shape[2:]
        if padding is None:
            padding = conv.padding
            if padding == "valid":
                padding = 0
            elif padding == "same":  # PyTorch pads dilation*(k-1) in all, the smaller half on the left
                padding = tuple(dl * (kk - 1) // 2 for dl, kk in zip(conv.dilation, k))
        stride = conv.stride if stride is None else stride
        dilation = conv.dilation if dilation is None else dilation
        groups = conv.groups if groups is None else groups
    elif torch.is_tensor(conv_or_weight):
        weight = conv_or_weight
        if weight.dim() not in (3, 4, 5) or not (weight.is_floating_point() or weight.is_complex()):
            raise ArgumentError(f"a kernel must be a real floating tensor [c_out, c_in/groups, *kernel_size] with "
                                f"1 to 3 spatial dimensions; got shape {tuple(weight.shape)}, dtype {weight.dtype}.")
        stride = 1 if stride is None else stride
        padding = 0 if padding is None else padding
        dilation = 1 if dilation is None else dilation
        groups = 1 if groups is None else groups
    else:
        raise ArgumentTypeError(f"expected a convolution module or its weight tensor, "
                                f"got {type(conv_or_weight).__name__}.")
    if weight.is_complex():
        raise ArgumentError("the kernel must be real.")
    return _Geometry(weight.detach(), input_size, stride, padding, dilation, groups)
