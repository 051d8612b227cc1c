"""Veit et al.'s sampling estimator of gradient magnitude by path length (NeurIPS 2016, Sec. 4.1).

It measures a different quantity from the exact decomposition: the mean norm of single-path
gradients, which is what the paper's Fig. 6 plots. Paths are drawn uniformly per length from the
network that ran (inside a lesion, the lesioned one); many share one batched backward pass. It
does not check that ``num_samples`` is enough for a stable mean.
"""

from __future__ import annotations

import torch

from .._utils import python_rng
from ..graph import UnraveledGraph
from ._record import grad, is_relu
from .result import PathLengthGradients, _live_counts

def sample_paths_gradients(records, L, num_samples, batch_paths, generator, max_length):
    """Veit et al.'s estimator on a recorded forward pass: per length, the mean norm of the
    gradient propagated through single paths drawn uniformly (all of them where there are no more
    than ``num_samples``); many paths share one backward pass."""
    units = [rec.unit for rec in records]
    n = len(units)
    g = UnraveledGraph(units)  # the network that ran: no paths through deleted units' branches
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
    last = records[-1]
    gy, = torch.autograd.grad(L, last.y_out, retain_graph=True)
    norms = torch.empty(len(paths), dtype=gy.dtype)
    for start in range(0, len(paths), batch_paths):
        batch = paths[start:start + batch_paths]
        P = len(batch)
        takes = torch.zeros((n, P), dtype=torch.bool)
        for j, path in enumerate(batch):
            takes[list(path), j] = True
        G = gy.unsqueeze(0).expand((P,) + tuple(gy.shape)).contiguous()
        for l in range(n - 1, -1, -1):
            rec = records[l]
            if rec.y is rec.zl:
                gz = G
            elif is_relu(rec.unit.parts.post):
                gz = torch.ops.aten.threshold_backward(G, rec.y.expand_as(G), 0)
            else:
                gz = grad(rec.y, [rec.zl], G)[0]
            res_rows = takes[l].nonzero().flatten().tolist()
            short_rows = (~takes[l]).nonzero().flatten().tolist()
            out = None
            for rows, branch in ((res_rows, rec.r), (short_rows, rec.s)):
                if not rows:
                    continue
                if branch is None:
                    raise AssertionError("a path skipped a plain unit or took a deleted unit's branch")  # sampled paths never do
                part = gz[rows] if branch is rec.x else grad(branch, [rec.x], gz[rows])[0]
                if out is None:
                    out = part.new_empty((P,) + tuple(part.shape[1:]))
                out[rows] = part
            G = out
            if l > 0 and rec.x_in is not records[l - 1].y_out:
                G = grad(rec.x_in, [records[l - 1].y_out], G)[0]
        norms[start:start + P] = G.flatten(1).norm(dim=1).detach().cpu()
    owner_t = torch.tensor(owner)
    lengths = torch.arange(M + 1)
    mean = torch.zeros(M + 1, dtype=norms.dtype)
    std = torch.zeros(M + 1, dtype=norms.dtype)
    samples = torch.zeros(M + 1, dtype=torch.long)
    for k in range(M + 1):
        sel = norms[owner_t == k]
        samples[k] = len(sel)
        if len(sel):
            mean[k] = sel.mean()
            std[k] = sel.std() if len(sel) > 1 else 0.0
    total = mean * torch.tensor([float(c) for c in counts[: M + 1]], dtype=mean.dtype)
    return PathLengthGradients("sample", "input", lengths, counts[: M + 1], total, mean, samples=samples, std=std,
                               loss=float(L.detach()))

