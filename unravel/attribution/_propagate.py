"""One unit of the exact decomposition's backward recursion, streamed channel by channel.

``G^(l)_k = S_l^T P_l^T G^(l+1)_k + R_l^T P_l^T G^(l+1)_{k-1}`` (DESIGN's symbols: S the
shortcut, R the residual branch, P the post). The channels are walked from the longest length
down, a few at a time, so that a channel's buffer is freed (or reused in place) as soon as its VJPs
are taken: the unit holds about one set of channels, not two. It does not check the chain (the
recording does).
"""

from __future__ import annotations

import torch

from ._record import AUTO_CHUNK_BYTES, is_relu, storage, vjps, writable


def group_size(g0, chunk_size):
    """Channels per batched VJP: ``chunk_size``, or by default one on a CPU (measured fastest
    there) and as many as fit in 512 MiB on a GPU."""
    if chunk_size is not None:
        return chunk_size
    if g0.device.type == "cpu":
        return 1
    return max(1, AUTO_CHUNK_BYTES // max(1, g0.numel() * g0.element_size()))


def _add(a, b):
    return a if b is None else b if a is None else a + b


class _Post:
    """``P^T`` for one unit: a ReLU's derivative applied in place to the channels this
    propagation owns (``threshold_backward`` against the recorded output, measured several times
    faster on a CPU than ``masked_fill_`` with a boolean mask); anything else goes through autograd."""

    def __init__(self, rec, vjp):
        self.rec, self.vjp = rec, vjp
        self.y = rec.y.detach()  # an out= kernel refuses an input that requires grad
        self.relu = rec.y is not rec.zl and is_relu(rec.unit.parts.post)

    def __call__(self, sub, names):
        rec = self.rec
        if rec.y is rec.zl:
            return sub
        if not self.relu:
            return self.vjp(rec.y, rec.zl, sub, names, 0)
        out = []
        for g in sub:
            if g is None:
                out.append(None)
            elif g.shape == rec.y.shape and g.dtype == rec.y.dtype and writable(g, ()):
                out.append(torch.ops.aten.threshold_backward.grad_input(g, self.y, 0, grad_input=g))
            else:
                out.append(torch.ops.aten.threshold_backward(g, self.y, 0))
        return out


def through_unit(rec, G, M, names, vjp, chunk_size, out=None):
    """The channels at the unit's input from those at its output.

    ``G`` holds c kept channels (lengths 0..c-1) and an overflow (lengths > M); None marks an
    exactly-zero channel. ``vjp(output, leaf, channels, names, shift)`` takes a channel list of the
    same length (None where skipped) and accumulates the parameter parts. Returns min(c+1, M+1)
    kept channels and the overflow (c+1 channels for a deleted unit, which adds no length). ``G``
    is emptied as it is consumed. With ``out`` (a ``[M+2, *x.shape]`` buffer) the channels are
    written there (row M+1 the overflow, unreached rows zero) and ``out`` is returned."""
    c = len(G) - 1
    post = _Post(rec, vjp)
    if rec.r is None:  # a deleted unit: every path takes its shortcut, no length is added
        gz = post(list(G), names)  # a copy: an identity post hands its list back
        G[:] = [None] * len(G)
        short = gz if rec.s is rec.x else vjp(rec.s, rec.x, gz, names, 0)
        return short if out is None else _fill(out, short[:c], short[c], c, M)
    c_new = min(c + 1, M + 1)
    kept = min(c, c_new - 1)  # residual channels that stay within max_length
    new = [None] * (c_new + 1)
    done = set()  # rows of ``out`` already written
    live = [k for k in range(c, -1, -1) if G[k] is not None]
    step = group_size(G[live[0]], chunk_size) if live else 1
    for start in range(0, len(live), step):
        group = live[start:start + step]
        sub = [None] * (c + 1)
        for k in group:
            sub[k], G[k] = G[k], None
        gz = post(sub, names)
        # the group's cotangents and shortcut parts: a VJP can hand its cotangent back (an
        # identity-like branch), so a result sharing one of their buffers is never written in
        # place (only live buffers are listed: a freed one's address may be reused)
        cotangents = {storage(g) for g in gz if g is not None}
        if rec.s is None:  # a plain unit: every path takes its residual branch
            short = [None] * (c + 1)
        elif rec.s is rec.x:
            short = gz
        else:
            short = vjp(rec.s, rec.x, gz, names, 0)
        res = vjp(rec.r, rec.x, gz, names, 1)
        cotangents.update(storage(t) for t in short if t is not None)
        del sub
        for k in group:  # longest first: slot k+1 already holds S^T of channel k+1
            s_k, r_k = short[k], res[k]
            short[k] = res[k] = None
            if k < c:
                new[k] = s_k if new[k] is None else _add(new[k], s_k)
            else:
                new[c_new] = _add(new[c_new], s_k)
            if k >= kept:  # pushed past max_length, and the old overflow
                new[c_new] = _add(new[c_new], r_k)
                continue
            a = new[k + 1]
            if out is not None and r_k is not None:
                new[k + 1] = out[k + 1].copy_(r_k) if a is None else torch.add(r_k, a, out=out[k + 1])
                done.add(k + 1)
            elif a is None or r_k is None:
                new[k + 1] = a if r_k is None else r_k
            elif r_k.shape == a.shape and r_k.dtype == a.dtype and writable(r_k, cotangents):
                new[k + 1] = r_k.add_(a)  # no new buffer: on a CPU, fresh pages cost as much as the sum
            else:
                new[k + 1] = a + r_k
        del gz, cotangents
    if out is None:
        return new
    return _fill(out, new[:c_new], new[c_new], c_new, M, done)


def _fill(out, kept, overflow, K, M, done=()):
    """Write kept channels 0..K-1 and the overflow into ``out`` (rows K..M zero)."""
    for i, g in enumerate(kept):
        if i in done:
            continue
        if g is None:
            out[i].zero_()
        else:
            out[i].copy_(g)
    out[K:M + 1].zero_()
    if overflow is None:
        out[M + 1].zero_()
    else:
        out[M + 1].copy_(overflow)
    return out
