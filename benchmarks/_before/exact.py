"""The exact path-length decomposition of the gradient (unravel's key algorithm).

The terms of the chain rule, grouped by how many residual branches they traverse, propagated from
the output to the first unit as length channels with one batched vector-Jacobian product per unit
(the recursion is in :func:`path_length_gradients`). Exact for the gradient -- the linearisation
at the recorded activations -- not a claim that the network's function is a sum of independent
paths. Inside a lesion it decomposes the lesioned network's gradient. It refuses units that do
not form a chain (:func:`unravel.attribution._record.check_chain`); it does not check that a
registered adapter's branches are the block's (``find_units(..., verify=True)`` does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from unravel._utils import check_choice, check_int
from unravel.errors import ArgumentError
from unravel.graph import UnraveledGraph
from unravel.units import find_units
from ._record import METHODS, MODES, WRT, analysis_mode, is_relu, post_vjp, prepare, record, storage, vjps, writable
from unravel.attribution.result import PathLengthGradients

__all__ = ["path_length_gradients"]


def _add(a, b):
    return a if b is None else b if a is None else a + b


def _through_unit(short, res, c, M):
    """Combine a unit's shortcut and residual VJPs of the length channels (c kept channels for
    lengths 0..c-1, then one overflow channel for lengths > M): the shortcut keeps each length,
    the residual branch adds one. Returns min(c+1, M+1) kept channels and the overflow."""
    c_new = min(c + 1, M + 1)
    kept = min(c, c_new - 1)  # residual channels that stay within max_length
    new = [None] * (c_new + 1)
    if short is not None:  # a plain unit has none: every path takes its residual branch
        new[:c] = short[:c]
    foreign = {storage(t) for t in short if t is not None} if short is not None else set()
    for k in range(kept):
        a, b = new[k + 1], res[k]
        if a is not None and b is not None and b.shape == a.shape and b.dtype == a.dtype and writable(b, foreign):
            new[k + 1] = b.add_(a)  # no new buffer: on a CPU, fresh pages cost as much as the sum
        else:
            new[k + 1] = _add(a, b)
    overflow = short[c] if short is not None else None
    for k in range(kept, c + 1):  # pushed past max_length, and the old overflow
        overflow = _add(overflow, res[k])
    new[c_new] = overflow
    return new


def _live_counts(records) -> list[int]:
    """Paths of each length of the network that ran: up to the longest length that has paths (a
    lesion's deleted units shorten the longest path)."""
    counts = UnraveledGraph([r.unit for r in records]).length_counts()
    while len(counts) > 1 and counts[-1] == 0:
        counts.pop()
    return counts


def _exact(model, units, records, L, wrt, M, chunk_size):
    """Propagate the length channels from the output to the first unit's input
    (DESIGN: G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}). Channels are a list
    (the last one the overflow past ``max_length``); None marks an exactly-zero channel."""
    n = len(units)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad} if wrt == "units" else {}
    unit_params: dict[nn.Module, list[str]] = {}
    outside: list[str] = []
    pgrads: dict[str, torch.Tensor] = {}
    if wrt == "units":
        names = {mod: name for name, mod in model.named_modules()}
        for u in units:
            prefix = names[u.module]
            unit_params.setdefault(u.module, [k for k in params if not prefix or k.startswith(prefix + ".")])
        inside = {k for ks in unit_params.values() for k in ks}
        outside = [k for k in params if k not in inside]
        # per parameter, M + 2 slots (lengths 0..M, then the overflow): None until a part arrives
        pgrads = {k: [None] * (M + 2) for k in params}

    def accumulate(names, grads, shift):
        # channel j of ``grads`` holds length j + shift; its last channel is the overflow
        for name, channels in zip(names, grads):
            store, kept = pgrads[name], len(channels) - 1
            for j, g in enumerate(channels):
                if g is not None:
                    i = j + shift if j < kept and j + shift <= M else M + 1
                    store[i] = g if store[i] is None else store[i] + g

    def vjp(out, leaf, G, names, shift):
        got = vjps(out, [leaf] + [params[k] for k in names], G, chunk_size)
        accumulate(names, got[1:], shift)
        return got[0]

    last = records[-1]
    head = torch.autograd.grad(L, [last.y_out] + [params[k] for k in outside], retain_graph=True, allow_unused=True)
    for name, g in zip(outside, head[1:]):
        if g is not None:  # the head: no residual branch between it and the loss
            pgrads[name][0] = g
    G = [head[0], None]  # length 0, and an empty overflow
    for l in range(n - 1, -1, -1):
        rec = records[l]
        names = unit_params.get(rec.unit.module, [])
        c = len(G) - 1
        if rec.y is rec.zl or is_relu(rec.unit.parts.post):  # a ReLU has no parameters
            gz = post_vjp(rec, G, chunk_size)
        else:
            gz = vjp(rec.y, rec.zl, G, names, 0)
        if rec.s is None:
            short = None
        elif rec.s is rec.x:
            short = gz
        else:
            short = vjp(rec.s, rec.x, gz, names, 0)
        if rec.r is None:  # a deleted unit: every path takes its shortcut, no length is added
            G = short
        else:
            G = _through_unit(short, vjp(rec.r, rec.x, gz, names, 1), c, M)
        if l > 0:
            if rec.x_in is not records[l - 1].y_out:  # code between units: shared by every path
                G = vjp(rec.x_in, records[l - 1].y_out, G, outside, 0)
        elif outside and rec.x_in.grad_fn is not None:
            # the stem: its parameters take the lengths of the paths above it
            accumulate(outside, vjps(rec.x_in, [params[k] for k in outside], G, chunk_size), 0)
    zero = torch.zeros_like(records[0].x)
    stacked = {}
    for name, slots in pgrads.items():
        z = torch.zeros_like(params[name])
        stacked[name] = torch.stack([z if g is None else g for g in slots])
    return [zero if g is None else g for g in G], stacked


def path_length_gradients(model: nn.Module, inputs, targets=None, *, loss: Callable | None = None,
                          wrt: str = "input", method: str = "exact", max_length: int | None = None,
                          chunk_size: int | None = None, num_samples: int = 100, generator=None,
                          mode: str = "eval", batch_size: int | None = None) -> PathLengthGradients:
    """The loss gradient split by path length: how much travels through k residual branches.

    Parameters
    ----------
    model : nn.Module
        Any model :func:`unravel.find_units` supports whose units form a chain: each unit's input
        computed from the previous unit's output, the loss from the last one's (a DenseNet's
        layers do; a DLA's or HRNet's do not, and are refused). Never changed: modes and buffers
        are restored.
    inputs : tensor or tuple of tensors
        One batch.
    targets : tensor, optional
        Labels for the default loss (mean cross-entropy). Without them the loss is the sum of each
        input's largest logit.
    loss : callable, optional
        ``loss(outputs, targets) -> scalar``.
    wrt : {"input", "units"}
        ``"input"``: the gradient at the first unit's input. ``"units"``: every parameter's
        gradient (a unit's own residual branch counts in the length of its parameters' paths).
    method : {"exact", "sample"}
        ``"exact"`` decomposes the gradient exactly [2]_: channels ``G_k`` of the gradient carried
        by paths with k residual branches, propagated with one batched vector-Jacobian product per
        unit, ``G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}``; only channels that
        can be non-zero are computed. ``"sample"`` is Veit et al.'s estimator [1]_: single paths
        drawn uniformly per length, the gradient propagated through only that path (residual
        branch in its units, shortcut elsewhere), the norm recorded; many paths share one
        backward pass.
    max_length : int, optional
        Keep lengths up to this; the norm of the rest is ``dropped_norm``.
    chunk_size : int, optional
        Exact: at most this many length channels in one batched VJP (bounds extra memory);
        by default one at a time on a CPU (fastest there) and up to 512 MiB on a GPU. Sample:
        paths per backward pass (default 64).
    num_samples : int
        Sample: paths per length. Where a length has no more paths than this, every path of it is
        used once, so its mean is exact.
    generator : int, torch.Generator or random.Random, optional
        Sample: the seed or source of randomness.
    mode : {"eval", "train"}
        The mode of the forward pass (train mode: batch statistics; running statistics are put
        back afterwards).
    batch_size : int, optional
        Exact: decompose this many examples at a time and combine the parts (weighted as the mean
        loss weighs them), so that the extra memory scales with ``batch_size``, not the batch.
        The result is the same up to floating-point rounding. Needs the default loss and
        ``mode="eval"`` (a custom loss, or batch statistics, need not split over examples).

    Returns
    -------
    PathLengthGradients

    Raises
    ------
    ArgumentError
        For an unknown ``method``/``wrt``/``mode``, ``method="sample"`` with ``wrt="units"``, an
        empty batch, a model whose units do not run exactly once or do not form a chain, or a
        ``batch_size`` that cannot split the loss.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(8, 3, width=8, depth=5).double()
    >>> x, y = torch.randn(4, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    >>> res = unravel.attribution.path_length_gradients(net, x, y)
    >>> res.lengths.tolist(), res.counts
    ([0, 1, 2, 3, 4, 5], [1, 5, 10, 10, 5, 1])
    >>> x0 = net.stem(x).detach().requires_grad_()
    >>> g, = torch.autograd.grad(torch.nn.functional.cross_entropy(net.head(net.blocks(x0)), y), x0)
    >>> torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=0)
    True

    Notes
    -----
    The decomposition is exact for the gradient at the recorded activations (the chain rule's
    product of ``(S_l + R_l)`` factors, expanded and grouped by how many ``R`` factors each term
    holds). It does not say the network's function is a sum of independent paths. The cost is
    about n(n+1)/2 single-unit VJPs, roughly (n+1)/2 backward passes, against 1,000 (n+1)
    single-path backward passes for the paper's protocol.

    On NVIDIA GPUs float32 convolutions use TF32 by default (``torch.backends.cudnn.allow_tf32``):
    the parts then sum to autograd's gradient only to about 1e-4 relative (measured on an H100:
    2.4e-4 for parameter gradients, 5e-7 with TF32 off), as autograd's own result changes with the
    algorithm. Turn TF32 off, or use float64, where the sum must match to float precision.

    References
    ----------
    .. [1] A. Veit, M. Wilber, S. Belongie. "Residual Networks Behave Like Ensembles of
       Relatively Shallow Networks." NeurIPS 2016, Sec. 4.1 and Fig. 6.
    .. [2] unravel's design notes (``DESIGN.md``): the exact path-length decomposition.
    """
    check_choice("method", method, METHODS)
    check_choice("wrt", wrt, WRT)
    check_choice("mode", mode, MODES)
    if method == "sample" and wrt != "input":
        raise ArgumentError("method='sample' measures single-path gradients at the input: use wrt='input'.")
    max_length = check_int("max_length", max_length, 0, allow_none=True)
    chunk_size = check_int("chunk_size", chunk_size, 1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
    if batch_size is not None and (method != "exact" or loss is not None or mode != "eval"):
        raise ArgumentError("batch_size splits the exact decomposition over examples: it needs method='exact', "
                            "the default loss (mean cross-entropy, or the summed top logit) and mode='eval'.")
    if method == "sample":
        num_samples = check_int("num_samples", num_samples, 1)
    inputs, loss_fn = prepare(model, inputs, targets, loss)
    units = find_units(model)
    B = inputs[0].shape[0]
    step = B if batch_size is None else batch_size
    L = 0.0
    input_parts, param_parts, counts, M = [], None, None, None
    with analysis_mode(model, mode):
        if method == "sample":
            from unravel.attribution.sample import sample_paths_gradients

            records, _, L = record(model, units, inputs, targets, loss_fn)
            return sample_paths_gradients(records, L, num_samples, chunk_size or 64, generator, max_length)
        for start in range(0, B, step):
            piece = tuple(t[start:start + step] for t in inputs)
            piece_targets = None if targets is None else targets[start:start + step]
            records, _, L_piece = record(model, units, piece, piece_targets, loss_fn)
            if counts is None:
                # the paths of the network that ran (a lesion removes the deleted units' branches)
                counts = _live_counts(records)
                n = len(counts) - 1
                M = n if max_length is None else min(max_length, n)
            G, pgrads = _exact(model, units, records, L_piece, wrt, M, chunk_size)
            del records
            # the default loss is a mean over examples (with targets) or a sum (without)
            weight = piece[0].shape[0] / B if targets is not None else 1.0
            L = L + weight * float(L_piece.detach())
            K = len(G) - 1  # kept channels at x_0
            if wrt == "input":
                parts = torch.stack(G[:K] + [G[K]]).detach()  # lengths 0..K-1, then the overflow
                if K < M + 1:
                    parts = torch.cat([parts[:K], parts.new_zeros((M + 1 - K,) + tuple(parts.shape[1:])),
                                       parts[K:]])
                input_parts.append(parts if weight == 1.0 else parts * weight)
            else:
                pgrads = {k: v.detach() if weight == 1.0 else v.detach() * weight for k, v in pgrads.items()}
                param_parts = pgrads if param_parts is None else {k: param_parts[k] + v for k, v in pgrads.items()}
            del G, pgrads
    if wrt == "input":
        allparts = input_parts[0] if len(input_parts) == 1 else torch.cat(input_parts, dim=1)
        parts, overflow = allparts[: M + 1], allparts[M + 1]
        norms = parts.flatten(1).norm(dim=1)
        total = parts.sum(0) + overflow
        result = dict(by_length=parts, total=total, dropped_norm=float(overflow.norm()))
    else:
        pbl = {k: v[: M + 1] for k, v in param_parts.items()}
        norms = sum(v.flatten(1).pow(2).sum(1) for v in pbl.values()).sqrt()
        dropped = sum(v[M + 1].pow(2).sum() for v in param_parts.values())
        result = dict(param_by_length=pbl, dropped_norm=float(dropped) ** 0.5)
    counts_t = torch.tensor([float(c) for c in counts[: M + 1]], dtype=norms.dtype)
    return PathLengthGradients("exact", wrt, torch.arange(M + 1), counts[: M + 1], norms.detach().cpu(),
                               (norms.detach().cpu() / counts_t), loss=float(L), **result)

