"""Recording one forward pass as per-unit local graphs, and the vector-Jacobian products that
propagate length channels through them. Private: the exact and sampled decompositions and the
norm ratios are built on it.

The recording is an intervention (:func:`unravel.intervene`), so it sees the network that active
lesions produced: a deleted unit is recorded with no residual branch, a moved unit at its new
position. :func:`check_chain` refuses units that do not form a chain (a unit's output reaching a
later unit, or the loss, other than through the next unit); DenseNet layers do form one, their
concatenation being a unit.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import as_tuple, logits_of, model_device, saved_modes
from ..errors import ArgumentError, ArgumentTypeError
from ..interventions import intervene
from ..losses import check_loss, next_token_loss
from ..units import ResidualUnit, inplace as _inplace
from ._fold import folding

METHODS = ("exact", "sample")
WRT = ("input", "units")
MODES = ("eval", "train")


# ------------------------------------------------------------------------------------------
# Recording one forward pass as per-unit local graphs


@dataclasses.dataclass
class Record:
    unit: ResidualUnit      # what ran at this position (moved by a reorder; a deleted view)
    x_in: torch.Tensor      # what reached the unit, still attached to the graph before it
    x: torch.Tensor         # a leaf copy of it: the unit's local graph starts here
    s: torch.Tensor | None  # shortcut(x); None for plain units
    r: torch.Tensor | None  # residual(x); None for a deleted unit
    z: torch.Tensor         # s + r
    zl: torch.Tensor        # a leaf copy of z: post's local graph starts here
    y: torch.Tensor         # post(zl)
    y_out: torch.Tensor     # a leaf copy of y: what the rest of the network received


def default_loss(targets):
    """Mean cross-entropy of the logits (:func:`unravel._utils.logits_of`) against ``targets``;
    without targets, the sum of each example's largest logit (as in saliency maps)."""
    if targets is None:
        return lambda out, _: logits_of(out).max(-1).values.sum()
    return lambda out, t: F.cross_entropy(logits_of(out), t)


def _post(unit, zl):
    """``post(zl)`` on a leaf: an in-place post (``nn.ReLU(inplace=True)``) runs on a copy, since
    autograd cannot record an in-place operation on a leaf that requires grad."""
    if unit.parts.post is None:
        return unit.post(zl)
    if _inplace(unit.parts.post):
        return unit.post(zl.clone())
    try:
        return unit.post(zl)
    except RuntimeError as e:  # an in-place function we could not see (a lambda calling relu_)
        if "in-place" not in str(e):
            raise
        return unit.post(zl.clone())


@contextlib.contextmanager
def analysis_mode(model, mode):
    """Eval mode, or train mode with every buffer (BN running statistics) put back afterwards."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()] if mode == "train" else []
    with saved_modes(model):
        model.train(mode == "train")
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def record(model, units, inputs, targets, loss, fold=False):
    """One forward pass recorded unit by unit; returns (records in the order the units ran,
    output, loss). That order is the chain the propagation walks back; it can differ from
    :func:`unravel.find_units`' order without example inputs, which is the order the blocks are
    registered in (timm's Twins registers its position encodings after all the blocks).

    ``fold=True`` records the units' eval-mode batch norms and ReLU masks folded into their
    convolutions (:mod:`unravel.attribution._fold`): the same values, a cheaper backward for
    input gradients, but no gradient reaches those modules' parameters."""
    records: list[Record | None] = [None] * len(units)
    order: list[int] = []

    def compute(unit, x_in, position, **kw):
        p = position.index
        if records[p] is not None:
            raise ArgumentError(f"unit {p} ({position.name}) ran twice in one forward pass; path-length "
                                "attribution needs every unit to run once (no weight sharing).")
        x = x_in.detach().requires_grad_(True)
        if unit.deleted:  # the lesioned network: no residual branch, the bypass only
            s, r = unit.shortcut(x), None
        else:
            s = None if unit.kind == "plain" else unit.shortcut(x)
            r = unit.residual(x, **kw)
        z = s if r is None else r if s is None else s + r
        # separate local graphs for post and for the branches, so that a VJP through post with
        # respect to parameters reaches post's parameters only
        zl = z.detach().requires_grad_(True)
        y = _post(unit, zl)
        y_out = y.detach().requires_grad_(True)
        records[p] = Record(unit, x_in, x, s, r, z, zl, y, y_out)
        order.append(p)
        if folder is not None:
            folder.clear()
        return y_out

    with torch.enable_grad(), folding(units, fold) as folder, intervene(model, compute=compute):
        out = model(*inputs)
        L = loss(out, targets)
        if not torch.is_tensor(L):
            raise ArgumentTypeError(f"the loss returned {type(L).__name__}; it must return a scalar tensor.")
    missing = [u.name for u, r in zip(units, records) if r is None]
    if missing:
        raise ArgumentError(f"units {missing} did not run in the forward pass; cannot attribute through them.")
    if L.dim() != 0:
        raise ArgumentError(f"the loss must be a scalar, got shape {tuple(L.shape)}.")
    ran = [records[p] for p in order]
    check_chain(ran, L)
    return ran, out, L


def _reaches(t, leaves: dict) -> set:
    """Which recorded leaves ``t`` was computed from: ``leaves`` maps the ``id`` of each leaf of
    the recording (a unit's input copy ``x``, its ``zl``, its output ``y_out``) to ``(tensor,
    (position, kind))``. The walk stops at every leaf."""
    if id(t) in leaves and leaves[id(t)][0] is t:
        return {leaves[id(t)][1]}
    found, seen, stack = set(), set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad: a leaf
        if var is not None:
            hit = leaves.get(id(var))
            if hit is not None and hit[0] is var:
                found.add(hit[1])
            continue
        stack.extend(f for f, _ in fn.next_functions)
    return found


def check_chain(records, L):
    """Raise unless the recorded units form a chain, the structure the path decompositions
    assume: each unit's input computed from the previous unit's output, its branches from its own
    input and its post from their sum, and the loss from the last unit's output, with nothing
    else computed from a unit. A DLA's aggregation nodes, a parallel block reading two streams, a
    skip from an early layer to the head, a side output computed inside a block and read later:
    each carries gradient outside the chain, which the parts would leave out. What depends on no
    unit is held fixed, as the partial derivative at the first unit's input holds it (masks,
    position embeddings, the embeddings that Zamba's shared blocks read again).

    The check walks the recorded autograd graphs (no extra forward or backward pass)."""
    leaves = {}
    for i, rec in enumerate(records):
        for kind in ("x", "zl", "y_out"):
            t = getattr(rec, kind)
            leaves[id(t)] = (t, (i, kind))

    def refuse(what, extra):
        units = sorted({i for i, _ in extra})
        got = ", ".join(f"unit {records[i].unit.index} ({records[i].unit.name})" for i in units)
        raise ArgumentError(
            f"the units do not form a chain: {what} is computed from {got} besides the chain. Path-length "
            "attribution needs each unit's input to come from the previous unit's output (and the loss from the last "
            "unit's): gradient travelling outside the chain would be left out of the parts. Lesions still work on "
            "this model; for attribution, give an adapter whose units form a chain (unravel.register_adapter), or "
            "attribute a part of the model whose blocks run one after another.")

    for i, rec in enumerate(records):
        label = f"unit {rec.unit.index} ({rec.unit.name})"
        extra = _reaches(rec.x_in, leaves) - ({(i - 1, "y_out")} if i else set())
        if extra:
            refuse(f"the input of {label}", extra)
        for part, t, own in (("residual branch", rec.r, "x"), ("shortcut", rec.s, "x"), ("output", rec.y, "zl")):
            extra = set() if t is None else _reaches(t, leaves) - {(i, own)}
            if extra:
                refuse(f"the {part} of {label}", extra)
    extra = _reaches(L, leaves) - {(len(records) - 1, "y_out")}
    if extra:
        refuse("the loss", extra)


AUTO_CHUNK_BYTES = 512 * 2**20


def grad(outputs, inputs, grads, chunk_size=None):
    """Batched VJP: ``grads`` is a stack [K, *outputs.shape]; returns one stack per input (None
    where an input is not reached). Channels go ``chunk_size`` at a time. By default: on a CPU
    one at a time (measured: a loop of plain VJPs beats vmap-batched ones there, which are
    memory-bound), on a GPU as many as fit in 512 MiB (fewer, larger kernels)."""
    K = grads.shape[0]
    if chunk_size is None:
        if grads.device.type == "cpu":
            chunk_size = 1
        else:
            per_channel = grads[0].numel() * grads.element_size()
            chunk_size = max(1, AUTO_CHUNK_BYTES // max(1, per_channel))
    pieces = []
    for start in range(0, K, chunk_size):
        g = grads[start:start + chunk_size]
        if g.shape[0] == 1:
            got = torch.autograd.grad(outputs, inputs, like(outputs, g[0]), retain_graph=True, allow_unused=True)
            got = [None if t is None else t.unsqueeze(0) for t in got]
        else:
            got = torch.autograd.grad(outputs, inputs, stack_like(outputs, g), retain_graph=True, allow_unused=True,
                                      is_grads_batched=True)
        pieces.append(got)
    if len(pieces) == 1:
        return list(pieces[0])
    return [None if pieces[0][i] is None else torch.cat([p[i] for p in pieces]) for i in range(len(inputs))]



def builtin_loss(loss, inputs, targets):
    """``(loss, targets)`` with a built-in loss's name (:mod:`unravel.losses`) made a callable:
    ``"next_token"`` scores the output at t against token t + 1, the targets defaulting to the
    first input (the token ids). Anything else is checked and passed on."""
    loss = check_loss(loss)
    if loss != "next_token":
        return loss, targets
    if targets is None:
        first = inputs[0] if isinstance(inputs, (tuple, list)) and inputs else inputs
        targets = first if torch.is_tensor(first) else None
    return (lambda out, ids: next_token_loss(out, ids)), targets


def prepare(model, inputs, targets, loss):
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise ArgumentTypeError("the model is compiled (torch.compile): its compiled graph runs the blocks without "
                                "the per-unit recording path-length attribution needs. Pass the original module, "
                                "model._orig_mod (compile it again afterwards).")
    model_device(model)  # the meta device holds no values: one clear error
    inputs = as_tuple(inputs)
    if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].dim() == 0 or inputs[0].shape[0] == 0:
        raise ArgumentError("inputs must be a non-empty batch (a tensor, or a tuple of tensors).")
    if targets is not None and (not torch.is_tensor(targets) or targets.shape[0] != inputs[0].shape[0]):
        raise ArgumentError(f"targets must be a tensor with one entry per input ({inputs[0].shape[0]}), got "
                         f"{getattr(targets, 'shape', type(targets).__name__)}.")
    return inputs, (loss if loss is not None else default_loss(targets))


def like(output, g):
    """The cotangent ``g`` laid out in memory as ``output`` is: some backward kernels of torch 2.14
    on a CPU return wrong values when the two differ (a transposed gradient for a contiguous
    output in EfficientFormer, a contiguous one for a permuted output in TinyViT)."""
    if g.shape != output.shape or g.stride() == output.stride():
        return g
    return torch.empty_like(output).copy_(g)  # empty_like keeps a dense output's strides


def stack_like(output, gs):
    """Cotangents stacked ``[K, *output.shape]`` for a batched VJP, each slice laid out in memory
    as ``output`` is (see :func:`like`; ``torch.stack`` alone would make them contiguous)."""
    span = 1 + sum((n - 1) * st for n, st in zip(output.shape, output.stride()))
    if output.is_contiguous() or span != output.numel():  # contiguous, or not dense: as they come
        return torch.stack(list(gs))
    out = torch.empty_strided((len(gs),) + tuple(output.shape), (output.numel(),) + tuple(output.stride()),
                              dtype=gs[0].dtype, device=gs[0].device)
    for i, g in enumerate(gs):
        out[i].copy_(g)
    return out


def vjps(outputs, inputs, channels, chunk_size=None):
    """VJPs of a list of length channels (None: an exactly-zero channel, skipped). Returns, per
    input, a list over channels (None where the channel or the input's gradient is zero). On a
    CPU channels go one at a time by default (measured fastest there); on a GPU in batched chunks."""
    out = [[None] * len(channels) for _ in inputs]
    live = [i for i, g in enumerate(channels) if g is not None]
    if not live:
        return out
    if chunk_size is None:
        g0 = channels[live[0]]
        chunk_size = 1 if g0.device.type == "cpu" else max(1, AUTO_CHUNK_BYTES // max(1, g0.numel() * g0.element_size()))
    for start in range(0, len(live), chunk_size):
        idx = live[start:start + chunk_size]
        if len(idx) == 1:
            # a contiguous cotangent: some backward kernels of torch 2.14 on a CPU (TinyViT's
            # transpose-reshape-conv between units) return wrong values for a transposed one
            got = torch.autograd.grad(outputs, inputs, like(outputs, channels[idx[0]]), retain_graph=True,
                                      allow_unused=True)
            for i, t in enumerate(got):
                out[i][idx[0]] = t
        else:
            stacked = stack_like(outputs, [channels[j] for j in idx])
            got = torch.autograd.grad(outputs, inputs, stacked, retain_graph=True,
                                      allow_unused=True, is_grads_batched=True)
            for i, t in enumerate(got):
                if t is not None:
                    for j, piece in zip(idx, t.unbind(0)):
                        out[i][j] = piece
    return out


def storage(t) -> int:
    return t.untyped_storage().data_ptr()


def writable(t, foreign) -> bool:
    """Whether the channel ``t`` may be overwritten: a dense tensor of its own (no view, no
    broadcast strides) sharing no storage with the tensors in ``foreign``. Channels are owned
    by the propagation (each VJP's result sits in one slot), but a VJP can hand back its
    cotangent or a view of it (identity-like branches), which must stay untouched."""
    return t._base is None and t.is_contiguous() and storage(t) not in foreign


def is_relu(fn) -> bool:
    return fn is F.relu or fn is torch.relu or isinstance(fn, nn.ReLU)


def post_vjp(rec, G, chunk_size=None):
    """VJP through ``post``: a ReLU is its threshold backward per channel (no autograd call),
    anything else goes through autograd."""
    if rec.y is rec.zl:
        return G
    if is_relu(rec.unit.parts.post):
        mask, out = None, []
        for g in G:
            if g is None:
                out.append(None)
            elif g.shape == rec.y.shape and writable(g, ()):
                # in place: the previous unit's channels are not read again
                mask = rec.y <= 0 if mask is None else mask
                out.append(g.masked_fill_(mask, 0))
            else:
                out.append(torch.ops.aten.threshold_backward(g, rec.y, 0))
        return out
    return vjps(rec.y, [rec.zl], G, chunk_size)[0]

