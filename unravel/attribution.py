"""Which path lengths carry the gradient: the exact decomposition, Veit et al.'s sampling
estimator, norm preservation, and a callback that tracks them over training.

The exact decomposition groups the terms of the chain rule by how many residual branches they
traverse; it is exact for the gradient (the linearisation at the recorded activations), not a
claim that the network's function is a sum of independent paths. It assumes the units form a
chain (DenseNet layers included: their concatenation is a unit) and does not check that nothing
outside the units connects a unit's output to a later one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ._routing import Layer, route
from .graph import UnraveledGraph
from .train import Callback
from .units import find_units

__all__ = ["path_length_gradients", "PathLengthGradients", "norm_ratios", "PathLengthTracker"]

METHODS = ("exact", "sample")
WRT = ("input", "units")


# ------------------------------------------------------------------------------------------
# Recording one forward pass as per-unit local graphs


@dataclasses.dataclass
class _Record:
    x_in: torch.Tensor      # what reached the unit, still attached to the graph before it
    x: torch.Tensor         # a leaf copy of it: the unit's local graph starts here
    s: torch.Tensor | None  # shortcut(x); None for plain units
    r: torch.Tensor         # residual(x)
    z: torch.Tensor         # s + r
    zl: torch.Tensor        # a leaf copy of z: post's local graph starts here
    y: torch.Tensor         # post(zl)
    y_out: torch.Tensor     # a leaf copy of y: what the rest of the network received


def _default_loss(targets):
    if targets is None:
        # no targets: the gradient of the predicted class's logit (as in saliency maps)
        return lambda out, _: out.max(-1).values.sum()
    return lambda out, t: F.cross_entropy(out, t)


@contextlib.contextmanager
def _analysis_mode(model, mode):
    """Eval mode, or train mode with every buffer (BN running statistics) put back afterwards."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()] if mode == "train" else []
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _record(model, units, inputs, targets, loss):
    records: list[_Record | None] = [None] * len(units)

    def compute(unit, x_in, position_unit, **kw):
        p = position_unit.index
        if records[p] is not None:
            raise ValueError(f"unit {p} ({position_unit.name}) ran twice in one forward pass; path-length "
                             "attribution needs every unit to run once (no weight sharing).")
        x = x_in.detach().requires_grad_(True)
        s = None if unit.kind == "plain" else unit.shortcut(x)
        r = unit.residual(x, **kw)
        z = r if s is None else s + r
        # separate local graphs for post and for the branches, so that a VJP through post with
        # respect to parameters reaches post's parameters only
        zl = z.detach().requires_grad_(True)
        y = unit.post(zl)
        y_out = y.detach().requires_grad_(True)
        records[p] = _Record(x_in, x, s, r, z, zl, y, y_out)
        return y_out

    with torch.enable_grad(), route(units, Layer(compute=compute)):
        out = model(*inputs)
        if not torch.is_tensor(out):
            raise TypeError(f"the model returned {type(out).__name__}; path-length attribution needs a tensor "
                            "output (or give loss=... that reduces it).")
        L = loss(out, targets)
    missing = [u.name for u, r in zip(units, records) if r is None]
    if missing:
        raise ValueError(f"units {missing} did not run in the forward pass; cannot attribute through them.")
    if L.dim() != 0:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(L.shape)}.")
    return records, out, L


_AUTO_CHUNK_BYTES = 512 * 2**20


def _grad(outputs, inputs, grads, chunk_size=None):
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
            chunk_size = max(1, _AUTO_CHUNK_BYTES // max(1, per_channel))
    pieces = []
    for start in range(0, K, chunk_size):
        g = grads[start:start + chunk_size]
        if g.shape[0] == 1:
            got = torch.autograd.grad(outputs, inputs, g[0], retain_graph=True, allow_unused=True)
            got = [None if t is None else t.unsqueeze(0) for t in got]
        else:
            got = torch.autograd.grad(outputs, inputs, g, retain_graph=True, allow_unused=True, is_grads_batched=True)
        pieces.append(got)
    if len(pieces) == 1:
        return list(pieces[0])
    return [None if pieces[0][i] is None else torch.cat([p[i] for p in pieces]) for i in range(len(inputs))]


# ------------------------------------------------------------------------------------------
# The result


@dataclasses.dataclass
class PathLengthGradients:
    """Gradient magnitude by path length, from :func:`path_length_gradients`.

    Attributes
    ----------
    method : {"exact", "sample"}
    wrt : {"input", "units"}
    lengths : torch.Tensor
        The path lengths reported, ``0 .. K-1``.
    counts : list of int
        Paths of each length (exact integers).
    norms : torch.Tensor
        Magnitude carried by each length. Exact: the norm of the length-k part of the gradient
        (over the whole batch; for ``wrt="units"``, over all parameters). Sample: the mean
        single-path norm times the number of paths (Veit et al.'s "total gradient magnitude").
    per_path_norm : torch.Tensor
        Sample: the mean single-path gradient norm (Veit Fig. 6(a)). Exact: ``norms / counts``,
        the length-k part shared evenly among its paths (a vector sum, so at most the mean
        single-path norm).
    by_length : torch.Tensor or None
        Exact, ``wrt="input"``: the parts, shape ``[K, *input_shape]``; they sum to the gradient.
        Like the parts below, on the model's device (copying them to the host can cost more than
        computing them on a GPU); the norms are on the CPU.
    param_by_length : dict or None
        Exact, ``wrt="units"``: parameter name -> parts ``[K, *param.shape]`` (every parameter of
        the model; those outside the units carry the lengths of the paths below or above them).
    total : torch.Tensor or None
        Exact, ``wrt="input"``: the sum of the parts (equal to autograd's gradient).
    dropped_norm : float
        With ``max_length``: the norm of the longer paths' part, not kept (0 otherwise).
    samples : torch.Tensor or None
        Sample: single paths used per length.
    std : torch.Tensor or None
        Sample: standard deviation of the single-path norms per length.
    loss : float
    """

    method: str
    wrt: str
    lengths: torch.Tensor
    counts: list
    norms: torch.Tensor
    per_path_norm: torch.Tensor
    by_length: torch.Tensor | None = None
    param_by_length: dict | None = None
    total: torch.Tensor | None = None
    dropped_norm: float = 0.0
    samples: torch.Tensor | None = None
    std: torch.Tensor | None = None
    loss: float = float("nan")

    @property
    def share(self) -> torch.Tensor:
        """Each length's share of the summed magnitude."""
        total = self.norms.sum()
        return self.norms / total if total > 0 else torch.zeros_like(self.norms)

    @property
    def mean_length(self) -> float:
        """The magnitude-weighted mean path length."""
        return float((self.share * self.lengths.to(self.share.dtype)).sum())

    def effective_paths(self, mass: float = 0.9) -> dict:
        """The shortest window of lengths holding at least ``mass`` of the magnitude.

        Returns a dict: ``lengths`` (first, last), ``share`` (what the window holds),
        ``num_paths`` (exact) and ``fraction_of_paths``. Among windows of equal width the one
        holding the most is chosen.
        """
        if not 0 < mass <= 1:
            raise ValueError(f"mass={mass!r}: must lie in (0, 1].")
        share = self.share.tolist()
        K = len(share)
        best = None
        for width in range(1, K + 1):
            for a in range(0, K - width + 1):
                held = sum(share[a:a + width])
                if held >= mass * (1 - 1e-9) and (best is None or held > best[2]):
                    best = (a, a + width - 1, held)
            if best is not None:
                break
        a, b, held = best
        num = sum(self.counts[a:b + 1])
        return {"lengths": (a, b), "share": held, "num_paths": num, "fraction_of_paths": num / sum(self.counts)}

    def to_frame(self):
        """Tidy frame: one row per length (method, wrt, length, count, norm, per_path_norm, share,
        and for sampling samples and std)."""
        import pandas as pd

        frame = pd.DataFrame({
            "method": self.method, "wrt": self.wrt, "length": self.lengths.tolist(),
            "count": pd.Series(self.counts[: len(self.lengths)], dtype=object),
            "norm": self.norms.tolist(), "per_path_norm": self.per_path_norm.tolist(),
            "share": self.share.tolist()})
        if self.samples is not None:
            frame["samples"] = self.samples.tolist()
            frame["std"] = self.std.tolist()
        return frame


# ------------------------------------------------------------------------------------------
# Exact decomposition


def _prepare(model, inputs, targets, loss):
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].shape[0] == 0:
        raise ValueError("inputs must be a non-empty batch (a tensor, or a tuple of tensors).")
    if targets is not None and (not torch.is_tensor(targets) or targets.shape[0] != inputs[0].shape[0]):
        raise ValueError(f"targets must be a tensor with one entry per input ({inputs[0].shape[0]}), got "
                         f"{getattr(targets, 'shape', type(targets).__name__)}.")
    return inputs, (loss if loss is not None else _default_loss(targets))


def _vjps(outputs, inputs, channels, chunk_size=None):
    """VJPs of a list of length channels (None: an exactly-zero channel, skipped). Returns, per
    input, a list over channels (None where the channel or the input's gradient is zero). On a
    CPU channels go one at a time by default (measured fastest there); on a GPU in batched chunks."""
    out = [[None] * len(channels) for _ in inputs]
    live = [i for i, g in enumerate(channels) if g is not None]
    if not live:
        return out
    if chunk_size is None:
        g0 = channels[live[0]]
        chunk_size = 1 if g0.device.type == "cpu" else max(1, _AUTO_CHUNK_BYTES // max(1, g0.numel() * g0.element_size()))
    for start in range(0, len(live), chunk_size):
        idx = live[start:start + chunk_size]
        if len(idx) == 1:
            got = torch.autograd.grad(outputs, inputs, channels[idx[0]], retain_graph=True, allow_unused=True)
            for i, t in enumerate(got):
                out[i][idx[0]] = t
        else:
            got = torch.autograd.grad(outputs, inputs, torch.stack([channels[j] for j in idx]), retain_graph=True,
                                      allow_unused=True, is_grads_batched=True)
            for i, t in enumerate(got):
                if t is not None:
                    for j, piece in zip(idx, t.unbind(0)):
                        out[i][j] = piece
    return out


def _add(a, b):
    return a if b is None else b if a is None else a + b


def _storage(t) -> int:
    return t.untyped_storage().data_ptr()


def _writable(t, foreign) -> bool:
    """Whether the channel ``t`` may be overwritten: a dense tensor of its own (no view, no
    broadcast strides) sharing no storage with the tensors in ``foreign``. Channels are owned
    by the propagation (each VJP's result sits in one slot), but a VJP can hand back its
    cotangent or a view of it (identity-like branches), which must stay untouched."""
    return t._base is None and t.is_contiguous() and _storage(t) not in foreign


def _through_unit(short, res, c, M):
    """Combine a unit's shortcut and residual VJPs of the length channels (c kept channels for
    lengths 0..c-1, then one overflow channel for lengths > M): the shortcut keeps each length,
    the residual branch adds one. Returns min(c+1, M+1) kept channels and the overflow."""
    c_new = min(c + 1, M + 1)
    kept = min(c, c_new - 1)  # residual channels that stay within max_length
    new = [None] * (c_new + 1)
    if short is not None:  # a plain unit has none: every path takes its residual branch
        new[:c] = short[:c]
    foreign = {_storage(t) for t in short if t is not None} if short is not None else set()
    for k in range(kept):
        a, b = new[k + 1], res[k]
        if a is not None and b is not None and b.shape == a.shape and b.dtype == a.dtype and _writable(b, foreign):
            new[k + 1] = b.add_(a)  # no new buffer: on a CPU, fresh pages cost as much as the sum
        else:
            new[k + 1] = _add(a, b)
    overflow = short[c] if short is not None else None
    for k in range(kept, c + 1):  # pushed past max_length, and the old overflow
        overflow = _add(overflow, res[k])
    new[c_new] = overflow
    return new


def _is_relu(fn) -> bool:
    return fn is F.relu or fn is torch.relu or isinstance(fn, nn.ReLU)


def _post_vjp(unit, rec, G, chunk_size=None):
    """VJP through ``post``: a ReLU is its threshold backward per channel (no autograd call),
    anything else goes through autograd."""
    if rec.y is rec.zl:
        return G
    if _is_relu(unit.parts.post):
        mask, out = None, []
        for g in G:
            if g is None:
                out.append(None)
            elif g.shape == rec.y.shape and _writable(g, ()):
                # in place: the previous unit's channels are not read again
                mask = rec.y <= 0 if mask is None else mask
                out.append(g.masked_fill_(mask, 0))
            else:
                out.append(torch.ops.aten.threshold_backward(g, rec.y, 0))
        return out
    return _vjps(rec.y, [rec.zl], G, chunk_size)[0]


def _exact(model, units, records, L, wrt, max_length, chunk_size):
    """Propagate the length channels from the output to the first unit's input
    (DESIGN: G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}). Channels are a list
    (the last one the overflow past ``max_length``); None marks an exactly-zero channel."""
    n = len(units)
    M = n if max_length is None else min(max_length, n)
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
        got = _vjps(out, [leaf] + [params[k] for k in names], G, chunk_size)
        accumulate(names, got[1:], shift)
        return got[0]

    last = records[-1]
    head = torch.autograd.grad(L, [last.y_out] + [params[k] for k in outside], retain_graph=True, allow_unused=True)
    for name, g in zip(outside, head[1:]):
        if g is not None:  # the head: no residual branch between it and the loss
            pgrads[name][0] = g
    G = [head[0], None]  # length 0, and an empty overflow
    for l in range(n - 1, -1, -1):
        rec, names = records[l], unit_params.get(units[l].module, [])
        c = len(G) - 1
        if rec.y is rec.zl or _is_relu(units[l].parts.post):  # a ReLU has no parameters
            gz = _post_vjp(units[l], rec, G, chunk_size)
        else:
            gz = vjp(rec.y, rec.zl, G, names, 0)
        res = vjp(rec.r, rec.x, gz, names, 1)
        if rec.s is None:
            short = None
        elif rec.s is rec.x:
            short = gz
        else:
            short = vjp(rec.s, rec.x, gz, names, 0)
        G = _through_unit(short, res, c, M)
        if l > 0:
            if rec.x_in is not records[l - 1].y_out:  # code between units: shared by every path
                G = vjp(rec.x_in, records[l - 1].y_out, G, outside, 0)
        elif outside and rec.x_in.grad_fn is not None:
            # the stem: its parameters take the lengths of the paths above it
            accumulate(outside, _vjps(rec.x_in, [params[k] for k in outside], G, chunk_size), 0)
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
        Any model :func:`unravel.find_units` supports; its units must form a chain (a DenseNet's
        layers do). Never changed: modes and buffers are restored.
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
    ValueError
        For an unknown ``method``/``wrt``/``mode``, ``method="sample"`` with ``wrt="units"``, an
        empty batch, a model whose units do not run exactly once, or a ``batch_size`` that cannot
        split the loss.

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
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(METHODS)}.")
    if wrt not in WRT:
        raise ValueError(f"wrt={wrt!r}; allowed: {', '.join(WRT)}.")
    if mode not in ("eval", "train"):
        raise ValueError(f"mode={mode!r}; allowed: 'eval', 'train'.")
    if method == "sample" and wrt != "input":
        raise ValueError("method='sample' measures single-path gradients at the input: use wrt='input'.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 0):
        raise ValueError(f"max_length={max_length!r}: must be a non-negative integer.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r}: must be a positive integer.")
    if batch_size is not None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer.")
        if method != "exact" or loss is not None or mode != "eval":
            raise ValueError("batch_size splits the exact decomposition over examples: it needs method='exact', "
                             "the default loss (mean cross-entropy, or the summed top logit) and mode='eval'.")
    inputs, loss_fn = _prepare(model, inputs, targets, loss)
    units = find_units(model)
    n = len(units)
    counts = UnraveledGraph(units).length_counts()
    M = n if max_length is None else min(max_length, n)
    B = inputs[0].shape[0]
    step = B if batch_size is None else batch_size
    L = 0.0
    input_parts, param_parts = [], None
    with _analysis_mode(model, mode):
        if method == "sample":
            records, _, L = _record(model, units, inputs, targets, loss_fn)
            return _sample(units, records, L, counts, num_samples, chunk_size or 64, generator, max_length)
        for start in range(0, B, step):
            piece = tuple(t[start:start + step] for t in inputs)
            piece_targets = None if targets is None else targets[start:start + step]
            records, _, L_piece = _record(model, units, piece, piece_targets, loss_fn)
            G, pgrads = _exact(model, units, records, L_piece, wrt, max_length, chunk_size)
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


# ------------------------------------------------------------------------------------------
# Veit et al.'s estimator


def _sample(units, records, L, counts, num_samples, batch_paths, generator, max_length):
    from .graph import _python_rng

    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: must be a positive integer.")
    n = len(units)
    g = UnraveledGraph(units)
    rng = _python_rng(generator)
    M = n if max_length is None else min(max_length, n)
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
            elif _is_relu(units[l].parts.post):
                gz = torch.ops.aten.threshold_backward(G, rec.y.expand_as(G), 0)
            else:
                gz = _grad(rec.y, [rec.zl], G)[0]
            res_rows = takes[l].nonzero().flatten().tolist()
            short_rows = (~takes[l]).nonzero().flatten().tolist()
            out = None
            for rows, branch in ((res_rows, rec.r), (short_rows, rec.s)):
                if not rows:
                    continue
                if branch is None:
                    raise AssertionError("a path skipped a plain unit")  # sampled paths never do
                part = gz[rows] if branch is rec.x else _grad(branch, [rec.x], gz[rows])[0]
                if out is None:
                    out = part.new_empty((P,) + tuple(part.shape[1:]))
                out[rows] = part
            G = out
            if l > 0 and rec.x_in is not records[l - 1].y_out:
                G = _grad(rec.x_in, [records[l - 1].y_out], G)[0]
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


# ------------------------------------------------------------------------------------------
# Norm preservation


def norm_ratios(model: nn.Module, inputs, targets=None, *, loss: Callable | None = None, mode: str = "eval"):
    """Per unit, ``||dL/dx_l|| / ||dL/dx_{l+1}||``: the norm-preservation measure [1]_.

    Returns a tidy frame: unit, name, projection, kind, grad_in (``||dL/dx_l||``), grad_out
    (``||dL/dx_{l+1}||``), ratio. Ratios near 1 mean the backward signal keeps its norm.

    Examples
    --------
    >>> import torch, unravel
    >>> frame = unravel.attribution.norm_ratios(unravel.models.resmlp(8, 3, width=8, depth=3), torch.randn(4, 8))
    >>> frame.columns.tolist()
    ['unit', 'name', 'projection', 'kind', 'grad_in', 'grad_out', 'ratio']

    References
    ----------
    .. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
       Become Extremely Deep?" IEEE TPAMI 43(11), 2021.
    """
    import pandas as pd

    if mode not in ("eval", "train"):
        raise ValueError(f"mode={mode!r}; allowed: 'eval', 'train'.")
    inputs, loss_fn = _prepare(model, inputs, targets, loss)
    units = find_units(model)
    with _analysis_mode(model, mode):
        records, _, L = _record(model, units, inputs, targets, loss_fn)
        # backpropagate once through the recorded local graphs, unit by unit
        g, = torch.autograd.grad(L, records[-1].y_out, retain_graph=True)
        rows = []
        for l in range(len(units) - 1, -1, -1):
            rec = records[l]
            gz = g if rec.y is rec.zl else torch.autograd.grad(rec.y, rec.zl, g, retain_graph=True)[0]
            gx, = torch.autograd.grad(rec.z, rec.x, gz, retain_graph=True)
            rows.append(dict(unit=l, name=units[l].name, projection=units[l].projection, kind=units[l].kind,
                             grad_in=float(gx.norm()), grad_out=float(g.norm())))
            g = gx
            if l > 0:
                prev = records[l - 1]
                if rec.x_in is not prev.y_out:
                    g, = torch.autograd.grad(rec.x_in, prev.y_out, g, retain_graph=True)
    frame = pd.DataFrame(rows[::-1])
    frame["ratio"] = frame.grad_in / frame.grad_out
    return frame


# ------------------------------------------------------------------------------------------
# Tracking over training


class PathLengthTracker(Callback):
    """Records path-length histograms (and optionally k-unit subnetwork errors) during
    :func:`unravel.train.fit`, on a fixed probe batch.

    Parameters
    ----------
    probe : (inputs, targets) or DataSplit
        The probe batch (a DataSplit gives the first ``probe_size`` test examples).
    every : int
        Record every ``every`` epochs (and before training, as epoch 0).
    every_steps : int, optional
        Record every so many optimisation steps instead.
    wrt : iterable of {"input", "units"}
        Default: the parameter gradient (what the shallow-subnetwork-first claim is about).
    subnetwork_units : iterable of int, optional
        Also measure the error of random subnetworks that keep k units (the others deleted,
        via :func:`unravel.lesion.delete_random`), ``subnetwork_samples`` draws each, on the probe.
    probe_size : int
        A record costs about n(n+1)/2 single-unit VJPs with weight gradients on the probe, mostly
        per-call overhead at these sizes (a 15-unit MNIST-1D ResNet: 0.16 s on two CPU cores,
        0.06 s on an H100, about 13% of a 4,000-example epoch). ``every=2`` records half as often.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(200, num_classes=2)
    >>> tracker = unravel.attribution.PathLengthTracker(data, probe_size=32)
    >>> _ = unravel.train.fit(unravel.models.resmlp(16, 2, width=8, depth=3), data, epochs=2,
    ...                       callbacks=[tracker], progress=False)
    >>> sorted(tracker.to_frame().epoch.unique().tolist())
    [0, 1, 2]
    """

    def __init__(self, probe, every: int = 1, every_steps: int | None = None, wrt: Iterable[str] = ("units",),
                 subnetwork_units: Iterable[int] | None = None, subnetwork_samples: int = 3, probe_size: int = 64,
                 seed: int = 0):
        from .data import DataSplit

        if isinstance(probe, DataSplit):
            probe = probe.batch(probe_size)
        if not (isinstance(probe, (tuple, list)) and len(probe) == 2):
            raise TypeError("probe must be (inputs, targets) or a DataSplit.")
        self.inputs, self.targets = probe
        if every < 1 or (every_steps is not None and every_steps < 1):
            raise ValueError("every and every_steps must be positive integers.")
        self.every, self.every_steps = every, every_steps
        self.wrt = tuple(wrt)
        for w in self.wrt:
            if w not in WRT:
                raise ValueError(f"wrt entry {w!r}; allowed: {', '.join(WRT)}.")
        self.subnetwork_units = list(subnetwork_units) if subnetwork_units is not None else []
        self.subnetwork_samples, self.seed = subnetwork_samples, seed
        self.frames: list = []
        self.subnetwork_frames: list = []
        self._epoch = 0

    def _measure(self, model, epoch, step):
        device = next(model.parameters()).device
        x, y = self.inputs.to(device), self.targets.to(device)
        for w in self.wrt:
            res = path_length_gradients(model, x, y, wrt=w)
            self.frames.append(res.to_frame().assign(epoch=epoch, step=step, loss=res.loss,
                                                     mean_length=res.mean_length))
        if self.subnetwork_units:
            from .lesion import delete_random

            n = len(find_units(model))
            ks = [n - k for k in self.subnetwork_units if 0 <= n - k <= n]
            deleting = [k for k in ks if k >= 1]
            if deleting:
                df = delete_random(model, (x, y), ks=deleting, samples_per_k=self.subnetwork_samples,
                                   seed=self.seed, progress=False)
                df = df[df.variant >= 0]
            else:
                import pandas as pd

                df = pd.DataFrame(columns=["k", "error", "loss"])
            if n in self.subnetwork_units:  # the whole network
                from .train import evaluate

                m = evaluate(model, (x, y))
                import pandas as pd

                df = pd.concat([df, pd.DataFrame([{"k": 0, "error": m["error"], "loss": m["loss"]}])])
            self.subnetwork_frames.append(df.assign(subnetwork_units=n - df.k, epoch=epoch, step=step))

    def on_train_begin(self, model):
        self._epoch = 0
        self._measure(model, 0, 0)

    def on_step_end(self, model, step, metrics):
        if self.every_steps and step % self.every_steps == 0:
            self._measure(model, metrics["epoch"], step)

    def on_epoch_end(self, model, metrics):
        self._epoch = metrics["epoch"]
        if not self.every_steps and metrics["epoch"] % self.every == 0:
            self._measure(model, metrics["epoch"], None)

    def to_frame(self):
        """All recorded histograms, one row per (epoch or step, wrt, length)."""
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def subnetworks_frame(self):
        """Errors of random k-unit subnetworks over training."""
        import pandas as pd

        return pd.concat(self.subnetwork_frames, ignore_index=True) if self.subnetwork_frames else pd.DataFrame()


