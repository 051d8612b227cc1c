"""The mathematics: a convolution kernel <-> its per-frequency channel matrices (the operator's
singular values are theirs), clipping them into a band, and restricting back to the kernel's
support. It checks no argument (:mod:`~unravel.procrustes.geometry` does).
"""

from __future__ import annotations

import math

import torch

from .geometry import _Geometry
from .polar import newton_schulz_polar

__all__: list = []


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


def _clip_matrices(a: torch.Tensor, low: float, high: float, method: str = "svd", steps: int = 10) -> torch.Tensor:
    if method == "newton_schulz":  # every singular value set to one target (low == high)
        return newton_schulz_polar(a, steps) * high
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


def _clip_spectrum(spec: torch.Tensor, g: _Geometry, low: float, high: float, live_only: bool = False,
                   method: str = "svd", steps: int = 10) -> torch.Tensor:
    """Each frequency's matrix with its singular values clipped into [low, high]. Computed once
    per pair ``{f, -f}`` and conjugated for ``-f`` (real for ``f = -f``), so that the kernel stays
    real even where the nearest clipped matrix is not unique (a rank-deficient matrix, low > 0).

    ``live_only``: clip only the columns the kernel's support can fill and leave the others at
    zero (what restriction to the support keeps anyway; without it the structural zeros would be
    lifted into columns that restriction then drops, in directions that are not unique).

    ``method="newton_schulz"``: each matrix's polar factor by ``steps`` Newton-Schulz iterations,
    times ``high`` (which must equal ``low``), instead of the SVD."""
    if live_only:
        live = g.live_columns().to(spec.device)
        if not bool(live.all()):
            out = torch.zeros_like(spec)
            out[..., live] = _clip_spectrum(spec[..., live], g, low, high, method=method, steps=steps)
            return out
    flat = spec.reshape(-1, *spec.shape[g.d:])
    index, mirror, own = _frequency_pairs(g.m, spec.device)
    clipped = torch.empty((len(index),) + flat.shape[1:], dtype=flat.dtype, device=flat.device)
    if bool((~own).any()):
        clipped[~own] = _clip_matrices(flat[index[~own]], low, high, method, steps)
    if bool(own.any()):  # f = -f: the matrix is real; clip it in real arithmetic
        clipped[own] = _clip_matrices(flat[index[own]].real, low, high, method, steps).to(flat.dtype)
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
