"""The two methods: the exact singular values (the full Jacobian from batched products), and the
``top`` largest and ``bottom`` smallest by block Golub-Kahan-Lanczos bidiagonalisation with full
reorthogonalisation, from products only. Neither checks the operator is linear.
"""

from __future__ import annotations

import torch

from .operator import _Linearised

__all__: list = []


def _exact(op: _Linearised, d_in: int, d_out: int, chunk: int) -> torch.Tensor:
    """All singular values, ``[g, min(d_in, d_out)]`` descending: the Jacobians row by row (one
    VJP per output coordinate, every example of the group at once), then ``svdvals``."""
    g = op.shape_in[0]
    eye = torch.eye(d_out, dtype=op.y.dtype, device=op.y.device)
    U = eye.unsqueeze(1).expand(-1, g, -1)         # [d_out, g, d_out]: e_k for every example
    J = op.vjps(U, chunk).transpose(0, 1)          # [g, d_out, d_in]: row k is e_k^T J
    return torch.linalg.svdvals(J)


def _project_out(B: torch.Tensor, W: torch.Tensor, coef: torch.Tensor | None = None) -> torch.Tensor:
    """``W`` ``[g, k, d]`` minus its projection on the orthonormal rows of ``B`` ``[g, j, d]``:
    block classical Gram-Schmidt with a second pass where the first removed most of a vector (the
    criterion of Daniel, Gragg, Kaufman and Stewart); the coefficients are added to ``coef``
    ``[g, j, k]``."""
    if B.shape[1] == 0:
        return W
    before = torch.linalg.vector_norm(W, dim=2)
    for _ in range(2):
        c = torch.bmm(B, W.transpose(1, 2))              # [g, j, k]
        W = W - torch.bmm(c.transpose(1, 2), B)
        if coef is not None:
            coef += c
        after = torch.linalg.vector_norm(W, dim=2)
        if bool((after > 0.7071 * before).all()):
            break
        before = after
    return W


def _extend(basis: torch.Tensor, count: int, W: torch.Tensor, scale: torch.Tensor, draw,
            room: int | None = None) -> torch.Tensor:
    """Orthonormalise the block ``W`` ``[g, k, d]`` against ``basis[:, :count]`` and store it as
    ``basis[:, count:count + k]``, for every example of the group: the block against the basis at
    once, then column by column within the block. Where a remainder is negligible against
    ``scale`` (the Krylov space is invariant), a fresh random unit vector orthogonal to the basis
    is stored instead, with a coefficient of exactly 0. With ``room < k``, only ``room`` columns
    are stored (the basis then spans its space) and the others get coefficients only.

    Returns the coefficients ``[g, count + k, k]``, so that ``W[:, c] = basis[:, :count + k]^T
    @ coef[:, :, c]``."""
    g, k, d = W.shape
    room = k if room is None else min(room, k)
    coef = W.new_zeros((g, count + k, k))
    W = _project_out(basis[:, :count], W, coef[:, :count])
    floor = torch.finfo(W.dtype).tiny
    for c in range(k):
        w = W[:, c:c + 1]
        top = count + min(c, room)
        w = _project_out(basis[:, count:top], w, coef[:, count:top, c:c + 1])
        if c >= room:  # no room: the remainder lies in the basis (up to rounding)
            continue
        w = w[:, 0]
        norm = torch.linalg.vector_norm(w, dim=1)
        tiny = norm <= scale * (d * torch.finfo(w.dtype).eps * 16)
        if bool(tiny.any()):
            fresh = _project_out(basis[:, :top], draw((g, 1, d)))
            fresh = _project_out(basis[:, :top], fresh)[:, 0]
            fresh = fresh / torch.linalg.vector_norm(fresh, dim=1, keepdim=True).clamp_min(floor)
            basis[:, top] = torch.where(tiny.unsqueeze(1), fresh, w / norm.clamp_min(floor).unsqueeze(1))
            coef[:, top, c] = torch.where(tiny, torch.zeros_like(norm), norm)
        else:
            basis[:, top] = w / norm.unsqueeze(1)
            coef[:, top, c] = norm
    return coef


def _lanczos(op: _Linearised, d_in: int, d_out: int, top: int, bottom: int, tol: float, max_vectors: int,
             block: int, chunk: int, draw) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Block Golub-Kahan-Lanczos bidiagonalisation of each example's Jacobian with full
    reorthogonalisation, every example of the group at once.

    With orthonormal bases ``Q`` (inputs) and ``U`` (outputs) grown ``block`` vectors at a time,
    ``J Q_m = U_m R_m`` (``R`` upper triangular: the coefficients of ``J q_j`` along ``U``) and
    ``J^T U_m = Q_{m+b} C`` (the coefficients of ``J^T u_j`` along ``Q``). The singular values of
    ``R_m`` approximate those of ``J`` (Rayleigh-Ritz, never above them); a Ritz triplet
    ``(s, U y, Q z)`` has residual ``|C[m:, :m] y|``. A block of ``block`` vectors finds up to
    ``block`` copies of a repeated singular value (a single vector finds one). It stops when the
    wanted values' residuals are below ``tol`` times the largest singular value, when a basis
    spans its whole space (then the values are exact), or at ``max_vectors`` vectors.

    Returns the values ``[g, n]`` descending (``n`` the basis size), ``n`` and whether each
    example converged ``[g]``.
    """
    g = op.shape_in[0]
    dtype, device = op.y.dtype, op.y.device
    full = min(d_in, d_out)
    M = min(full, max(max_vectors, top + bottom))        # most columns of U (and R)
    block = min(block, M)
    Mq = min(d_in, M + block)                            # most columns of Q
    Q = torch.empty((g, Mq, d_in), dtype=dtype, device=device)  # columns written before read
    U = torch.empty((g, M, d_out), dtype=dtype, device=device)
    R = torch.zeros((g, M, M), dtype=dtype, device=device)
    C = torch.zeros((g, Mq, M), dtype=dtype, device=device)
    scale = torch.zeros(g, dtype=dtype, device=device)  # the largest coefficient so far, per example
    _extend(Q, 0, draw((g, block, d_in)), scale, draw)
    m, mq = 0, block
    converged = torch.zeros(g, dtype=torch.bool)
    next_check = top + bottom
    values = None
    while True:
        cols = range(m, min(m + block, M, mq))
        P = op.jvps(Q[:, cols.start:cols.stop].transpose(0, 1), chunk)      # [b, g, d_out]
        coef = _extend(U, m, P.transpose(0, 1), scale, draw)
        R[:, :cols.stop, cols.start:cols.stop] = coef
        scale = torch.maximum(scale, coef.abs().amax(dim=(1, 2)))
        m = cols.stop
        W = op.vjps(U[:, cols.start:cols.stop].transpose(0, 1), chunk)      # [b, g, d_in]
        room = Mq - mq  # fewer than the block only where Q comes to span the input space
        coef = _extend(Q, mq, W.transpose(0, 1), scale, draw, room=room)
        C[:, :mq + min(room, len(cols)), cols.start:cols.stop] = coef[:, :mq + min(room, len(cols))]
        mq += min(room, len(cols))
        scale = torch.maximum(scale, coef.abs().amax(dim=(1, 2)))
        if m >= full:  # a basis spans its whole space: exact
            Rm = R[:, :m, :m] if full == d_in else C[:, :mq, :m]
            values = torch.linalg.svdvals(Rm.detach().to("cpu", torch.float64))
            converged = torch.ones(g, dtype=torch.bool)
            break
        if m >= next_check or m >= M:
            values, converged = _ritz(R, C, m, mq, top, bottom, tol)
            if bool(converged.all()) or m >= M:
                break
            next_check = m + max(block, m // 8)
    return values, m, converged


def _ritz(R, C, m, mq, top, bottom, tol):
    """Ritz values of ``R_m`` (descending, float64 on the CPU) and whether the wanted ones have
    converged, per example."""
    Rm = R[:, :m, :m].detach().to("cpu", torch.float64)
    below = C[:, m:mq, :m].detach().to("cpu", torch.float64)        # [g, b, m]
    Y, s, _ = torch.linalg.svd(Rm)                                   # Y[:, :, i]: left vector of s[:, i]
    resid = torch.linalg.vector_norm(torch.bmm(below, Y), dim=1)     # [g, m]
    wanted = torch.zeros(m, dtype=torch.bool)
    wanted[:min(top, m)] = True
    if bottom:
        wanted[max(m - bottom, 0):] = True
    bound = tol * s[:, :1].clamp_min(torch.finfo(torch.float64).tiny)
    return s, (resid[:, wanted] <= bound).all(dim=1)
