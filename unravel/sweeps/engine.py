"""The lesion-sweep engine: evaluates many lesioned variants of one model on one dataset,
reusing the unlesioned states of each batch and stacking variants that resume at the same unit
on the batch dimension. Private: :mod:`unravel.sweeps` builds the public studies on it.

It assumes the model couples no samples in eval mode (true of BN in eval mode, convolutions,
attention within a sequence) and does not check it; ``run_naive`` is the reference loop the
engine is tested against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from .._utils import logits_of, rows_of
from ..errors import ArgumentError
from ..interventions import intervene

# ------------------------------------------------------------------------------------------
# The sweep engine


@dataclass
class Variant:
    """One lesioned network: units deleted, and (for reorders) the order of units."""

    id: int
    k: int
    deleted: tuple[int, ...] = ()
    order: tuple[int, ...] | None = None
    draw: int = 0
    info: dict = field(default_factory=dict)

    @property
    def first(self) -> int:
        """The first position whose computation differs from the unlesioned network."""
        changed = list(self.deleted)
        if self.order is not None:
            changed += [p for p, q in enumerate(self.order) if p != q]
        return min(changed) if changed else 10**9

    def placed(self, p: int) -> int:
        return p if self.order is None else self.order[p]


def make_scorer(loss_fn, next_token: bool = False, ignore_index: int = -100):
    """``score(output, targets) -> (summed loss, errors, items, per, wrong)``: the logits are read
    by :func:`unravel._utils.logits_of`; classifier outputs ``[B, C]`` against ``[B]`` targets are
    scored per example, sequence outputs ``[B, T, C]`` against ``[B, T]`` per token (tokens equal
    to ``ignore_index`` left out); ``next_token`` shifts them (position t predicts token t + 1).
    ``wrong`` is the bool tensor ``[items]`` of the scored items, in order, True where the argmax
    is not the target (``errors == wrong.sum()``)."""

    def score(out, y):
        logits = logits_of(out)
        if next_token:
            if logits.dim() < 3 or y.dim() < 2:
                raise ArgumentError(f"next_token=True needs sequence outputs [B, T, C] and targets [B, T]; got "
                                    f"outputs {tuple(logits.shape)} and targets {tuple(y.shape)}.")
            logits, y = logits[:, :-1], y[:, 1:]
        if logits.dim() == y.dim() + 1 and logits.shape[:-1] == y.shape:
            per = "example" if y.dim() == 1 else "token"
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            keep = y != ignore_index
            if not bool(keep.all()):
                logits, y = logits[keep], y[keep]
        else:
            raise ArgumentError(f"cannot score outputs of shape {tuple(logits.shape)} against targets of shape "
                                f"{tuple(y.shape)}: expected [B, C] against [B] (per example) or [B, T, C] "
                                "against [B, T] (per token).")
        wrong = logits.argmax(-1) != y
        return float(loss_fn(logits, y, reduction="sum")), int(wrong.sum()), int(y.numel()), per, wrong

    return score


class Tally:
    """Summed loss and errors over the scored items (examples or tokens) of one variant; with
    ``keep_items`` also each item's wrong flag (bool, on the CPU), in the order scored."""

    def __init__(self, keep_items: bool = False):
        self.loss, self.wrong, self.count, self.per = 0.0, 0, 0, None
        self.flags: list[torch.Tensor] | None = [] if keep_items else None

    def add(self, out, y, score):
        loss, wrong, count, per, flags = score(out, y)
        self.loss += loss
        self.wrong += wrong
        self.count += count
        self.per = per
        if self.flags is not None:
            self.flags.append(flags.detach().to("cpu", torch.bool))

    def metrics(self):
        if self.count == 0:
            raise ArgumentError("no example or token was scored (all targets are ignore_index?).")
        return {"error": self.wrong / self.count, "loss": self.loss / self.count, "samples": self.count,
                "per": self.per}

    def items(self) -> np.ndarray:
        """The wrong flags of the scored items, ``[count]`` bool (needs ``keep_items``)."""
        if self.flags is None:
            raise RuntimeError("this Tally was made without keep_items=True")
        return torch.cat(self.flags).numpy() if self.flags else np.zeros(0, dtype=bool)


def _first(v: Variant, base: frozenset) -> int:
    """The first position where ``v`` computes differently from the network with ``base`` deleted."""
    if not base:
        return v.first
    changed = [p for p in v.deleted if p not in base]
    return min(changed) if changed else 10**9


def _stacked_compute(units, variants, cache, batch, f):
    """The ``compute`` of a routing layer that runs ``variants`` (all with the same first change
    ``f``) stacked on the batch dimension: before ``f`` every unit returns its cached output (of
    the network the cache recorded) instead of computing; from ``f`` on each variant runs its own
    units."""
    V = len(variants)

    def compute(unit, x, position, **kw):
        p = position.index
        if p < f:
            cached = cache[p]
            return cached if V == 1 else cached.repeat((V,) + (1,) * (cached.dim() - 1))
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, v in enumerate(variants):
            q = v.placed(p)
            groups.setdefault((q, q in v.deleted), []).append(j)

        def run(action, xs, kws):
            q, gone = action
            return units[q].bypass(xs) if gone else units[q].forward(xs, **kws)

        if len(groups) == 1:
            return run(next(iter(groups)), x, kw)
        # the largest group runs on the whole stack (no gather, no scatter of its rows; its few
        # extra rows are overwritten below) when it holds most rows; the others on their own rows
        major, majority = max(groups.items(), key=lambda kv: len(kv[1]))
        out = None
        if 2 * len(majority) > V:
            out = run(major, x, kw)
            if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
                out = out.clone()  # the rows written below must not change x, which the others read
            groups = {a: js for a, js in groups.items() if a != major}
        for action, js in groups.items():
            rows = torch.cat([torch.arange(j * batch, (j + 1) * batch, device=x.device) for j in js])
            # per-example keyword tensors (attention masks, rotary tables) follow their rows
            part = run(action, x.index_select(0, rows), rows_of(kw, rows, V * batch))
            if out is None:
                out = part.new_empty((V * batch,) + tuple(part.shape[1:]))
            out.index_copy_(0, rows, part)
        return out

    return compute


class Engine:
    """Evaluates variants of one model on one dataset (see the module docstring)."""

    def __init__(self, model, units, loader, device, score, max_rows, keep_items: bool = False):
        self.model, self.units, self.loader, self.device = model, units, loader, device
        self.score, self.max_rows, self.keep_items = score, max_rows, keep_items

    def run(self, variants: list[Variant], baseline: Tally | None, base=()):
        """Tallies for ``variants`` (and the unlesioned net into ``baseline`` when given).

        ``base``: units that every variant deletes (a greedy search's chosen units). The states
        are then recorded on the network with ``base`` deleted, and each variant resumes from
        them at its first unit outside ``base``: a greedy step costs what deleting each unit of
        that network costs, not a full forward per candidate."""
        base = frozenset(base)
        if base:
            if baseline is not None:
                raise ArgumentError("Engine.run: a baseline tally is the unlesioned network's; give base=() for it")
            if any(v.order is not None or not base <= set(v.deleted) for v in variants):
                raise ArgumentError("Engine.run: with base, every variant deletes the base units and reorders none")
        tallies = {v.id: Tally(self.keep_items) for v in variants}
        by_first: dict[int, list[Variant]] = {}
        for v in variants:
            by_first.setdefault(_first(v, base), []).append(v)
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            cache: dict[int, torch.Tensor] = {}

            def record(unit, xin, position, **kw):
                out = unit.bypass(xin) if position.index in base else unit.forward(xin, **kw)
                cache[position.index] = out
                return out

            with intervene(self.model, compute=record):
                out = self.model(x)
            if baseline is not None:
                baseline.add(out, y, self.score)
            per_chunk = max(1, self.max_rows // len(y))
            chunks = [(f, same[i:i + per_chunk]) for f, same in by_first.items() for i in range(0, len(same), per_chunk)]
            for f, chunk in chunks:
                if f >= len(self.units):  # nothing changed (swaps that undo each other)
                    for v in chunk:
                        tallies[v.id].add(out, y, self.score)
                    continue
                with intervene(self.model, compute=_stacked_compute(self.units, chunk, cache, len(y), f)):
                    stacked = self.model(x if len(chunk) == 1 else x.repeat((len(chunk),) + (1,) * (x.dim() - 1)))
                stacked = logits_of(stacked)
                stacked = stacked.view((len(chunk), len(y)) + tuple(stacked.shape[1:]))
                for j, v in enumerate(chunk):
                    tallies[v.id].add(stacked[j], y, self.score)
        return tallies

    def run_naive(self, variants: list[Variant], baseline: Tally | None):
        """The reference: for each variant a deep copy of the model, lesioned, full forward."""
        tallies = {}
        if baseline is not None:
            for x, y in self.loader:
                baseline.add(self.model(x.to(self.device)), y.to(self.device), self.score)
        for v in variants:
            m = copy.deepcopy(self.model)
            t = Tally(self.keep_items)
            place = {} if v.order is None else {p: q for p, q in enumerate(v.order) if p != q}
            with intervene(m, delete=list(v.deleted), place=place):
                for x, y in self.loader:
                    t.add(m(x.to(self.device)), y.to(self.device), self.score)
            tallies[v.id] = t
        return tallies
