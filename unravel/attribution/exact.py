"""The exact path-length decomposition of the gradient (unravel's key algorithm).

The terms of the chain rule, grouped by how many residual branches they traverse, propagated from
the output to the first unit as length channels with one batched vector-Jacobian product per unit
(the recursion is in :func:`path_length_gradients`). Exact for the gradient -- the linearisation
at the recorded activations -- not a claim that the network's function is a sum of independent
paths. Inside a lesion it decomposes the lesioned network's gradient. It refuses units that do
not form a chain (:func:`unravel.attribution._record.check_chain`); it does not check that a
registered adapter's branches are the block's (:func:`unravel.verify_units` does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._utils import check_choice, check_int
from ..errors import ArgumentError
from ..units import find_units
from ._budget import DEFAULT_SHARE, SavedBytes, available_bytes, bytes_per_example, check_budget, examples_per_step
from ._propagate import through_unit
from ._record import METHODS, MODES, WRT, analysis_mode, prepare, record, vjps
from .result import PathLengthGradients, _live_counts

__all__ = ["path_length_gradients"]


def _fitting_batch(model, units, inputs, targets, loss_fn, wrt, max_length, fold, memory_budget):
    """The examples per step that fit ``memory_budget`` (default: half the memory available), from
    a recording of one example; None where the memory available is unknown."""
    budget = memory_budget
    if budget is None:
        free = available_bytes(inputs[0].device)
        if free is None:
            return None
        budget = int(DEFAULT_SHARE * free)
    saved = SavedBytes(model)
    with saved.hooks():
        records, _, _ = record(model, units, tuple(t[:1] for t in inputs),
                               None if targets is None else targets[:1], loss_fn, fold=fold)
    n = len(_live_counts(records)) - 1
    M = n if max_length is None else min(max_length, n)
    return examples_per_step(bytes_per_example(records, saved, M, wrt), budget, inputs[0].shape[0])


def _exact(model, units, records, L, wrt, M, chunk_size, out=None):
    """Propagate the length channels from the output to the first unit's input
    (DESIGN: G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}). Channels are a list
    (the last one the overflow past ``max_length``); None marks an exactly-zero channel. The
    records are consumed (each set to None once its unit is done). With ``out`` (``wrt="input"``)
    the channels at the first unit's input are written into it (:func:`through_unit`)."""
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
    del last
    for name, g in zip(outside, head[1:]):
        if g is not None:  # the head: no residual branch between it and the loss
            pgrads[name][0] = g
    G = [head[0], None]  # length 0, and an empty overflow
    del head
    x0 = records[0].x
    for l in range(n - 1, -1, -1):
        rec = records[l]
        names = unit_params.get(rec.unit.module, [])
        G = through_unit(rec, G, M, names, vjp, chunk_size, out if l == 0 else None)
        if l > 0:
            if rec.x_in is not records[l - 1].y_out:  # code between units: shared by every path
                G = vjp(rec.x_in, records[l - 1].y_out, G, outside, 0)
        elif outside and rec.x_in.grad_fn is not None:
            # the stem: its parameters take the lengths of the paths above it
            accumulate(outside, vjps(rec.x_in, [params[k] for k in outside], G, chunk_size), 0)
        # streamed: a unit's activations and local graphs go once its VJPs are taken
        records[l] = rec = None
    if out is not None:
        return out, {}
    zero = torch.zeros_like(x0)
    stacked = {}
    for name, slots in pgrads.items():
        z = torch.zeros_like(params[name])
        stacked[name] = torch.stack([z if g is None else g for g in slots])
    return [zero if g is None else g for g in G], stacked


def path_length_gradients(model: nn.Module, inputs, targets=None, *, loss: Callable | None = None,
                          wrt: str = "input", method: str = "exact", max_length: int | None = None,
                          chunk_size: int | None = None, num_samples: int = 100, generator=None,
                          mode: str = "eval", batch_size: int | None = None,
                          memory_budget: int | None = None) -> PathLengthGradients:
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
        paths propagated together (default: as many as fit 32 MiB of stacked gradients, at most
        128).
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
        ``mode="eval"`` (a custom loss, or batch statistics, need not split over examples). By
        default (with that loss and mode) it is chosen so that one step fits ``memory_budget``:
        the whole batch unless that would not fit.
    memory_budget : int, optional
        Exact, with the default loss and ``mode="eval"``: the bytes one step may use, at least
        1 MiB (``2**20``); the batch is split into the largest steps that fit it, estimated from
        a recording of one example (what its units' graphs keep, the length channels of the
        widest unit and the rows of the result). Default: half the memory available when the
        call starts (the device's free memory on a GPU, ``MemAvailable`` on a CPU); where that is
        unknown, the batch is not split. Ignored when ``batch_size`` is given. An estimate, not a
        limit the allocator enforces.

    Returns
    -------
    PathLengthGradients

    Raises
    ------
    ArgumentError
        For an unknown ``method``/``wrt``/``mode``, ``method="sample"`` with ``wrt="units"``, an
        empty batch, a model whose units do not run exactly once or do not form a chain, a
        ``memory_budget`` that is not a number of bytes of at least 1 MiB, or a ``batch_size``
        or ``memory_budget`` that cannot split the loss.

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

    A memory budget splits the batch into the steps that fit it; the parts are the same:

    >>> small = unravel.attribution.path_length_gradients(net, x, y, memory_budget=2**20)
    >>> torch.allclose(small.by_length, res.by_length, rtol=1e-10, atol=1e-16)
    True

    Notes
    -----
    The decomposition is exact for the gradient at the recorded activations (the chain rule's
    product of ``(S_l + R_l)`` factors, expanded and grouped by how many ``R`` factors each term
    holds). It does not say the network's function is a sum of independent paths. The cost is
    about n(n+1)/2 single-unit VJPs, roughly (n+1)/2 backward passes, against 1,000 (n+1)
    single-path backward passes for the paper's protocol.

    In eval mode the input parts are propagated with each unit's batch norms folded into the
    convolutions next to them (a batch norm with running statistics is a per-channel affine map:
    its VJP scales the convolution's weight) and each ReLU's derivative applied in place to the
    fresh gradient: the same values to floating-point rounding, without the batch norms' and
    ReLUs' backward passes. Modules in train mode, and parameter parts, are never folded. Each
    unit's recorded activations are freed once its VJPs are taken, and the parts are written
    into the result as the last unit produces them, so the memory beyond one recorded forward
    pass is about one set of length channels.

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
    memory_budget = check_budget(memory_budget)
    splits = method == "exact" and loss is None and mode == "eval"
    for name, value in (("batch_size", batch_size), ("memory_budget", memory_budget)):
        if value is not None and not splits:
            raise ArgumentError(f"{name} splits the exact decomposition over examples: it needs method='exact', "
                                "the default loss (mean cross-entropy, or the summed top logit) and mode='eval'.")
    if method == "sample":
        num_samples = check_int("num_samples", num_samples, 1)
    inputs, loss_fn = prepare(model, inputs, targets, loss)
    units = find_units(model)
    B = inputs[0].shape[0]
    # eval-mode batch norms and ReLU masks folded into the convolutions' input VJPs
    fold = method == "exact" and wrt == "input" and mode == "eval"
    L = 0.0
    allparts, param_parts, counts, M = None, None, None, None
    with analysis_mode(model, mode):
        if method == "sample":
            from .sample import sample_paths_gradients

            records, _, L = record(model, units, inputs, targets, loss_fn, fold=mode == "eval")
            return sample_paths_gradients(records, L, num_samples, chunk_size, generator, max_length)
        step = batch_size
        if step is None and splits and B > 1:
            step = _fitting_batch(model, units, inputs, targets, loss_fn, wrt, max_length, fold, memory_budget)
        step = B if step is None else step
        for start in range(0, B, step):
            piece = tuple(t[start:start + step] for t in inputs)
            piece_targets = None if targets is None else targets[start:start + step]
            records, _, L_piece = record(model, units, piece, piece_targets, loss_fn, fold=fold)
            if counts is None:
                # the paths of the network that ran (a lesion removes the deleted units' branches)
                counts = _live_counts(records)
                n = len(counts) - 1
                M = n if max_length is None else min(max_length, n)
                if wrt == "input":  # lengths 0..M, then the overflow; written in place, not stacked
                    x0 = records[0].x
                    allparts = x0.new_empty((M + 2, B) + tuple(x0.shape[1:]))
                    del x0
            out = allparts[:, start:start + step] if wrt == "input" else None
            _, pgrads = _exact(model, units, records, L_piece, wrt, M, chunk_size, out)
            del records
            # the default loss is a mean over examples (with targets) or a sum (without)
            weight = piece[0].shape[0] / B if targets is not None else 1.0
            L = L + weight * float(L_piece.detach())
            if wrt == "input":
                if weight != 1.0:
                    out.mul_(weight)
            else:
                pgrads = {k: v.detach() if weight == 1.0 else v.detach() * weight for k, v in pgrads.items()}
                param_parts = pgrads if param_parts is None else {k: param_parts[k] + v for k, v in pgrads.items()}
            del out, pgrads
    if wrt == "input":
        allparts = allparts.detach()
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

