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
from ..losses import IGNORE_INDEX, check_loss
from ..adapters.wrappers import as_module
from ..units import find_units, unit_groups
from ._budget import DEFAULT_SHARE, SavedBytes, available_bytes, bytes_per_example, check_budget, examples_per_step
from ._groups import group_counts, group_records, propagate_groups
from ._propagate import through_unit
from ._record import METHODS, MODES, WRT, analysis_mode, builtin_loss, prepare, record, vjps
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


def _exact(model, units, records, L, wrt, M, chunk_size, out=None, groups=None, tick=None):
    """Propagate the length channels from the output to the first unit's input
    (DESIGN: G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}). Channels are a list
    (the last one the overflow past ``max_length``); None marks an exactly-zero channel. The
    records are consumed (each set to None once its unit is done). With ``out`` (``wrt="input"``)
    the channels at the first unit's input are written into it (:func:`through_unit`). With
    ``groups`` (positions in ``records``) a path's length counts groups (:mod:`._groups`).
    ``tick()`` is called after each batched VJP of a unit's channels (a progress bar's update)."""
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
        if tick is not None:
            tick()
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
    if groups is not None:  # a path's length counted in groups of units
        def between(l, G):
            rec = records[l]
            if l > 0:
                return G if rec.x_in is records[l - 1].y_out else vjp(rec.x_in, records[l - 1].y_out, G, outside, 0)
            if outside and rec.x_in.grad_fn is not None:
                accumulate(outside, vjps(rec.x_in, [params[k] for k in outside], G, chunk_size), 0)
            return G

        G = propagate_groups(records, groups, G, M, lambda rec: unit_params.get(rec.unit.module, []), between, vjp,
                             out)
    for l in range(n - 1, -1, -1) if groups is None else ():
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


def _shares(targets, next_token):
    """``share(start, step)``: the weight of examples ``start:start+step`` in the whole batch's
    loss (a mean over examples, over scored tokens for ``next_token``; a sum without targets)."""
    if targets is None:
        return lambda start, step: 1.0
    if not next_token:
        return lambda start, step: min(step, targets.shape[0] - start) / targets.shape[0]
    scored = (targets[:, 1:] != IGNORE_INDEX).flatten(1).sum(1)
    total = int(scored.sum())
    if total == 0:
        raise ArgumentError("loss='next_token' has no token to score: every target after the first position is "
                            f"{IGNORE_INDEX} (ignored).")
    return lambda start, step: int(scored[start:start + step].sum()) / total


def path_length_gradients(model: nn.Module, inputs, targets=None, *, loss: Callable | str | None = None,
                          wrt: str = "input", method: str = "exact", max_length: int | None = None,
                          chunk_size: int | None = None, num_samples: int = 100, generator=None,
                          mode: str = "eval", batch_size: int | None = None,
                          memory_budget: int | None = None, group="unit",
                          progress: bool = False) -> PathLengthGradients:
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
    loss : callable or "next_token", optional
        ``loss(outputs, targets) -> scalar``. ``"next_token"``: causal language models, the mean
        cross-entropy over the vocabulary of the output at position t against token t + 1
        (:func:`unravel.losses.next_token_loss`; the targets default to the inputs, the token
        ids; targets of -100 are left out). It splits over examples as the default loss does.
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
    group : {"unit", "layer", "stage"} or list of lists of units
        Exact: count a path's length in groups of units (:func:`unravel.units.unit_groups`)
        instead of units. ``"layer"``: a transformer layer's attention and MLP units are one
        group, and a path has length k when it takes a residual branch in k layers. The parts
        still sum to the gradient exactly; ``counts[k]`` is the number of paths (subsets of
        units) with length k in groups, ``prod_g (1 + (2^{m_g} - 1) t)`` for groups of ``m_g``
        residual units.
    progress : bool
        Exact: a tqdm bar counting the batched vector-Jacobian products as they are taken.

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

    Lengths counted in groups of units (here two groups of two, a layer's sublayers in a
    transformer) split the same gradient:

    >>> pairs = unravel.attribution.path_length_gradients(net, x, y, group=[[0, 1], [2, 3]])
    >>> pairs.lengths.tolist(), pairs.counts
    ([0, 1, 2, 3], [1, 7, 15, 9])
    >>> torch.allclose(pairs.by_length.sum(0), g, rtol=1e-10, atol=0)
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
    model = as_module(model)  # an nnsight wrapper: the model inside
    check_choice("method", method, METHODS)
    check_choice("wrt", wrt, WRT)
    check_choice("mode", mode, MODES)
    if wrt == "units" and any(p.device.type == "meta" for p in model.parameters()):
        raise ArgumentError("wrt='units' needs the parameters in memory, but some are on the meta device (offloaded by "
                            "accelerate's device_map, brought in only for each forward): use wrt='input', or load the "
                            "model without offloading.")
    if method == "sample" and wrt != "input":
        raise ArgumentError("method='sample' measures single-path gradients at the input: use wrt='input'.")
    max_length = check_int("max_length", max_length, 0, allow_none=True)
    chunk_size = check_int("chunk_size", chunk_size, 1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
    memory_budget = check_budget(memory_budget)
    loss = check_loss(loss)
    splits = method == "exact" and loss in (None, "next_token") and mode == "eval"
    for name, value in (("batch_size", batch_size), ("memory_budget", memory_budget)):
        if value is not None and not splits:
            raise ArgumentError(f"{name} splits the exact decomposition over examples: it needs method='exact', "
                                "the default loss (mean cross-entropy, or the summed top logit) or loss='next_token', "
                                "and mode='eval'.")
    if method == "sample":
        num_samples = check_int("num_samples", num_samples, 1)
    next_token = loss == "next_token"
    loss, targets = builtin_loss(loss, inputs, targets)
    inputs, loss_fn = prepare(model, inputs, targets, loss)
    units = find_units(model)
    if wrt == "units" and not any(p.requires_grad for u in units for p in u.module.parameters()):
        raise ArgumentError("wrt='units' decomposes the gradients of the units' parameters, but none of them "
                            "requires grad (all frozen). Unfreeze them (requires_grad_(True)), or use wrt='input'.")
    groups = unit_groups(units, group)
    if all(len(g) == 1 for g in groups):
        groups = None  # the unit recursion
    elif method != "exact":
        raise ArgumentError(f"group={group!r} counts a path's length in groups: it needs method='exact'.")
    B = inputs[0].shape[0]
    share = _shares(targets, next_token)
    # eval-mode batch norms and ReLU masks folded into the convolutions' input VJPs
    fold = method == "exact" and wrt == "input" and mode == "eval"
    L = 0.0
    allparts, param_parts, counts, M = None, None, None, None
    with analysis_mode(model, mode):
        if method == "sample":
            from .sample import sample_paths_gradients

            records, _, L = record(model, units, inputs, targets, loss_fn, fold=mode == "eval")
            return sample_paths_gradients(records, L, num_samples, chunk_size, generator, max_length)
        from tqdm.auto import tqdm

        bar = tqdm(desc="path lengths", unit="VJP", disable=not progress, leave=False)
        step = batch_size
        if step is None and splits and B > 1:
            step = _fitting_batch(model, units, inputs, targets, loss_fn, wrt, max_length, fold, memory_budget)
        step = B if step is None else step
        for start in range(0, B, step):
            piece = tuple(t[start:start + step] for t in inputs)
            piece_targets = None if targets is None else targets[start:start + step]
            records, _, L_piece = record(model, units, piece, piece_targets, loss_fn, fold=fold)
            positions = None if groups is None else group_records(records, groups)
            if counts is None:
                # the paths of the network that ran (a lesion removes the deleted units' branches)
                counts = _live_counts(records) if groups is None else group_counts(records, positions)
                n = len(counts) - 1
                M = n if max_length is None else min(max_length, n)
                if wrt == "input":  # lengths 0..M, then the overflow; written in place, not stacked
                    x0 = records[0].x
                    allparts = x0.new_empty((M + 2, B) + tuple(x0.shape[1:]))
                    del x0
            out = allparts[:, start:start + step] if wrt == "input" else None
            # the built-in losses are a mean over examples or tokens (with targets) or a sum (without)
            weight = share(start, step)
            if weight == 0.0:  # nothing of this piece is scored: its parts are zero
                del records
                if wrt == "input":
                    out.zero_()
                continue
            _, pgrads = _exact(model, units, records, L_piece, wrt, M, chunk_size, out, positions, bar.update)
            del records
            L = L + weight * float(L_piece.detach())
            if wrt == "input":
                if weight != 1.0:
                    out.mul_(weight)
            else:
                pgrads = {k: v.detach() if weight == 1.0 else v.detach() * weight for k, v in pgrads.items()}
                param_parts = pgrads if param_parts is None else {k: param_parts[k] + v for k, v in pgrads.items()}
            del out, pgrads
        bar.close()
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

