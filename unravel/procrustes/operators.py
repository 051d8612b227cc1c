"""One convolution at a time: its singular values as an operator (:func:`conv_singular_values`),
how far they sit from a band (:func:`clip_deviation`), and the projection of its kernel onto
operators with singular values in the band (:func:`project_kernel`, :func:`project_conv_`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._utils import check_choice, check_int
from ..errors import ArgumentError
from .geometry import _bounds, _geometry, _is_conv
from .polar import METHODS
from .spectrum import (_clip_matrices, _clip_spectrum, _from_spectrum, _full_kernel, _restrict, _spectrum, _svdvals,
                       _work_dtype_device)

__all__ = ["conv_singular_values", "clip_deviation", "project_kernel", "project_conv_"]


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
    if _pointwise(g):  # every frequency holds the kernel's own matrices: their values, prod(n) times each
        values = torch.linalg.svdvals(_matrices(g)).flatten().repeat(math.prod(g.n))
        return values.sort(descending=True).values.to(device=g.weight.device, dtype=g.weight.dtype)
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
                   restrict: bool = True, stride=None, padding=None, dilation=None, groups=None,
                   method: str = "svd", steps: int = 10) -> torch.Tensor:
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
    method : {"svd", "newton_schulz"}
        How each frequency's matrix is projected: ``"svd"`` clips its singular values exactly;
        ``"newton_schulz"`` (Zaeemzadeh et al.'s code) takes its polar factor by ``steps``
        iterations (:func:`newton_schulz_polar`) and scales it to ``high``, which must then equal
        ``low``: every singular value is set to that one target, nearly (exactly as ``steps``
        grows, for full-rank matrices).
    steps : int
        Newton-Schulz iterations (``method="newton_schulz"`` only).

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
    method, steps = _method(method, steps, low, high)
    if not isinstance(restrict, bool):
        raise ArgumentError(f"restrict={restrict!r} must be True or False.")
    if not restrict and iterations != 1:
        raise ArgumentError(f"iterations={iterations} needs restrict=True: without restriction one clip is exact.")
    g = _geometry(conv_or_weight, input_size, stride, padding, dilation, groups)
    c_in_g = g.weight.shape[1]
    if not restrict:
        full = _from_spectrum(_clip_spectrum(_spectrum(_full_kernel(g), g), g, low, high, method=method, steps=steps),
                              g, c_in_g)
        # as a kernel read with dilation 1 from offset -padding: tap i holds offset i - padding
        full = torch.roll(full, shifts=g.padding, dims=tuple(range(2, 2 + g.d)))
        return full.to(device=g.weight.device, dtype=g.weight.dtype)
    g.check_support()
    if _pointwise(g):  # the same matrices at every frequency (up to a phase): project them once, exactly as below
        w = _matrices(g)
        for _ in range(iterations):
            w = _clip_matrices(w, low, high, method, steps)
        return w.reshape(g.weight.shape).to(device=g.weight.device, dtype=g.weight.dtype)
    weight = g.weight
    for _ in range(iterations):
        spec = _clip_spectrum(_spectrum(_full_kernel(g), g), g, low, high, live_only=True, method=method, steps=steps)
        full = _from_spectrum(spec, g, c_in_g)
        g.weight = _restrict(full, g)
    weight, g.weight = g.weight, weight
    return weight.to(device=g.weight.device, dtype=g.weight.dtype)


def project_conv_(conv: nn.Module, input_size, low: float = 1.0, high: float = 1.0, *, iterations: int = 1,
                  stride=None, method: str = "svd", steps: int = 10) -> nn.Module:
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
    method, steps
        As in :func:`project_kernel` (``"newton_schulz"``: Zaeemzadeh et al.'s projection).

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
    new = project_kernel(conv, input_size, low, high, iterations=iterations, stride=stride, method=method, steps=steps)
    with torch.no_grad():
        conv.weight.copy_(new)
    return conv


def _method(method, steps, low, high):
    """Check a projection method and its iterations: Newton-Schulz sets every value to one target."""
    check_choice("method", method, METHODS)
    steps = check_int("steps", steps, 1)
    if method == "newton_schulz" and low != high:
        raise ArgumentError(f"method='newton_schulz' sets every singular value to one target (the polar factor, "
                            f"scaled); give low == high, not [{low}, {high}] (method='svd' clips into a band).")
    return method, steps


def _pointwise(g) -> bool:
    """A 1x1 kernel's stride-1 operator: every frequency's matrix is the kernel's (times a phase)."""
    return all(k == 1 for k in g.k) and all(s == 1 for s in g.stride)


def _matrices(g) -> torch.Tensor:
    """A 1x1 kernel as ``[groups, c_out/groups, c_in/groups]`` matrices, in float64."""
    dtype, device = _work_dtype_device(g.weight)
    w = g.weight.to(device=device, dtype=dtype)
    return w.reshape(g.groups, w.shape[0] // g.groups, w.shape[1])
