"""Jacobian spectra of residual units: the singular values of each unit's input-output Jacobian.

A unit maps its input ``x_l`` to its output ``x_{l+1} = post(shortcut(x_l) + residual(x_l))``.
Its Jacobian at one example, ``J = d x_{l+1} / d x_l`` (the input and output flattened, the batch
dimension dropped), says how the unit stretches perturbations: singular values near 1 preserve
the norm of the signal forward and of the gradient backward (Zaeemzadeh et al. [1]_), values
above 1 amplify, values below 1 damp. :func:`jacobian_spectra` measures them per unit and per
example, either exactly (the full Jacobian from batched vector-Jacobian products, then its
singular values) or the ``top`` largest (and ``bottom`` smallest) from Jacobian-vector and
vector-Jacobian products only, by block Golub-Kahan-Lanczos bidiagonalisation with full
reorthogonalisation.

The measurement runs in eval mode (BatchNorm uses its running statistics, so a unit acts on each
example separately); every module's ``training`` flag is restored afterwards and nothing else of
the model is touched. Inside an active lesion (:func:`unravel.lesion.delete`,
:func:`unravel.lesion.reorder`) it measures the units of the lesioned network: a deleted unit is
its bypass ``post(shortcut(x))``.

References
----------
.. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can Become
   Extremely Deep?" IEEE TPAMI 43(11), 2021.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ._utils import as_tuple, check_choice, check_int, eval_mode
from .errors import ArgumentError, ArgumentTypeError
from .interventions import intervene
from .units import ResidualUnit, find_units

__all__ = ["jacobian_spectra"]

METHODS = ("auto", "exact", "lanczos")
COLUMNS = ["unit", "name", "kind", "projection", "example", "rank", "singular_value"]
#: Memory (bytes) that one group of examples may take for its Jacobians or Lanczos bases.
MEMORY_BUDGET = 512 * 2**20


class _Stop(Exception):
    """Raised inside the recording pass once every requested unit has run (skips the rest)."""


# ------------------------------------------------------------------------------------------
# Recording the units' inputs


class _Recorded:
    """What reached one unit: its input and the keyword arguments its block passed; and its
    output's shape and dtype (the output itself is computed again when needed, so that only the
    inputs of the measured units are kept)."""

    __slots__ = ("position", "unit", "x", "kw", "out_shape", "out_dtype")

    def __init__(self, position, unit, x, kw, y):
        self.position, self.unit, self.x, self.kw = position, unit, x, kw
        self.out_shape, self.out_dtype = tuple(y.shape), y.dtype

    def output(self) -> torch.Tensor:
        with torch.no_grad():
            return self.unit.forward(self.x, **self.kw)


def _record(model, units, inputs) -> dict[int, _Recorded]:
    wanted = {u.index for u in units}
    seen: dict[int, _Recorded] = {}

    def compute(unit, x, position, **kw):
        y = unit.forward(x, **kw)
        p = position.index
        if p in wanted:
            if p in seen:
                raise ArgumentError(f"unit {p} ({position.name}) ran twice in one forward pass; its Jacobian "
                                    "spectrum is not defined by one input (no weight sharing).")
            # a copy: code between units may change a unit's input in place later
            seen[p] = _Recorded(position, unit, x.detach().clone(), kw, y)
            if len(seen) == len(wanted):
                raise _Stop
        return y

    with torch.no_grad(), intervene(model, compute=compute):
        try:
            if isinstance(inputs, dict):
                model(**inputs)
            else:
                model(*inputs)
        except _Stop:
            pass
    missing = [f"{u.index} ({u.name})" for u in units if u.index not in seen]
    if missing:
        raise ArgumentError(f"units {', '.join(missing)} did not run in the forward pass on these inputs; "
                            "cannot measure their Jacobians.")
    return seen


# ------------------------------------------------------------------------------------------
# Products with the Jacobian of a unit at a group of examples


def _rows_of(value, rows, batch):
    """``value`` with every tensor whose first dimension is the batch cut to ``rows`` (inside
    tuples, lists and dicts too); anything else unchanged."""
    if torch.is_tensor(value):
        return value.index_select(0, rows) if value.dim() and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _rows_of(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_rows_of(v, rows, batch) for v in value)
    return value


def _unit_map(rec: _Recorded, rows: torch.Tensor, embed: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unit as a map of the examples ``rows``: ``[g, *in] -> [g, *out]``. Sliced, it runs on
    those examples alone (keyword tensors with a batch dimension cut to them); embedded, it runs
    on the whole recorded batch with those rows replaced, and reads their outputs."""
    unit, kw, x_all = rec.unit, rec.kw, rec.x
    if embed:
        return lambda v: unit.forward(x_all.index_copy(0, rows, v), **kw).index_select(0, rows)
    kw_rows = _rows_of(kw, rows, x_all.shape[0])
    return lambda v: unit.forward(v, **kw_rows)


class _Linearised:
    """A unit's map at a group of examples, ``f: [g, *in] -> [g, *out]``, with products by its
    per-example Jacobians on flattened vectors ``[g, d_in]`` and ``[g, d_out]``. It assumes
    (and :func:`jacobian_spectra` checks as far as cheaply possible) that the map acts on each
    example separately, so that one product with the batch is one product per example."""

    def __init__(self, fn, x):
        self.fn, self.shape_in = fn, tuple(x.shape)
        self.x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            self.y = fn(self.x)
        self.shape_out = tuple(self.y.shape)
        self.constant = not self.y.requires_grad  # the output does not depend on the input
        self._jvp_mode = None  # "double" or "forward", chosen at the first product
        self._dual = None  # (u, J^T u) with a graph in u: Jacobian-vector products by double backward

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """``J_i^T u_i`` per example: ``u`` ``[g, d_out]`` -> ``[g, d_in]``."""
        if self.constant:
            return u.new_zeros((u.shape[0], math.prod(self.shape_in[1:])))
        got, = torch.autograd.grad(self.y, self.x, u.reshape(self.shape_out).contiguous(), retain_graph=True,
                                   allow_unused=True)
        if got is None:
            return u.new_zeros((u.shape[0], math.prod(self.shape_in[1:])))
        return got.reshape(u.shape[0], -1)

    def vjps(self, U: torch.Tensor, chunk: int) -> torch.Tensor:
        """``J_i^T U[k, i]`` for a stack ``U`` ``[K, g, d_out]`` -> ``[K, g, d_in]``, ``chunk`` at a
        time (batched by ``is_grads_batched`` where the backward supports it)."""
        if self.constant or chunk <= 1 or U.shape[0] == 1:
            return torch.stack([self.vjp(u) for u in U])
        return self._batched(self.y, self.x, U, self.shape_out, self.shape_in, chunk, self.vjp)

    def jvps(self, V: torch.Tensor, chunk: int) -> torch.Tensor:
        """``J_i V[k, i]`` for a stack ``V`` ``[K, g, d_in]`` -> ``[K, g, d_out]`` (batched where
        the products come from double backward)."""
        if self.constant:
            return torch.stack([self._zeros_out(v) for v in V])
        if self._jvp_mode is None:
            first = self.jvp(V[0])
            if V.shape[0] == 1:
                return first.unsqueeze(0)
            return torch.cat([first.unsqueeze(0), self.jvps(V[1:], chunk)])
        if self._jvp_mode == "forward" or chunk <= 1 or V.shape[0] == 1:
            return torch.stack([self.jvp(v) for v in V])
        u, jtu = self._dual
        if jtu is None or not jtu.requires_grad:
            return torch.stack([self._zeros_out(v) for v in V])
        return self._batched(jtu, u, V, self.shape_in, self.shape_out, chunk, self._jvp_double)

    @staticmethod
    def _batched(out, wrt, G, shape_g, shape_wrt, chunk, single):
        pieces = []
        for start in range(0, G.shape[0], chunk):
            part = G[start:start + chunk]
            try:
                got, = torch.autograd.grad(out, wrt, part.reshape((part.shape[0],) + shape_g), retain_graph=True,
                                           allow_unused=True, is_grads_batched=True)
            except (RuntimeError, NotImplementedError):  # a backward without batching rules
                return torch.cat(pieces + [torch.stack([single(g) for g in G[start:]])])
            if got is None:
                got = part.new_zeros((part.shape[0],) + shape_wrt)
            pieces.append(got.reshape(part.shape[0], part.shape[1], -1))
        return torch.cat(pieces)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J_i v_i`` per example: ``v`` ``[g, d_in]`` -> ``[g, d_out]``. By double backward (the
        transpose of the vector-Jacobian product, the faster on the units measured) where it
        passes an adjoint test, else by forward-mode AD."""
        if self.constant:
            return self._zeros_out(v)
        if self._jvp_mode is None:
            self._jvp_mode = self._choose(v)
        if self._jvp_mode == "double":
            return self._jvp_double(v)
        return self._jvp_forward(v)

    def _zeros_out(self, v):
        return v.new_zeros((v.shape[0], math.prod(self.shape_out[1:])))

    def _jvp_forward(self, v):
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level(), torch.enable_grad():  # (grad on: no fused attention fast path)
            out = self.fn(fwAD.make_dual(self.x.detach(), v.reshape(self.shape_in).contiguous()))
            tangent = fwAD.unpack_dual(out).tangent
        return self._zeros_out(v) if tangent is None else tangent.detach().reshape(v.shape[0], -1)

    def _jvp_double(self, v):
        if self._dual is None:
            with torch.enable_grad():
                u = torch.zeros(self.shape_out, dtype=self.y.dtype, device=self.y.device, requires_grad=True)
                jtu, = torch.autograd.grad(self.y, self.x, u, create_graph=True, allow_unused=True)
            self._dual = (u, jtu)
        u, jtu = self._dual
        if jtu is None or not jtu.requires_grad:
            return self._zeros_out(v)
        got, = torch.autograd.grad(jtu, u, v.reshape(self.shape_in).contiguous(), retain_graph=True,
                                   allow_unused=True)
        return self._zeros_out(v) if got is None else got.reshape(v.shape[0], -1)

    def _choose(self, v) -> str:
        """``"double"`` where double backward runs and satisfies ``<w, J v> = <J^T w, v>`` for a
        random ``w`` (a backward that is not differentiable in its cotangent fails it), else
        ``"forward"``."""
        try:
            jv = self._jvp_double(v)
        except (RuntimeError, NotImplementedError):
            self._dual = None
            return "forward"
        w = torch.randn(jv.shape, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
        w = w.to(jv.device, jv.dtype)
        jtw = self.vjp(w)
        lhs, rhs = float((w * jv).sum()), float((jtw * v).sum())
        scale = float(w.norm() * jv.norm() + jtw.norm() * v.norm())
        tol = 1e-8 if jv.dtype == torch.float64 else 1e-3
        if abs(lhs - rhs) <= tol * scale:
            return "double"
        self._dual = None  # free the graph of the backward
        return "forward"


# ------------------------------------------------------------------------------------------
# The two methods


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


# ------------------------------------------------------------------------------------------
# Arguments


def _draws(generator):
    """``draw(shape, dtype, device)``: standard normal tensors from one CPU ``torch.Generator``
    (deterministic given the seed)."""
    if isinstance(generator, torch.Generator):
        gen = generator
    elif generator is None:
        gen = torch.Generator()
        gen.seed()
    elif isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        gen = torch.Generator().manual_seed(int(generator))
    else:
        raise ArgumentTypeError(f"generator must be None, an int seed or a torch.Generator; got "
                                f"{type(generator).__name__}.")

    def make(dtype, device):
        def draw(shape):
            return torch.randn(shape, generator=gen, dtype=torch.float64, device=gen.device).to(device, dtype)
        return draw

    return make


@contextlib.contextmanager
def _math_attention():
    """Scaled dot-product attention by its composite ("math") kernel: the fused kernels have no
    forward-mode derivatives and no double backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _groups(batch, size):
    return [torch.arange(s, min(s + size, batch)) for s in range(0, batch, size)]


# ------------------------------------------------------------------------------------------
# The public function


def jacobian_spectra(model: nn.Module, inputs, *, units=None, top: int | None = None, bottom: int | None = None,
                     method: str = "auto", exact_max: int = 4096, tol: float | None = None,
                     max_iter: int | None = None, block_size: int | None = None, batch_size: int | None = None,
                     chunk_size: int | None = None, generator: Any = 0, progress: bool = False):
    """Singular values of each unit's input-output Jacobian, per example.

    For unit ``l`` and example ``i``, the Jacobian ``J = d unit_l(x_l)_i / d (x_l)_i`` of the
    unit's output with respect to its own input at that example, both flattened (the input shape
    without its batch dimension: a unit on ``[B, C, H, W]`` has ``C*H*W`` input coordinates). Its
    singular values say how the unit scales perturbations of its input: near 1 it preserves
    their norm (and the gradient's on the way back), as Zaeemzadeh et al. argue identity
    shortcuts do.

    Parameters
    ----------
    model : nn.Module
        Any model :func:`unravel.find_units` supports. Measured in eval mode; every module's
        ``training`` flag is restored afterwards, nothing else is touched.
    inputs : tensor, tuple of tensors, or dict of keyword inputs
        One batch; the first dimension of each unit's input is its batch (example) dimension.
    units : int, str, ResidualUnit or iterable of them, optional
        The units to measure (indices, names or units, as in :func:`unravel.lesion.delete`);
        default all.
    top : int, optional
        Only the ``top`` largest singular values (``rank`` 0..top-1).
    bottom : int, optional
        Also (or only) the ``bottom`` smallest singular values (ranks counted from the largest,
        so the smallest has rank ``min(d_in, d_out) - 1``). Exact on units small enough for
        ``method="exact"``; by Lanczos the smallest values converge slowly (often only once the
        basis nearly spans the space, where the result is exact): a warning says when they did
        not within ``max_iter``.
    method : {"auto", "exact", "lanczos"}
        ``"exact"``: the full Jacobian of each example from ``d_out`` vector-Jacobian products
        (all examples of a group at once), then ``torch.linalg.svdvals``; it costs ``d_out``
        backward passes through the unit and ``d_out * d_in`` numbers per example.
        ``"lanczos"``: block Golub-Kahan-Lanczos bidiagonalisation with full
        reorthogonalisation, from Jacobian-vector and vector-Jacobian products only, until the
        wanted values' residuals fall below ``tol``; it needs ``top`` or ``bottom``.
        ``"auto"``: exact when ``top`` is not given and both dimensions are at most
        ``exact_max``; otherwise Lanczos.
    exact_max : int
        The largest input or output dimension for which ``"auto"`` builds full Jacobians.
    tol : float, optional
        Lanczos stopping rule: every wanted Ritz value's residual at most ``tol`` times the
        largest singular value. Default the square root of the dtype's machine epsilon (about
        1.5e-8 in float64, 3.5e-4 in float32); the values themselves are usually more accurate
        (a Ritz value is never above the singular value it approximates).
    max_iter : int, optional
        Most Lanczos vectors per example (each costs one Jacobian-vector and one vector-Jacobian
        product); default ``max(40 * (top + bottom), 300)``, never more than
        ``min(d_in, d_out)``, where the result is exact. A warning names the units with examples
        that did not converge.
    block_size : int, optional
        Lanczos vectors added per step. A block of ``b`` vectors finds up to ``b`` copies of a
        repeated singular value (one vector finds one: a unit whose residual branch is zero has
        the singular value 1 many times over). Default ``max(top, bottom)``, safe for any
        multiplicity; ``block_size=1`` needed two to five times fewer products and less time on
        ResNet units whose largest values are distinct.
    batch_size : int, optional
        Examples measured together (one product serves all of them). Default: as many as keep
        the Jacobians (exact) or Lanczos bases under 512 MiB.
    chunk_size : int, optional
        Products batched per backward call (``is_grads_batched``; 1 is a loop of single
        products). Default 128 on a GPU; on a CPU 16 for the exact method and 1 for Lanczos
        (measured fastest there).
    generator : int, torch.Generator or None
        Seed of the Lanczos start vectors (default 0: the same values every call); None draws a
        fresh seed.
    progress : bool
        A tqdm bar over units.

    Returns
    -------
    pandas.DataFrame
        One row per unit, example and singular value, with columns ``unit`` (its position, as
        :func:`unravel.find_units` numbers it), ``name``, ``kind``, ``projection``, ``example``
        (index in the batch), ``rank`` (0 = largest) and ``singular_value``. ``frame.attrs["units"]``
        lists per unit its dimensions, the method used and (Lanczos) the block size, the
        vectors used and how many examples did not converge.

    Raises
    ------
    ArgumentError
        For an unknown method, ``top`` or ``bottom`` below 1 or above a unit's number of singular
        values ``min(d_in, d_out)``, an unknown unit, units that did not run, a unit too large for
        ``"auto"`` without ``top``, or ``"lanczos"`` without ``top`` or ``bottom``.

    Notes
    -----
    Products with a group of examples give every example its own Jacobian product, which holds
    when the unit acts on each example separately, as in eval mode (BatchNorm with running
    statistics, convolutions, attention within a sequence). Each group's output is compared with
    the unit's recorded output, and one vector-Jacobian product checks that the first example's
    output does not depend on the others' inputs; where either fails (keyword tensors that could
    not be cut to the group, a unit that mixes examples), the unit is measured one example at a
    time inside the whole recorded batch, the others held fixed: ``d unit(x)_i / d x_i``.
    Jacobian-vector products come from double backward (the transpose of the vector-Jacobian
    product) where it passes an adjoint test on the unit, else from forward-mode AD; scaled
    dot-product attention runs on its composite kernel while measuring (the fused kernels have
    neither).

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> spectra = unravel.jacobian_spectra(net, torch.randn(2, 1, 16))
    >>> spectra.columns.tolist()
    ['unit', 'name', 'kind', 'projection', 'example', 'rank', 'singular_value']
    >>> spectra.groupby("name").size().to_dict()  # 3 units x 2 examples x 64 singular values
    {'stage1.0': 128, 'stage2.0': 128, 'stage3.0': 128}
    >>> top = unravel.jacobian_spectra(net, torch.randn(2, 1, 16), units="stage1.0", top=3)
    >>> top["rank"].tolist()
    [0, 1, 2, 0, 1, 2]
    """
    import pandas as pd

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"jacobian_spectra expects a torch.nn.Module, got {type(model).__name__}.")
    check_choice("method", method, METHODS)
    top = check_int("top", top, minimum=1, allow_none=True)
    bottom = check_int("bottom", bottom, minimum=1, allow_none=True)
    exact_max = check_int("exact_max", exact_max, minimum=1)
    max_iter = check_int("max_iter", max_iter, minimum=1, allow_none=True)
    block_size = check_int("block_size", block_size, minimum=1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1):
        raise ArgumentError(f"tol={tol!r} must be a number in (0, 1) or None.")
    if method == "lanczos" and top is None and bottom is None:
        raise ArgumentError("method='lanczos' finds the top (or bottom) singular values only: give top=k "
                            "(or bottom=k), or use method='exact' for the whole spectrum.")
    make_draw = _draws(generator)
    if not isinstance(inputs, dict):
        inputs = as_tuple(inputs)
        if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].dim() == 0 or inputs[0].shape[0] == 0:
            raise ArgumentError("inputs must be a non-empty batch (a tensor, a tuple of tensors, or a dict of "
                                "keyword inputs).")
    all_units = find_units(model)
    if units is None:
        chosen = list(all_units)
    else:
        from .lesion import resolve_units

        chosen = sorted(resolve_units(all_units, units), key=lambda u: u.index)

    with eval_mode(model), _math_attention():
        recorded = _record(model, chosen, inputs)
        plans = [_plan(u, recorded[u.index], top, bottom, method, exact_max) for u in chosen]

        from tqdm.auto import tqdm

        columns = {c: [] for c in COLUMNS}
        info, unconverged = [], []
        for u, (how, d_in, d_out) in tqdm(list(zip(chosen, plans)), desc="jacobian", unit="unit",
                                          disable=not progress, leave=False):
            rec = recorded[u.index]
            values, ranks, meta = _measure(rec, how, d_in, d_out, top, bottom, tol, max_iter, block_size,
                                           batch_size, chunk_size, make_draw)
            if meta.get("unconverged"):
                unconverged.append(f"{u.index} ({u.name}): {meta['unconverged']} of {values.shape[0]} examples")
            info.append({"unit": u.index, "name": u.name, "input_dim": d_in, "output_dim": d_out, **meta})
            B, k = values.shape
            columns["unit"].append(np.full(B * k, u.index, dtype=np.int64))
            columns["name"].extend([u.name] * (B * k))
            columns["kind"].extend([u.kind] * (B * k))
            columns["projection"].append(np.full(B * k, u.projection, dtype=bool))
            columns["example"].append(np.repeat(np.arange(B, dtype=np.int64), k))
            columns["rank"].append(np.tile(np.asarray(ranks, dtype=np.int64), B))
            columns["singular_value"].append(values.reshape(-1))
    if unconverged:
        warnings.warn("jacobian_spectra: Lanczos did not reach tol within max_iter for units "
                      + "; ".join(unconverged) + ". Raise max_iter (or tol), or use method='exact'.",
                      RuntimeWarning, stacklevel=2)
    frame = pd.DataFrame({
        "unit": np.concatenate(columns["unit"]) if columns["unit"] else np.zeros(0, np.int64),
        "name": pd.Series(columns["name"], dtype=object),
        "kind": pd.Series(columns["kind"], dtype=object),
        "projection": np.concatenate(columns["projection"]) if columns["projection"] else np.zeros(0, bool),
        "example": np.concatenate(columns["example"]) if columns["example"] else np.zeros(0, np.int64),
        "rank": np.concatenate(columns["rank"]) if columns["rank"] else np.zeros(0, np.int64),
        "singular_value": (np.concatenate(columns["singular_value"]) if columns["singular_value"]
                           else np.zeros(0, np.float64)),
    }, columns=COLUMNS)
    frame.attrs["units"] = info
    return frame


def _plan(unit: ResidualUnit, rec: _Recorded, top, bottom, method, exact_max) -> tuple[str, int, int]:
    """The method for one unit, and its dimensions; checks ``top`` and ``bottom`` against them."""
    if not rec.x.is_floating_point() or not rec.out_dtype.is_floating_point:
        raise ArgumentError(f"unit {unit.index} ({unit.name}) maps {rec.x.dtype} to {rec.out_dtype}; Jacobians need "
                            "floating-point inputs and outputs.")
    d_in, d_out = math.prod(rec.x.shape[1:]), math.prod(rec.out_shape[1:])
    full = min(d_in, d_out)
    for name, k in (("top", top), ("bottom", bottom)):
        if k is not None and k > full:
            raise ArgumentError(f"{name}={k} is larger than the number of singular values of unit {unit.index} "
                                f"({unit.name}), min(d_in, d_out) = min({d_in}, {d_out}) = {full}; give "
                                f"{name} <= {full} (or choose units=...).")
    if method == "auto":
        small = max(d_in, d_out) <= exact_max
        if top is None and bottom is None and not small:
            raise ArgumentError(f"unit {unit.index} ({unit.name}) has {d_in} input and {d_out} output coordinates, "
                                f"more than exact_max={exact_max}: give top=k for its k largest singular values "
                                "(Lanczos), or method='exact' (or a larger exact_max) for its full spectrum.")
        method = "exact" if top is None and small else "lanczos"
    return method, d_in, d_out


def _measure(rec: _Recorded, how, d_in, d_out, top, bottom, tol, max_iter, block_size, batch_size, chunk_size,
             make_draw):
    """Singular values ``[B, k]`` (numpy, float64), their ranks, and what was done."""
    x = rec.x
    B = x.shape[0]
    dtype, device = x.dtype, x.device
    elem = torch.finfo(dtype).bits // 8
    full = min(d_in, d_out)
    top_k, bottom_k = (top or 0), (bottom or 0)
    # measured on a CPU: batched products help the exact method a little and slow Lanczos's
    # blocks (double backward under vmap) by about 2x
    cpu_chunk = 16 if how == "exact" else 1
    chunk = chunk_size if chunk_size is not None else (cpu_chunk if device.type == "cpu" else 128)
    if how == "exact":
        per_example = (2 * d_out * d_in + d_in + d_out) * elem
    else:
        block = block_size if block_size is not None else max(top_k, bottom_k)
        if max_iter is None:
            max_iter = max(40 * (top_k + bottom_k), 300)
        tol = tol if tol is not None else math.sqrt(torch.finfo(dtype).eps)
        vectors = min(full, max(max_iter, top_k + bottom_k))
        per_example = ((2 * vectors + block) * (d_in + d_out) + 2 * vectors * vectors) * elem
    size = batch_size or max(1, min(B, MEMORY_BUDGET // max(per_example, 1)))
    draw = make_draw(dtype, device)

    ranks = list(range(full)) if top is None and bottom is None else sorted(
        set(range(top_k)) | set(range(full - bottom_k, full)))

    def columns(n):
        # n <= full values, descending: the largest stand for the largest of J, and (Lanczos,
        # n < full) the i-th smallest Ritz value for the i-th smallest singular value
        return [r if n == full or r < top_k else n - (full - r) for r in ranks]

    embed, y_full = False, None
    pieces, meta = [], {"method": how}
    total_steps, unconverged = 0, 0
    groups = _groups(B, size)
    g_index = 0
    while g_index < len(groups):
        rows = groups[g_index].to(device)
        try:
            op = _Linearised(_unit_map(rec, rows, embed), x.index_select(0, rows))
        except Exception:
            if embed:
                raise
            op = None  # keyword tensors that do not fit the group (a mask cut where it should not be)
        if not embed and y_full is None:
            y_full = rec.output()
        if not embed and (op is None or not _reproduces(op.y, y_full.index_select(0, rows)) or _mixes(op)):
            # the group alone does not compute what the unit computed in the batch, or its
            # examples interact: this and the later groups one example at a time, inside the
            # recorded batch
            embed = True
            groups = [r for grp in groups[g_index:] for r in grp.split(1)]
            g_index = 0
            continue
        if how == "exact":
            s = _exact(op, d_in, d_out, chunk)
        else:
            s, steps_taken, conv = _lanczos(op, d_in, d_out, top_k, bottom_k, tol, max_iter, block, chunk, draw)
            total_steps = max(total_steps, steps_taken)
            unconverged += int((~conv).sum())
        s = s.detach().to("cpu", torch.float64)
        pieces.append(s[:, columns(s.shape[1])])
        del op
        g_index += 1
    values = torch.cat(pieces).numpy()
    if how == "lanczos":
        meta.update(block=block, vectors=total_steps, unconverged=unconverged)
    if embed:
        meta["one_example_at_a_time"] = True
    return values, ranks, meta


def _mixes(op: _Linearised) -> bool:
    """Whether the output of the group's first example reaches the inputs of the others (one
    vector-Jacobian product: exact zeros where the unit acts on each example separately)."""
    if op.shape_in[0] < 2 or op.constant:
        return False
    u = torch.zeros((op.shape_out[0], math.prod(op.shape_out[1:])), dtype=op.y.dtype, device=op.y.device)
    u[0] = 1.0
    return bool((op.vjp(u)[1:] != 0).any())


def _reproduces(y: torch.Tensor, recorded: torch.Tensor) -> bool:
    """Whether a group's output equals the rows the unit computed in the whole batch (up to the
    rounding of another batch size)."""
    if y.shape != recorded.shape:
        return False
    if y.is_floating_point():
        scale = float(recorded.abs().max()) if recorded.numel() else 0.0
        # loose in low precision: TF32 convolutions round differently at another batch size
        tol = (1e-8 if y.dtype == torch.float64 else 1e-3) * max(scale, 1.0)
        return bool(torch.allclose(y.detach(), recorded, rtol=0.0, atol=tol))
    return bool(torch.equal(y.detach(), recorded))
