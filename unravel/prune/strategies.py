"""The strategies of :func:`unravel.prune.select`: objects with one call signature, registered
by name (:data:`STRATEGIES`, :func:`register_strategy`).

A strategy's ``choose(search)`` returns the units it chose and its scores; ``search`` (a
:class:`Search`) gives the model, its units and candidate groups, the data, and ``evaluate``
(the lesion-sweep engine's quality of unit sets) and ``row`` (one step of the selection's
frame). Built in: a greedy search, and three one-shot rankings from the literature on layer
pruning (block influence, angular distance, gradient share). It does not check that a score
predicts quality: every step is measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._utils import logits_of
from ..attribution.recording import analysis_mode, record
from ..errors import ArgumentError
from ..interventions import intervene

__all__ = ["Strategy", "Search", "Greedy", "Angular", "Ranking", "STRATEGIES", "register_strategy"]


@dataclasses.dataclass
class Search:
    """What a strategy works with: the model and its units, the candidate groups (tuples of unit
    indices), the data, at most ``limit`` steps, and the measurements of :func:`select`."""

    model: Any
    units: list
    groups: list
    loader: Any
    device: Any
    loss_fn: Callable
    next_token: bool
    limit: int
    #: The metric the budget bounds, and the other one (ties).
    metric: str
    other: str
    #: ``evaluate(sets, base=()) -> [metrics]``: the quality with each set of units deleted.
    evaluate: Callable
    #: ``row(step, removed, metrics, score) -> row``: one step of the selection's frame.
    row: Callable
    #: The progress bar (``update(n)``).
    bar: Any


class Strategy:
    """One way to choose units to remove: ``choose(search) -> (chosen unit indices, scores)``.

    Examples
    --------
    >>> from unravel.prune import STRATEGIES, Strategy
    >>> sorted(STRATEGIES) == ["angular", "block_influence", "gradient_share", "greedy"]
    True
    >>> isinstance(STRATEGIES["greedy"], Strategy)
    True
    """

    def choose(self, search: Search) -> tuple[list, dict | None]:  # pragma: no cover - interface
        raise NotImplementedError


class Greedy(Strategy):
    """Add, at each step, the candidate whose deletion (with the units chosen so far) costs least,
    measured with the lesion-sweep engine; stop at the first step over the budget."""

    def choose(self, search):
        chosen: list[int] = []
        remaining = list(search.groups)
        steps = 0
        while remaining and steps < search.limit:
            # every candidate resumes from the states of the network without the chosen units
            got = search.evaluate([chosen + list(g) for g in remaining], base=chosen)
            best = min(range(len(remaining)),
                       key=lambda i: (got[i][search.metric], got[i][search.other], remaining[i]))
            steps += 1
            r = search.row(steps, chosen + list(remaining[best]), got[best], float("nan"))
            search.bar.update(1)
            if not r["within_budget"]:
                break
            chosen += list(remaining.pop(best))
        return chosen, None


class Angular(Strategy):
    """Gromov et al. 2024: for each n, the block of n consecutive groups whose input and output
    are closest in angle; the largest such block within the budget."""

    def choose(self, search):
        D = _angular(search.model, search.units, search.groups, search.loader, search.device)
        scores, blocks, chosen = {}, [], []
        for n in range(1, search.limit + 1):
            column = D[:, n - 1]
            if np.all(np.isnan(column)):
                break
            l = int(np.nanargmin(column))
            block = [i for g in search.groups[l:l + n] for i in g]
            blocks.append((block, float(column[l])))
            scores[tuple(block)] = float(column[l])
        got = search.evaluate([b for b, _ in blocks]) if blocks else []
        for step, ((block, d), m) in enumerate(zip(blocks, got), start=1):
            if search.row(step, block, m, d)["within_budget"]:
                chosen = block
        search.bar.update(len(blocks))
        return chosen, scores


class Ranking(Strategy):
    """Score every group once (lowest first), then remove the k lowest for k = 1, 2, ...: the
    largest prefix within the budget. ``score(search) -> array`` is the ranking."""

    def __init__(self, score: Callable):
        self.score = score

    def choose(self, search):
        s = self.score(search)
        groups, limit = search.groups, search.limit
        scores = {g: float(v) for g, v in zip(groups, s)}
        order = sorted(range(len(groups)), key=lambda j: (s[j], groups[j]))[:limit]
        prefixes = [[i for j in order[:k] for i in groups[j]] for k in range(1, limit + 1)]
        chosen = []
        for k, (p, m) in enumerate(zip(prefixes, search.evaluate(prefixes)), start=1):
            if search.row(k, p, m, float(s[order[k - 1]]))["within_budget"]:
                chosen = p
        search.bar.update(limit)
        return chosen, scores


def _gradient_share_scores(search):
    with torch.enable_grad():
        return _gradient_share(search.model, search.units, search.groups, search.loader, search.device,
                               search.loss_fn, search.next_token)


#: The strategies :func:`~unravel.prune.select` knows, by name.
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, strategy: Strategy, *, replace: bool = False) -> None:
    """Make ``strategy`` available to :func:`~unravel.prune.select` as ``strategy=name``.

    Raises
    ------
    ArgumentError
        If ``strategy`` is not a :class:`Strategy`, or ``name`` is taken and ``replace`` is not set.

    Examples
    --------
    >>> from unravel.prune import STRATEGIES, Greedy, register_strategy
    >>> register_strategy("greedy-again", Greedy())
    >>> "greedy-again" in STRATEGIES
    True
    >>> del STRATEGIES["greedy-again"]
    """
    if not isinstance(strategy, Strategy):
        raise ArgumentError(f"a strategy is a Strategy (with choose(search)); got {type(strategy).__name__}.")
    if name in STRATEGIES and not replace:
        raise ArgumentError(f"a strategy named {name!r} is registered already; pass replace=True to replace it.")
    STRATEGIES[name] = strategy


# ------------------------------------------------------------------------------------------
# The scores of the rankings


def _summed_loss(loss_fn, next_token, ignore_index=-100):
    """``(output, targets) -> summed loss`` over the scored items (as the sweep engine scores)."""

    def loss(out, y):
        logits = logits_of(out)
        if next_token:
            logits, y = logits[:, :-1], y[:, 1:]
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        keep = y != ignore_index
        return loss_fn(logits[keep], y[keep], reduction="sum")

    return loss


def _vectors(t, y, last_token):
    """The items a similarity is averaged over: tokens ``[B, T, ...] -> [B*T, D]`` (or the last
    token) where the targets are per token, else examples flattened ``[B, -1]``."""
    if y.dim() >= 2 and t.dim() >= 3 and tuple(t.shape[:2]) == tuple(y.shape[:2]):
        t = t[:, -1] if last_token else t
        return t.reshape(-1, t.shape[-1]) if not last_token else t.reshape(t.shape[0], -1)
    return t.reshape(t.shape[0], -1)


def _cos(a, b, y, last_token=False):
    return F.cosine_similarity(_vectors(a, y, last_token).double(), _vectors(b, y, last_token).double(), dim=-1)


def _states(model, units, groups, x):
    """One forward (eval, no gradients): per group its input, output and bypass of the input, and
    whether each group's input is the previous group's output."""
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}

    def compute(unit, xin, position, **kw):
        y = unit.forward(xin, **kw)
        ins[position.index], outs[position.index] = xin, y
        return y

    with intervene(model, compute=compute):
        model(x)
    missing = [u.name for u in units if u.index not in ins]
    if missing:
        raise ArgumentError(f"units {missing} did not run in the forward pass.")
    first = [ins[g[0]] for g in groups]
    last = [outs[g[-1]] for g in groups]
    chained = [all(ins[g[i + 1]] is outs[g[i]] for i in range(len(g) - 1)) for g in groups]
    linked = [chained[i] and chained[i + 1] and ins[groups[i + 1][0]] is outs[groups[i][-1]]
              for i in range(len(groups) - 1)]
    return first, last, chained, linked


def _bypass_group(units, g, x):
    for i in g:
        x = units[i].bypass(x)
    return x


def _block_influence(model, units, groups, loader, device):
    """Per group: the mean over items of ``1 - cos(bypass(x), y)``."""
    total = np.zeros(len(groups))
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        first, last, _, _ = _states(model, units, groups, x)
        n = None
        for j, g in enumerate(groups):
            c = _cos(_bypass_group(units, g, first[j]), last[j], y)
            total[j] += float((1 - c).sum())
            n = c.numel()
        count += n
    return total / count


def _angular(model, units, groups, loader, device):
    """``D[l, n-1]``: the mean over items (the last token where the targets are per token) of the
    angular distance ``arccos(cos(bypass_{l..l+n-1}(x_l), x_{l+n})) / pi``; NaN where the groups
    ``l..l+n-1`` do not follow one another directly."""
    G = len(groups)
    total = np.zeros((G, G))
    valid = np.ones((G, G), dtype=bool)
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        first, last, chained, linked = _states(model, units, groups, x)
        n_items = _vectors(first[0], y, True).shape[0]
        for l in range(G):
            b = first[l]
            for n in range(1, G - l + 1):
                j = l + n - 1
                if not chained[j] or (n > 1 and not linked[j - 1]):
                    valid[l, n - 1:] = False
                    break
                b = _bypass_group(units, groups[j], b)
                c = _cos(b, last[j], y, last_token=True).clamp(-1.0, 1.0)
                total[l, n - 1] += float((torch.arccos(c) / math.pi).sum())
        count += n_items
    for l in range(G):
        valid[l, G - l:] = False
    out = total / count
    out[~valid] = np.nan
    return out


def _gradient_share(model, units, groups, loader, device, loss_fn, next_token):
    """Per group: ``||G - S|| / (||G - S|| + ||S||)`` over the data, where ``G`` is the loss
    gradient at the group's input and ``S`` the part of it carried by the path that skips every
    residual branch of the group (see :func:`select`)."""
    loss = _summed_loss(loss_fn, next_token)
    end = {g[-1]: j for j, g in enumerate(groups)}
    start = {g[0]: j for j, g in enumerate(groups)}
    R, S = np.zeros(len(groups)), np.zeros(len(groups))

    def vjp(out, inp, g):
        got, = torch.autograd.grad(out, inp, g, retain_graph=True, allow_unused=True)
        return torch.zeros_like(inp) if got is None else got

    with analysis_mode(model, "eval"):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            records, _, L = record(model, units, (x,), y, loss)
            g = vjp(L, records[-1].y_out, None)
            skip = None
            for l in range(len(units) - 1, -1, -1):
                rec = records[l]
                u = rec.unit.index  # groups hold unit indices; records are in the order the units ran
                if u in end:
                    skip = g
                gz = g if rec.y is rec.zl else vjp(rec.y, rec.zl, g)
                gx = vjp(rec.z, rec.x, gz)
                if skip is not None:
                    sz = skip if rec.y is rec.zl else vjp(rec.y, rec.zl, skip)
                    skip = vjp(rec.s, rec.x, sz) if rec.s is not None else torch.zeros_like(rec.x)
                if u in start:
                    j = start[u]
                    R[j] += float((gx - skip).double().pow(2).sum())
                    S[j] += float(skip.double().pow(2).sum())
                    skip = None
                g = gx
                if l > 0 and rec.x_in is not records[l - 1].y_out:
                    g = vjp(rec.x_in, records[l - 1].y_out, g)
                    if skip is not None:
                        skip = vjp(rec.x_in, records[l - 1].y_out, skip)
            del records, L
    r, s = np.sqrt(R), np.sqrt(S)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r + s > 0, r / (r + s), 0.0)


register_strategy("greedy", Greedy())
register_strategy("block_influence", Ranking(lambda s: _block_influence(s.model, s.units, s.groups, s.loader, s.device)))
register_strategy("angular", Angular())
register_strategy("gradient_share", Ranking(_gradient_share_scores))
