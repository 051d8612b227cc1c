"""Procrustes ResNets: norm-preserving transition units through the singular values of convolutions.

Zaeemzadeh, Rahnavard & Shah [1]_ show that identity shortcuts make residual units nearly
norm-preserving, and that the *transition* (projection) units, where the resolution and the
width change, are where a ResNet loses norm-preservation. Their Procrustes ResNet constrains the
singular values of the convolution *operators* in those units after gradient steps (their code:
at a random half of the steps), with the projection of Sedghi, Gupta & Long [2]_.

**The operator of a convolution.** A convolution with circular padding is a linear map of its
whole input, ``c_in x n`` (1-D) or ``c_in x n1 x n2`` (2-D) numbers, to its whole output. With
stride 1 the discrete Fourier transform block-diagonalises it: zero-pad each ``c_out x c_in``
slice of the kernel to ``n1 x n2`` and take its 2-D FFT; at each of the ``n1 n2`` frequencies
the ``c_out x c_in`` complex matrix of kernel coefficients has singular values that are singular
values of the operator, and together they are all of them [2]_ (1-D: ``n`` frequencies; 3-D
alike). A convolution of stride ``s`` (``s`` dividing ``n``) is a stride-1 convolution of the
*polyphase* components of its input: input position ``s*j + r`` becomes position ``j`` of channel
``(c, r)``. Its operator's singular values are therefore, exactly, those of the ``n/s``-point FFT
of a ``c_out x (c_in s^d)`` kernel; this module computes them that way (``stride=1`` gives the
stride-1 operator of the same kernel instead; see :func:`conv_singular_values`).

**What is exact and what is approximate.** :func:`conv_singular_values` is exact (to rounding)
for the circular-padding operator, with any stride dividing the input size, dilation and groups.
PyTorch's ``padding_mode="circular"`` computes that operator when ``2*padding ==
dilation*(kernel_size - 1)`` (the "same" convolutions of ResNets). For zero padding (PyTorch's
default, and unravel's models) the circular operator is the usual stand-in [1]_ [2]_: the two
differ only at the borders. Clipping the singular values of each frequency's matrix gives
exactly the nearest linear map (in Frobenius norm) with singular values in ``[low, high]``, but
its kernel fills the whole ``n x n`` input. Restricting it back to the layer's ``k x k``
support (what [1]_ and [2]_ do) leaves singular values only *near* ``[low, high]``; repeating
the two steps (``iterations``, alternating projections) shrinks the gap, and
:func:`clip_deviation` measures it.

References
----------
.. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
   Become Extremely Deep?" IEEE TPAMI, 2021.
.. [2] H. Sedghi, V. Gupta, P. M. Long. "The Singular Values of Convolutional Layers." ICLR 2019.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ._utils import as_tuple, check_choice, check_int, eval_mode, model_device
from .errors import ArgumentError, ArgumentTypeError
from .train import Callback

__all__ = [
    "conv_singular_values",
    "clip_deviation",
    "project_kernel",
    "project_conv_",
    "procrustes_units",
    "procrustes_",
    "ProcrustesCallback",
]

PARTS = ("residual", "shortcut")
STRIDED = ("exact", "stride1")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ------------------------------------------------------------------------------------------
# arguments


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


# ------------------------------------------------------------------------------------------
# the mathematics: kernel <-> per-frequency channel matrices


def _work_dtype_device(w):
    # float64 throughout (the matrices are small); MPS has no float64
    device = torch.device("cpu") if w.device.type == "mps" else w.device
    return torch.float64, device


def _full_kernel(g: _Geometry) -> torch.Tensor:
    """The kernel spread over the whole input: ``[c_out, c_in/groups, *n]``, offset ``t`` at index
    ``t mod n`` (taps that wrap around an input smaller than the kernel add up: circular)."""
    dtype, device = _work_dtype_device(g.weight)
    full = g.weight.to(device=device, dtype=dtype)
    for j, (pos, n) in enumerate(zip(g.positions, g.n)):
        dim = 2 + j
        shape = list(full.shape)
        shape[dim] = n
        full = full.new_zeros(shape).index_add_(dim, pos.to(device), full)
    return full


def _spectrum(full: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """Per-frequency channel matrices of the (polyphase) operator: ``[*m, groups, c_out/groups,
    c_in/groups * prod(stride)]``, complex."""
    d = g.d
    c_out, c_in_g = full.shape[:2]
    shape = [c_out, c_in_g]
    for m, s in zip(g.m, g.stride):
        shape += [m, s]  # offset t = s*q + r sits at index (q, r)
    x = full.reshape(shape)
    q_dims = [2 + 2 * j for j in range(d)]
    r_dims = [3 + 2 * j for j in range(d)]
    x = torch.fft.fftn(x, dim=q_dims)
    x = x.permute(*q_dims, 0, 1, *r_dims)  # [*m, c_out, c_in/g, *s]
    return x.reshape(*g.m, g.groups, c_out // g.groups, c_in_g * math.prod(g.stride))


def _from_spectrum(spec: torch.Tensor, g: _Geometry, c_in_g: int) -> torch.Tensor:
    """Inverse of :func:`_spectrum` (followed by the real part): the full kernel ``[c_out, c_in/g, *n]``."""
    d = g.d
    c_out = spec.shape[d] * spec.shape[d + 1]
    x = spec.reshape(*g.m, c_out, c_in_g, *g.stride)
    # back to [c_out, c_in/g, m1, s1, m2, s2, ...]
    order = [d, d + 1]
    for j in range(d):
        order += [j, d + 2 + j]
    x = x.permute(*order)
    x = torch.fft.ifftn(x, dim=[2 + 2 * j for j in range(d)]).real
    return x.reshape(c_out, c_in_g, *g.n)


def _clip_matrices(a: torch.Tensor, low: float, high: float) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return (u * s.clamp(low, high).to(u.dtype).unsqueeze(-2)) @ vh


def _frequency_pairs(m: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of the frequencies ``f`` that stand for the pair ``{f, -f}`` (the one with the
    smaller flat index), of their mirrors ``-f``, and which of them are their own mirror."""
    flat = torch.arange(math.prod(m), device=device).reshape(m)
    mirror = flat
    for j, size in enumerate(m):
        mirror = mirror.index_select(j, (-torch.arange(size, device=device)) % size)
    flat, mirror = flat.reshape(-1), mirror.reshape(-1)
    canonical = flat <= mirror
    return flat[canonical], mirror[canonical], (flat == mirror)[canonical]


def _svdvals(spec: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """Singular values of every frequency's matrices, computed once per pair ``{f, -f}`` (the
    matrix at ``-f`` is the conjugate of the one at ``f``)."""
    flat = spec.reshape(-1, *spec.shape[g.d:])
    index, _, own = _frequency_pairs(g.m, spec.device)
    values = torch.linalg.svdvals(flat[index])
    return torch.cat([values, values[~own]])


def _clip_spectrum(spec: torch.Tensor, g: _Geometry, low: float, high: float, live_only: bool = False) -> torch.Tensor:
    """Each frequency's matrix with its singular values clipped into [low, high]. Computed once
    per pair ``{f, -f}`` and conjugated for ``-f`` (real for ``f = -f``), so that the kernel stays
    real even where the nearest clipped matrix is not unique (a rank-deficient matrix, low > 0).

    ``live_only``: clip only the columns the kernel's support can fill and leave the others at
    zero (what restriction to the support keeps anyway; without it the structural zeros would be
    lifted into columns that restriction then drops, in directions that are not unique)."""
    if live_only:
        live = g.live_columns().to(spec.device)
        if not bool(live.all()):
            out = torch.zeros_like(spec)
            out[..., live] = _clip_spectrum(spec[..., live], g, low, high)
            return out
    flat = spec.reshape(-1, *spec.shape[g.d:])
    index, mirror, own = _frequency_pairs(g.m, spec.device)
    clipped = torch.empty((len(index),) + flat.shape[1:], dtype=flat.dtype, device=flat.device)
    if bool((~own).any()):
        clipped[~own] = _clip_matrices(flat[index[~own]], low, high)
    if bool(own.any()):  # f = -f: the matrix is real; clip it in real arithmetic
        clipped[own] = _clip_matrices(flat[index[own]].real, low, high).to(flat.dtype)
    out = torch.empty_like(flat)
    out[index] = clipped
    out[mirror] = clipped.conj()
    out[index[own]] = clipped[own]
    return out.reshape(spec.shape)


def _restrict(full: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """The taps of a full kernel at the layer's support, shaped like the layer's kernel."""
    x = full
    for j, pos in enumerate(g.positions):
        x = x.index_select(2 + j, pos.to(x.device))
    return x


# ------------------------------------------------------------------------------------------
# public functions


def conv_singular_values(conv_or_weight, input_size, *, stride=None, padding=None, dilation=None,
                         groups=None, structural_zeros: bool = True) -> torch.Tensor:
    """All singular values of a convolution's operator with circular padding, largest first.

    Parameters
    ----------
    conv_or_weight : nn.Conv1d, nn.Conv2d, nn.Conv3d or tensor
        A convolution module (its stride, padding, dilation and groups are read from it) or a
        kernel ``[c_out, c_in/groups, *kernel_size]``.
    input_size : int or tuple of int
        The spatial size ``n`` of the convolution's input (an int for every dimension alike).
    stride, padding, dilation, groups : int or tuple, optional
        Override the module's settings; for a bare kernel they default to 1, 0, 1, 1. ``padding``
        is the number of positions padded before the input (PyTorch's ``padding``): tap ``a`` of
        the kernel reads offset ``a*dilation - padding``. The stride must divide ``input_size``;
        ``stride=1`` on a strided module gives the stride-1 operator of the same kernel.
    structural_zeros : bool
        False leaves out the singular values that are zero for *every* kernel of this shape and
        stride: a strided kernel that never reads some polyphase components (a 1x1 convolution
        of stride 2 reads one input position in 2^d) has as many zero singular values as those
        components have channels, whatever its weights.

    Returns
    -------
    tensor
        ``prod(n/stride) * groups * min(c_out/groups, c_in/groups * prod(stride))`` values (with
        the structural zeros), the kernel's dtype, on its device: exactly (to rounding)
        ``torch.linalg.svdvals`` of the operator matrix ``[c_out * prod(n/stride), c_in * prod(n)]``.

    Notes
    -----
    With stride 1 the values are those of the ``n``-point FFT of the kernel's channel matrices
    (Sedghi et al.). With stride ``s`` they are those of the ``n/s``-point FFT of the polyphase
    kernel ``[c_out, c_in * s^d, ...]`` (input position ``s*j + r`` read as position ``j`` of
    channel ``(c, r)``); the stride-1 operator of the same kernel has other singular values (the
    strided operator is that operator with rows dropped). The padding offset matters only with
    a stride. The values describe circular padding whatever the module's ``padding_mode``; with
    zero padding the true operator differs at the borders. A kernel larger than the input wraps
    around (its taps add up), as circular padding does. Computed in float64.

    Examples
    --------
    >>> import torch, unravel
    >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    >>> unravel.procrustes.conv_singular_values(conv, 16).shape  # 16*16 frequencies x min(8, 3)
    torch.Size([768])
    >>> ident = torch.zeros(4, 4, 3); ident[:, :, 1] = torch.eye(4)  # a 1-D identity kernel
    >>> unravel.procrustes.conv_singular_values(ident, 10, padding=1).unique()
    tensor([1.])
    """
    g = _geometry(conv_or_weight, input_size, stride, padding, dilation, groups)
    if not isinstance(structural_zeros, bool):
        raise ArgumentError(f"structural_zeros={structural_zeros!r} must be True or False.")
    spec = _spectrum(_full_kernel(g), g)
    if not structural_zeros:
        spec = spec[..., g.live_columns().to(spec.device)]
    values = _svdvals(spec, g).flatten()
    return values.sort(descending=True).values.to(device=g.weight.device, dtype=g.weight.dtype)


def clip_deviation(conv_or_weight, input_size, low: float = 1.0, high: float = 1.0, *,
                   structural_zeros: bool = False, **settings) -> float:
    """How far the operator's singular values lie from ``[low, high]``: the largest distance of
    one of them to the interval (0 when all are inside).

    By default the structural zeros (see :func:`conv_singular_values`) are left out: no kernel
    of this shape and stride can move them, so they say nothing about how well a projection
    worked. They do mean that such an operator is not norm-preserving on all of its input (a 1x1
    stride-2 shortcut discards three pixels in four): ``structural_zeros=True`` counts them.
    ``settings`` are :func:`conv_singular_values`' keywords (stride, padding, dilation, groups).

    Examples
    --------
    >>> import torch, unravel
    >>> conv = torch.nn.Conv1d(4, 4, 3, padding=1, bias=False)
    >>> with torch.no_grad():
    ...     _ = conv.weight.zero_()
    >>> unravel.procrustes.clip_deviation(conv, 8)  # every singular value is 0, 1 from [1, 1]
    1.0
    """
    low, high = _bounds(low, high)
    s = conv_singular_values(conv_or_weight, input_size, structural_zeros=structural_zeros, **settings).double()
    return float((s - s.clamp(low, high)).abs().max()) if s.numel() else 0.0


def project_kernel(conv_or_weight, input_size, low: float = 1.0, high: float = 1.0, *, iterations: int = 1,
                   restrict: bool = True, stride=None, padding=None, dilation=None, groups=None) -> torch.Tensor:
    """A kernel whose circular-padding operator has its singular values clipped into ``[low, high]``.

    One iteration: spread the kernel over the input (``n`` taps per dimension), take the FFT,
    clip the singular values of every frequency's channel matrix (``U S V^H -> U clip(S) V^H``,
    the nearest matrix with singular values in ``[low, high]``; all set to 1 by default, the
    orthogonal "Procrustes" factor), take the inverse FFT, and keep the taps on the layer's
    support. Every further iteration repeats this from the result (alternating projections).

    Parameters
    ----------
    conv_or_weight : convolution module or kernel tensor
        As in :func:`conv_singular_values`; neither is changed.
    input_size : int or tuple of int
        The spatial size of the convolution's input.
    low, high : float
        The interval, ``0 <= low <= high`` (``high`` may be ``inf``). ``low=0, high=c`` is the
        projection onto operator norm at most ``c`` of Sedghi et al.
    iterations : int
        Rounds of clip-and-restrict (with ``restrict=True``).
    restrict : bool
        False: return the clipped full kernel, with ``n`` taps per dimension, whose operator has
        its singular values exactly in ``[low, high]``. It is the kernel of the same circular
        operator read with dilation 1 and padding offset ``padding`` (``conv_singular_values(full,
        input_size, stride=stride, padding=padding, groups=groups)`` gives its values), not a
        kernel the layer can hold; ``iterations`` must then be 1.
    stride, padding, dilation, groups : optional
        As in :func:`conv_singular_values`.

    Returns
    -------
    tensor
        A new kernel, the input's dtype and device.

    Examples
    --------
    >>> import torch, unravel
    >>> from unravel.procrustes import project_kernel, clip_deviation
    >>> w = torch.randn(4, 4, 3, dtype=torch.float64)
    >>> full = project_kernel(w, 16, padding=1, restrict=False)
    >>> full.shape, clip_deviation(full, 16, padding=1) < 1e-12
    (torch.Size([4, 4, 16]), True)
    >>> restricted = project_kernel(w, 16, padding=1, iterations=20)
    >>> clip_deviation(restricted, 16, padding=1) < clip_deviation(w, 16, padding=1)
    True
    """
    low, high = _bounds(low, high)
    iterations = check_int("iterations", iterations, 1)
    if not isinstance(restrict, bool):
        raise ArgumentError(f"restrict={restrict!r} must be True or False.")
    if not restrict and iterations != 1:
        raise ArgumentError(f"iterations={iterations} needs restrict=True: without restriction one clip is exact.")
    g = _geometry(conv_or_weight, input_size, stride, padding, dilation, groups)
    c_in_g = g.weight.shape[1]
    if not restrict:
        full = _from_spectrum(_clip_spectrum(_spectrum(_full_kernel(g), g), g, low, high), g, c_in_g)
        # as a kernel read with dilation 1 from offset -padding: tap i holds offset i - padding
        full = torch.roll(full, shifts=g.padding, dims=tuple(range(2, 2 + g.d)))
        return full.to(device=g.weight.device, dtype=g.weight.dtype)
    g.check_support()
    weight = g.weight
    for _ in range(iterations):
        full = _from_spectrum(_clip_spectrum(_spectrum(_full_kernel(g), g), g, low, high, live_only=True), g, c_in_g)
        g.weight = _restrict(full, g)
    weight, g.weight = g.weight, weight
    return weight.to(device=g.weight.device, dtype=g.weight.dtype)


def project_conv_(conv: nn.Module, input_size, low: float = 1.0, high: float = 1.0, *, iterations: int = 1,
                  stride=None) -> nn.Module:
    """Clip a convolution's operator singular values into ``[low, high]``, in place (Procrustes).

    The kernel is replaced by :func:`project_kernel`'s, under ``torch.no_grad`` (the bias is left
    alone: it does not enter the linear operator). With the default ``low = high = 1`` the
    operator becomes (nearly) orthogonal; the values are exactly clipped before the kernel is
    restricted back to its support and approximately after it (:func:`clip_deviation` measures
    how nearly; more ``iterations`` bring them closer).

    Parameters
    ----------
    conv : nn.Conv1d, nn.Conv2d or nn.Conv3d
    input_size : int or tuple of int
        The spatial size of the convolution's input.
    low, high : float
    iterations : int
        Rounds of clip-and-restrict.
    stride : int or tuple, optional
        The module's stride by default (the exact strided operator, which needs the stride to
        divide ``input_size``); ``stride=1`` clips the stride-1 operator of the same kernel
        instead. The strided operator is that one with rows dropped, so the bound ``high``
        carries over to it; and where ``c_out <= c_in`` and all values are set to 1 (orthonormal
        rows), so does that. For a widening transition (``c_out > c_in``) the stride-1
        operator can only become an isometry, and dropping rows of an isometry does not keep
        norms: the strided operator's smallest singular values fall below 1.

    Returns
    -------
    nn.Module
        ``conv`` itself.

    Examples
    --------
    >>> import torch, unravel
    >>> from unravel.procrustes import project_conv_, clip_deviation
    >>> conv = torch.nn.Conv1d(4, 8, 3, stride=2, padding=1, bias=False).double()
    >>> before = clip_deviation(conv, 16)
    >>> after = clip_deviation(project_conv_(conv, 16, iterations=10), 16)
    >>> after < before
    True
    """
    if not _is_conv(conv):
        raise ArgumentError(f"project_conv_ expects a convolution (nn.Conv1d, nn.Conv2d or nn.Conv3d), "
                            f"got {type(conv).__name__}.")
    new = project_kernel(conv, input_size, low, high, iterations=iterations, stride=stride)
    with torch.no_grad():
        conv.weight.copy_(new)
    return conv


def procrustes_units(model: nn.Module, *, parts: Iterable[str] = PARTS, units=None) -> list[tuple[Any, nn.Module]]:
    """The convolutions that a Procrustes ResNet constrains: those of its transition units.

    A transition (projection) unit is one whose shortcut is not the identity (``unit.projection``,
    see :func:`unravel.find_units`): where the resolution or the width changes.

    Parameters
    ----------
    model : nn.Module
    parts : iterable of {"residual", "shortcut"}
        Which branches' convolutions: the residual branch (where it is not a module, as in the
        torchvision adapters, every convolution of the block outside the shortcut) and the
        shortcut (a 1x1 convolution in option-B nets; option A's zero-padding shortcut has none).
    units : list of ResidualUnit, optional
        ``find_units(model)`` by default.

    Returns
    -------
    list of (ResidualUnit, nn.Module)
        In unit order, each convolution once (``nn.Conv1d/2d/3d``; transposed ones are left out).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1)
    >>> [(u.name, type(c).__name__) for u, c in unravel.procrustes.procrustes_units(net)]
    [('stage2.0', 'Conv1d'), ('stage2.0', 'Conv1d'), ('stage3.0', 'Conv1d'), ('stage3.0', 'Conv1d')]
    >>> net = unravel.models.resnet_cifar(8, width=4, shortcut="conv")
    >>> len(unravel.procrustes.procrustes_units(net, parts=["shortcut"]))
    2
    """
    from .units import find_units

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"procrustes_units expects a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(parts, str):
        parts = (parts,)
    parts = tuple(check_choice("parts", p, PARTS) for p in parts)
    if not parts:
        raise ArgumentError(f"parts is empty; give some of {PARTS}.")
    units = find_units(model) if units is None else list(units)
    found, seen = [], set()
    for unit in units:
        if not unit.projection:
            continue
        shortcut = unit.parts.shortcut
        in_shortcut = [m for m in shortcut.modules() if _is_conv(m)] if isinstance(shortcut, nn.Module) else []
        convs = []
        if "residual" in parts:
            residual = unit.parts.residual
            if isinstance(residual, nn.Module):
                convs += [m for m in residual.modules() if _is_conv(m)]
            else:  # a function of the block's modules: every conv of the block outside the shortcut
                ids = {id(m) for m in in_shortcut}
                convs += [m for m in unit.module.modules() if _is_conv(m) and id(m) not in ids]
        if "shortcut" in parts:
            convs += in_shortcut
        for conv in convs:
            if id(conv) not in seen:
                seen.add(id(conv))
                found.append((unit, conv))
    return found


def _input_sizes(model: nn.Module, convs, example_input) -> dict[int, tuple[int, ...]]:
    """Spatial input size of each conv (by id), from forward pre-hooks on one eval-mode pass."""
    sizes: dict[int, tuple[int, ...]] = {}
    handles = []
    for conv in convs:
        def hook(module, args, d=conv.weight.dim() - 2):
            if args and torch.is_tensor(args[0]):
                sizes.setdefault(id(module), tuple(args[0].shape[-d:]))
        handles.append(conv.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            else:
                model(*as_tuple(example_input))
    finally:
        for h in handles:
            h.remove()
    return sizes


def _names(model):
    return {id(m): name for name, m in model.named_modules()}


def _plan(model, example_input, input_sizes, parts, strided):
    """``[(unit, conv, name, size, stride)]`` for the convolutions to constrain."""
    check_choice("strided", strided, STRIDED)
    pairs = procrustes_units(model, parts=parts)
    if not pairs:
        raise ArgumentError(f"{type(model).__name__} has no convolution in its transition units' {' or '.join(parts)} "
                            "(option A's zero-padding shortcuts hold none): nothing to constrain.")
    names = _names(model)
    if (example_input is None) == (input_sizes is None):
        raise ArgumentError("give exactly one of example_input (a batch the model runs on, to measure each "
                            "convolution's input size) and input_sizes (a dict: convolution name -> size).")
    if example_input is not None:
        if torch.is_tensor(example_input):
            example_input = example_input.to(model_device(model))
        measured = _input_sizes(model, [c for _, c in pairs], example_input)
        missing = [names.get(id(c), "?") for _, c in pairs if id(c) not in measured]
        if missing:
            raise ArgumentError(f"the example input never reached {', '.join(missing)}: cannot tell their input sizes.")
        sizes = {id(c): measured[id(c)] for _, c in pairs}
    else:
        if not isinstance(input_sizes, Mapping):
            raise ArgumentTypeError(f"input_sizes must be a dict (convolution name -> spatial size), got "
                                    f"{type(input_sizes).__name__}.")
        sizes = {}
        missing = []
        for _, c in pairs:
            name = names.get(id(c))
            keys = [k for k in (name, c) if k in input_sizes]  # by name, or by the module itself
            if keys:
                sizes[id(c)] = input_sizes[keys[0]]
            else:
                missing.append(name)
        if missing:
            raise ArgumentError(f"input_sizes lacks {', '.join(missing)}; it needs every convolution of "
                                f"procrustes_units(model) by name.")
    plan = []
    for unit, conv in pairs:
        stride = 1 if strided == "stride1" else None
        size, name = sizes[id(conv)], names.get(id(conv), "?")
        try:  # check every size now, naming the convolution
            g = _geometry(conv, size, stride, None, None, None)
            g.check_support()
        except ArgumentError as e:
            hint = " (strided='stride1' clips the stride-1 operator instead)" if "divisible" in str(e) else ""
            raise ArgumentError(f"{name}: {e}{hint}") from None
        plan.append((unit, conv, name, size, stride))
    return plan


def procrustes_(model: nn.Module, example_input=None, *, input_sizes: Mapping | None = None, low: float = 1.0,
                high: float = 1.0, iterations: int = 1, parts: Iterable[str] = PARTS, strided: str = "exact"):
    """Project the convolutions of ``model``'s transition units once, in place (see
    :func:`project_conv_`), and report how near ``[low, high]`` their singular values now are.

    Parameters
    ----------
    model : nn.Module
    example_input : tensor, tuple or dict
        A batch the model runs on once (eval mode, no gradients) so that forward hooks read each
        convolution's spatial input size. Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    low, high, iterations : see :func:`project_conv_`
    parts : see :func:`procrustes_units`
    strided : {"exact", "stride1"}
        Which operator of a strided convolution to clip: its own (its stride must divide its
        input size), or the stride-1 operator of its kernel (see :func:`project_conv_`).

    Returns
    -------
    pandas.DataFrame
        One row per convolution: ``unit``, ``conv`` (its name), ``input_size``, ``stride`` (of the
        operator clipped), ``deviation_before`` and ``deviation_after`` (:func:`clip_deviation`,
        structural zeros left out) and ``structural_zeros`` (how many singular values are 0
        whatever the weights: non-zero for a 1x1 strided shortcut, which discards part of its input).

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> report = unravel.procrustes.procrustes_(net, torch.randn(2, 1, 32), iterations=5)
    >>> report.conv.tolist()
    ['stage2.0.residual.0', 'stage2.0.residual.3', 'stage3.0.residual.0', 'stage3.0.residual.3']
    >>> report.input_size.tolist(), report.stride.tolist()
    ([(32,), (16,), (16,), (8,)], [(2,), (1,), (2,), (1,)])
    >>> bool((report.deviation_after < report.deviation_before).all())
    True
    """
    import pandas as pd

    low, high = _bounds(low, high)
    iterations = check_int("iterations", iterations, 1)
    rows = []
    for unit, conv, name, size, stride in _plan(model, example_input, input_sizes, parts, strided):
        g = _geometry(conv, size, stride, None, None, None)
        before = clip_deviation(conv, size, low, high, stride=stride)
        project_conv_(conv, size, low, high, iterations=iterations, stride=stride)
        rows.append(dict(unit=unit.name, conv=name, input_size=g.n, stride=g.stride, deviation_before=before,
                         deviation_after=clip_deviation(conv, size, low, high, stride=stride),
                         structural_zeros=g.structural_zero_count()))
    return pd.DataFrame(rows, columns=["unit", "conv", "input_size", "stride", "deviation_before", "deviation_after",
                                       "structural_zeros"])


class ProcrustesCallback(Callback):
    """Train a Procrustes ResNet with :func:`unravel.train.fit`: after every ``every`` optimizer
    steps, clip the operator singular values of the transition units' convolutions into
    ``[low, high]`` (:func:`project_conv_`).

    Parameters
    ----------
    example_input : tensor, tuple or dict, optional
        A batch the model runs on once when training begins, to read each convolution's spatial
        input size (forward hooks, eval mode, no gradients). Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    every : int
        Project after steps ``every, 2*every, ...`` (Zaeemzadeh et al. project after the gradient
        update; their code does so at random half of the steps).
    low, high, iterations, parts, strided
        As in :func:`procrustes_`.
    at_start : bool
        Also project when training begins, so that training starts from constrained weights.

    Attributes
    ----------
    projections : int
        How many times the convolutions were projected.
    plan : list
        ``(unit, conv, name, input_size, stride)`` for each constrained convolution, once training began.

    Notes
    -----
    After each epoch the largest :func:`clip_deviation` over the constrained convolutions is
    added to the epoch's metrics as ``procrustes_deviation`` (measured after that epoch's test
    metrics, on the weights as they are then). With ``every > 1`` up to ``every - 1`` unprojected
    steps may follow the last projection; call :func:`procrustes_` after :func:`fit` for weights
    projected last.

    Examples
    --------
    >>> import torch, unravel
    >>> data = unravel.data.synthetic(80, input_shape=(1, 16), num_classes=2)  # 64 to train on
    >>> net = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1)
    >>> cb = unravel.procrustes.ProcrustesCallback(torch.zeros(1, 1, 16), every=2, iterations=3)
    >>> hist = unravel.train.fit(net, data, epochs=1, batch_size=16, callbacks=[cb], progress=False)
    >>> cb.projections, "procrustes_deviation" in hist[-1]
    (3, True)
    """

    def __init__(self, example_input=None, *, input_sizes: Mapping | None = None, every: int = 1,
                 low: float = 1.0, high: float = 1.0, iterations: int = 1, parts: Iterable[str] = PARTS,
                 strided: str = "exact", at_start: bool = True):
        if (example_input is None) == (input_sizes is None):
            raise ArgumentError("ProcrustesCallback needs exactly one of example_input (a batch, to measure each "
                                "convolution's input size) and input_sizes (a dict: convolution name -> size).")
        self.example_input = example_input
        self.input_sizes = input_sizes
        self.every = check_int("every", every, 1)
        self.low, self.high = _bounds(low, high)
        self.iterations = check_int("iterations", iterations, 1)
        self.parts = tuple(check_choice("parts", p, PARTS) for p in ((parts,) if isinstance(parts, str) else parts))
        self.strided = check_choice("strided", strided, STRIDED)
        if not isinstance(at_start, bool):
            raise ArgumentError(f"at_start={at_start!r} must be True or False.")
        self.at_start = at_start
        self.projections = 0
        self.plan: list = []

    def project(self, model: nn.Module | None = None) -> None:
        """Project every planned convolution once."""
        for _, conv, _, size, stride in self.plan:
            project_conv_(conv, size, self.low, self.high, iterations=self.iterations, stride=stride)
        self.projections += 1

    def deviation(self) -> float:
        """The largest :func:`clip_deviation` over the planned convolutions, as they are now."""
        return max((clip_deviation(conv, size, self.low, self.high, stride=stride)
                    for _, conv, _, size, stride in self.plan), default=0.0)

    def on_train_begin(self, model):
        self.plan = _plan(model, self.example_input, self.input_sizes, self.parts, self.strided)
        if self.at_start:
            self.project(model)

    def on_step_end(self, model, step, metrics):
        if step % self.every == 0:
            self.project(model)

    def on_epoch_end(self, model, metrics):
        metrics["procrustes_deviation"] = self.deviation()
