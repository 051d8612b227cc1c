"""Veit et al.'s sampling estimator of gradient magnitude by path length (NeurIPS 2016, Sec. 4.2).

It measures a different quantity from the exact decomposition: Veit's *magnitude*, the number of
paths of a length times the mean norm of one path's gradient (paths cannot cancel), where the
exact decomposition gives the *net* part, the norm of the sum of the length's path gradients.
Paths are drawn uniformly per length from the network that ran (inside a lesion, the lesioned
one); many share one recorded forward pass, their gradients propagated together as a stack of
cotangents (one batched vector-Jacobian product per unit for all paths taking a branch there).

Single-path gradients shrink geometrically with length (about 1e-27 per element at length 31 of
a trained ResNet-110): each path's gradient is rescaled by a power of two whenever its largest
element leaves [2^-32, 2^32] (exact in floating point), the scale kept as an integer exponent,
and the norm is taken in float64 from the rescaled values. Norms of 1e-300 are represented; a
float32 norm of the raw gradient underflows to exactly 0 (its squares, near 1e-54, are below
float32's smallest number). It does not check that ``num_samples`` is enough for a stable mean
(the per-length interval says how stable it is).
"""

from __future__ import annotations

import math

import torch

from .._utils import python_rng
from ..graph import UnraveledGraph
from ._record import grad, is_relu
from .result import PathLengthGradients, _live_counts

#: Default budget for one stack of single-path gradients (paths x the batch's activation).
STACK_BYTES = 32 * 2**20
#: A path's gradient is rescaled once its largest element leaves [2**-RESCALE, 2**RESCALE].
RESCALE = 32
#: The two-sided 95% normal quantile behind each length's interval.
Z95 = 1.959963984540054


def choose_paths(records, num_samples, generator, max_length):
    """Per length 0..M of the network that ran, the paths measured: every path where a length
    has no more than ``num_samples``, else ``num_samples`` drawn uniformly (with replacement).
    Returns (paths, owner lengths, counts, M)."""
    g = UnraveledGraph([rec.unit for rec in records])  # no paths through deleted units' branches
    counts = _live_counts(records)
    rng = python_rng(generator)
    n_live = len(counts) - 1
    M = n_live if max_length is None else min(max_length, n_live)
    paths, owner = [], []
    for k in range(M + 1):
        if counts[k] == 0:
            continue
        chosen = list(g.paths(k)) if counts[k] <= num_samples else g.sample_paths(k, num_samples, rng)
        paths += chosen
        owner += [k] * len(chosen)
    return paths, owner, counts, M


def _rescale(G, shift):
    """Scale each path's rows by a power of two where its largest element left
    [2^-RESCALE, 2^RESCALE] (exact), adding the exponent to ``shift``."""
    amax = G.detach().flatten(1).abs().amax(1)
    _, e = torch.frexp(amax.double())  # amax = m * 2**e, m in [0.5, 1)
    e = torch.where((amax > 0) & (e.abs() > RESCALE), e, torch.zeros_like(e))
    if bool((e != 0).any()):
        G = torch.ldexp(G, (-e).to(G.dtype).view((-1,) + (1,) * (G.dim() - 1)))
        shift = shift + e.long()
    return G, shift


def _branch(branch, x, gz):
    """The VJP of ``branch`` with respect to ``x`` for a stack of cotangents, in one batched call."""
    if branch is x:
        return gz
    return grad(branch, [x], gz, chunk_size=gz.shape[0])[0]


def path_norms(records, L, paths, batch_paths=None):
    """The norm of the gradient at the first unit's input carried by each single path (a tuple of
    the units whose residual branch it takes), as float64; ``batch_paths`` paths per stack
    (default: as many as fit :data:`STACK_BYTES`)."""
    n = len(records)
    gy, = torch.autograd.grad(L, records[-1].y_out, retain_graph=True)
    if batch_paths is None:
        widest = max(max(rec.x.numel(), rec.y.numel()) for rec in records) * gy.element_size()
        batch_paths = max(1, min(128, STACK_BYTES // max(1, widest)))
    norms = torch.empty(len(paths), dtype=torch.float64)
    for start in range(0, len(paths), batch_paths):
        batch = paths[start:start + batch_paths]
        P = len(batch)
        takes = torch.zeros((n, P), dtype=torch.bool)
        for j, path in enumerate(batch):
            takes[list(path), j] = True
        G = gy.detach().unsqueeze(0).expand((P,) + tuple(gy.shape)).contiguous()
        shift = torch.zeros(P, dtype=torch.long)
        for l in range(n - 1, -1, -1):
            rec = records[l]
            if rec.y is rec.zl:
                gz = G
            elif is_relu(rec.unit.parts.post):
                gz = torch.ops.aten.threshold_backward(G, rec.y.detach().expand_as(G), 0)
            else:
                gz = grad(rec.y, [rec.zl], G, chunk_size=P)[0]
            res = takes[l]
            n_res = int(res.sum())
            if n_res and (rec.r is None or (n_res < P and rec.s is None)):
                raise AssertionError("a path skipped a plain unit or took a deleted unit's branch")  # never sampled
            if n_res == P:
                G = _branch(rec.r, rec.x, gz)
            elif n_res == 0:
                if rec.s is None:
                    raise AssertionError("a path skipped a plain unit")  # never sampled
                G = _branch(rec.s, rec.x, gz)
            else:
                ri, si = res.nonzero().flatten(), (~res).nonzero().flatten()
                part_r = _branch(rec.r, rec.x, gz.index_select(0, ri))
                part_s = _branch(rec.s, rec.x, gz.index_select(0, si))
                G = part_r.new_empty((P,) + tuple(part_r.shape[1:]))
                G.index_copy_(0, ri, part_r)
                G.index_copy_(0, si, part_s)
            del gz
            if l > 0 and rec.x_in is not records[l - 1].y_out:
                G = grad(rec.x_in, [records[l - 1].y_out], G, chunk_size=P)[0]
            G, shift = _rescale(G.detach(), shift)
        norm = torch.linalg.vector_norm(G.detach().flatten(1).double(), dim=1).cpu()
        norms[start:start + P] = torch.ldexp(norm, shift.double())
    return norms


def summarise(norms, owner, counts, M, loss=float("nan")):
    """Veit's magnitude from single-path norms: per length, the mean norm (``per_path_norm``),
    its standard deviation, a 95% normal interval of the mean (with the finite-population
    correction, so an enumerated length's interval is its mean), and ``norms`` = count x mean."""
    owner_t = torch.as_tensor(owner, dtype=torch.long)
    mean = torch.zeros(M + 1, dtype=torch.float64)
    std = torch.zeros(M + 1, dtype=torch.float64)
    half = torch.zeros(M + 1, dtype=torch.float64)
    samples = torch.zeros(M + 1, dtype=torch.long)
    for k in range(M + 1):
        sel = norms[owner_t == k]
        m = len(sel)
        samples[k] = m
        if m:
            mean[k] = sel.mean()
            std[k] = sel.std() if m > 1 else 0.0
            N = counts[k]
            fpc = math.sqrt(max(N - m, 0) / (N - 1)) if N > 1 else 0.0
            half[k] = Z95 * std[k] / math.sqrt(m) * fpc
    count_t = torch.tensor([float(c) for c in counts[: M + 1]], dtype=torch.float64)
    return PathLengthGradients("sample", "input", torch.arange(M + 1), counts[: M + 1], mean * count_t, mean,
                               samples=samples, std=std, low=(mean - half).clamp_min(0) * count_t,
                               high=(mean + half) * count_t, loss=loss)


def sample_paths_gradients(records, L, num_samples, batch_paths, generator, max_length):
    """Veit et al.'s estimator on one recorded forward pass (see :mod:`.sample`): per length, the
    mean norm of the gradient propagated through single paths drawn uniformly (all of them where
    there are no more than ``num_samples``), and the magnitude count x mean."""
    paths, owner, counts, M = choose_paths(records, num_samples, generator, max_length)
    norms = path_norms(records, L, paths, batch_paths)
    return summarise(norms, owner, counts, M, loss=float(L.detach()))
