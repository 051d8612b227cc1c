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
from ._record import grad, is_relu, like
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


def _vjp_rows(output, leaf, gz, rows, dest):
    """``dest[rows] = VJP of output w.r.t. leaf`` for the cotangents ``gz[rows]`` (``rows``
    None: every row). On a CPU one plain VJP per row, written in place (measured: a vmap-batched
    VJP loops over a convolution's backward there and is slower); elsewhere one batched VJP."""
    if rows is None:
        rows = torch.arange(gz.shape[0])
    if len(rows) == 0:
        return dest
    if output is leaf:
        dest[rows] = gz[rows]
        return dest
    if gz.device.type != "cpu":
        dest[rows] = grad(output, [leaf], gz[rows], chunk_size=len(rows))[0]
        return dest
    for i in rows.tolist():
        g, = torch.autograd.grad(output, leaf, like(output, gz[i]), retain_graph=True)
        dest[i].copy_(g)
    return dest


def _new(gz, leaf):
    return gz.new_empty((gz.shape[0],) + tuple(leaf.shape))


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
        G = gy.detach().unsqueeze(0).expand((P,) + tuple(gy.shape)).clone(memory_format=torch.contiguous_format)
        shift = torch.zeros(P, dtype=torch.long)
        for l in range(n - 1, -1, -1):
            rec = records[l]
            if rec.y is rec.zl:
                gz = G
            elif is_relu(rec.unit.parts.post):
                gz = torch.ops.aten.threshold_backward(G, rec.y.detach().expand_as(G), 0)
            else:
                gz = _vjp_rows(rec.y, rec.zl, G, None, _new(G, rec.zl))
            res = takes[l]
            ri, si = res.nonzero().flatten(), (~res).nonzero().flatten()
            if (len(ri) and rec.r is None) or (len(si) and rec.s is None):
                raise AssertionError("a path skipped a plain unit or took a deleted unit's branch")  # never sampled
            if rec.s is rec.x:  # an identity shortcut: the paths skipping the branch keep their rows
                G = gz  # owned: never a recorded tensor (each step makes a new one)
            else:
                G = _vjp_rows(rec.s, rec.x, gz, si, _new(gz, rec.x))
            G = _vjp_rows(rec.r, rec.x, gz, ri, G) if len(ri) else G
            del gz
            if l > 0 and rec.x_in is not records[l - 1].y_out:
                G = _vjp_rows(rec.x_in, records[l - 1].y_out, G, None, _new(G, records[l - 1].y_out))
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
