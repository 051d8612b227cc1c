"""A unit's Jacobian at a group of examples as a linear operator: Jacobian-vector and
vector-Jacobian products of the unit as a map of those examples (:class:`_Linearised`). It does
not form the Jacobian (:mod:`~unravel.jacobian.lanczos` does, for the exact method).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._utils import rows_of
from .record import _Recorded

__all__: list = []


def _unit_map(rec: _Recorded, rows: torch.Tensor, embed: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unit as a map of the examples ``rows``: ``[g, *in] -> [g, *out]``. Sliced, it runs on
    those examples alone (keyword tensors with a batch dimension cut to them); embedded, it runs
    on the whole recorded batch with those rows replaced, and reads their outputs."""
    unit, kw, x_all = rec.unit, rec.kw, rec.x
    if embed:
        return lambda v: unit.forward(x_all.index_copy(0, rows, v), **kw).index_select(0, rows)
    kw_rows = rows_of(kw, rows, x_all.shape[0])
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
