"""Choosing which units to remove under a budget: :func:`select` adds units to the removed set,
one step at a time, while the error (or loss) stays within a budget of the unlesioned model's, by
one of the registered strategies (:mod:`~unravel.prune.strategies`), measuring every step with
the lesion-sweep engine. It does not hold out data: select on a split you do not report on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import check_choice, check_int, eval_mode, model_device
from ..errors import ArgumentError, InterventionError
from ..interventions import active_interventions
from ..units import find_units, resolve_units
from .removal import remove
from .strategies import STRATEGIES, Search

__all__ = ["select", "Selection", "COLUMNS"]

#: The columns of :attr:`Selection.frame`, in order.
COLUMNS = ["strategy", "step", "removed", "units_removed", "error", "loss", "error_increase", "loss_increase",
           "within_budget", "names", "score"]


@dataclasses.dataclass
class Selection:
    """What :func:`select` chose, and the quality it measured on the way.

    Attributes
    ----------
    strategy, metric : str
    budget : float
        The largest increase of ``metric`` over the unlesioned model allowed.
    units : list of int
        The chosen units (indices of the model's units), in the order they were added.
    names : list of str
        Their names.
    frame : pandas.DataFrame
        One row per step (:data:`COLUMNS`): step 0 is the unlesioned model; ``removed`` lists the
        units removed at that step (comma-separated indices), ``within_budget`` whether its
        increase of ``metric`` is within the budget, ``score`` the strategy's score of the
        candidate added at that step (NaN for greedy).
    baseline : dict
        ``error`` and ``loss`` of the unlesioned model.
    scores : dict or None
        Ranking strategies: candidate (a tuple of unit indices) -> score; ``"angular"``: the
        block chosen at each step (a tuple of unit indices) -> its angular distance.
    """

    strategy: str
    metric: str
    budget: float
    units: list
    names: list
    frame: Any
    baseline: dict
    scores: dict | None = None

    def remove(self, model: nn.Module, **kwargs) -> nn.Module:
        """``unravel.prune.remove(model, self.units)``."""
        return remove(model, self.units, **kwargs)

    def __repr__(self):
        return (f"Selection(strategy={self.strategy!r}, metric={self.metric!r}, budget={self.budget:g}, "
                f"units={self.units})")


def _groups(units, group, candidates):
    """Candidates as contiguous tuples of unit indices (one unit, or all units of one module)."""
    check_choice("group", group, ("unit", "module"))
    allowed = None if candidates is None else {u.index for u in resolve_units(units, candidates)}
    if group == "unit":
        groups = [(u.index,) for u in units]
    else:
        by_module: dict[int, list[int]] = {}
        for u in units:
            by_module.setdefault(id(u.module), []).append(u.index)
        groups = [tuple(v) for v in by_module.values()]
        for g in groups:
            if list(g) != list(range(g[0], g[0] + len(g))):
                raise ArgumentError("group='module' needs each module's units to run one after another.")
    if allowed is not None:
        groups = [g for g in groups if set(g) <= allowed]
    if not groups:
        raise ArgumentError("no candidate to remove: candidates= names no unit (with group='module': no module all "
                            "of whose units are candidates).")
    return groups


def select(model: nn.Module, data, *, budget: float, strategy: str = "greedy", metric: str = "error",
           group: str = "unit", candidates=None, max_units: int | None = None, batch_size: int = 256,
           device=None, loss=None, next_token: bool = False, max_rows: int = 2048, split: str = "test",
           progress: bool = False) -> Selection:
    """Which units to remove while ``metric`` stays within ``budget`` of the unlesioned model's.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; never changed.
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        Where quality is measured (a DataSplit gives its ``split``). Selecting on the data you
        report on is optimistic: hold out a split for selection where you can.
    budget : float
        The largest increase of ``metric`` over the unlesioned model allowed (absolute: 0.01 is
        one percentage point of error, or 0.01 nats of mean loss).
    strategy : {"greedy", "block_influence", "angular", "gradient_share"}
        ``"greedy"``: at each step, every remaining candidate is removed in addition to those
        chosen so far and the one with the smallest ``metric`` (ties: the other metric, then the
        lower index) is added; it stops at the first step over the budget. Each step is one lesion
        sweep of the fast engine (:mod:`unravel.sweeps`), so it costs about ``n^2 / 2`` lesioned
        evaluations for ``n`` candidates.

        ``"block_influence"`` (ShortGPT [1]_): each candidate's ``BI = 1 - E[cos(a, y)]`` on the
        unlesioned model, where ``y`` is the candidate's output, ``a`` is what its removal leaves
        in its place, ``post(shortcut(x))`` of its input ``x`` (``x`` itself for identity units,
        as in the paper's pre-LN layers), and the mean runs over tokens where the targets are
        per token (each token's hidden vector) and over examples otherwise (the flattened
        state). Candidates are removed lowest BI first.

        ``"angular"`` (Gromov et al. [2]_): the angular distance ``arccos(cos(a, y)) / pi``
        between the state before a block of ``n`` consecutive candidates (carried through their
        bypasses, as above) and the state after it, averaged over examples (the last token of
        each sequence where the targets are per token, as in the paper). Step ``n`` removes the
        block of ``n`` candidates with the smallest distance (so the removed sets need not
        grow one unit at a time); only candidates that follow one another directly form blocks.

        ``"gradient_share"``: each candidate's share of the loss gradient that passes through its
        residual branches. With ``G`` the gradient of the summed loss with respect to the
        candidate's input (over all the data) and ``S`` the part of ``G`` carried by the path
        through the candidate's shortcuts only (the length-0 term of the exact path
        decomposition, :func:`unravel.attribution.path_length_gradients`, restricted to the
        candidate), the share is ``||G - S|| / (||G - S|| + ||S||)``, in [0, 1]; lowest first. A
        plain unit (no shortcut) has share 1.

        The ranking strategies score once, on the unlesioned model; step ``k`` removes the ``k``
        lowest-scored candidates, every ``k`` is evaluated, and the chosen set is the largest
        one within the budget.
    metric : {"error", "loss"}
    group : {"unit", "module"}
        Candidates are single units, or all units of one module (a transformer layer's attention
        and MLP together: the layers of ShortGPT and Gromov et al.).
    candidates : units, optional
        Only these may be removed (indices, names or units); default all.
    max_units : int, optional
        At most this many candidates removed.
    batch_size, device, loss, next_token, max_rows
        As in :func:`unravel.sweeps.delete_each` (``loss(logits, targets, reduction=...)``;
        ``next_token`` for causal language models).
    split : {"test", "train"}
        The split of a DataSplit to measure on.
    progress : bool
        A tqdm bar over steps.

    Returns
    -------
    Selection
        ``units`` (chosen, in order), ``frame`` (quality against units removed) and more.

    Raises
    ------
    ArgumentError
        For a negative budget, an unknown strategy, metric or group, or unknown candidates.
    InterventionError
        Inside a lesion of ``model``.

    References
    ----------
    .. [1] X. Men et al. "ShortGPT: Layers in Large Language Models are More Redundant Than You
       Expect." arXiv:2403.03853, 2024.
    .. [2] A. Gromov et al. "The Unreasonable Ineffectiveness of the Deeper Layers."
       arXiv:2403.17887, 2024.

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> data = unravel.data.synthetic(120, input_shape=(8,), num_classes=3)
    >>> net = unravel.models.resmlp(8, 3, width=8, depth=4)
    >>> sel = unravel.prune.select(net, data, budget=0.05, strategy="block_influence")
    >>> sel.frame.columns.tolist()[:6]
    ['strategy', 'step', 'removed', 'units_removed', 'error', 'loss']
    >>> sel.frame.step.tolist()
    [0, 1, 2, 3, 4]
    >>> small = sel.remove(net)  # unravel.prune.remove(net, sel.units)
    >>> size = lambda m: sum(p.numel() for p in m.parameters())
    >>> len(sel.units) > 0 and size(small) < size(net)
    True
    """
    import pandas as pd

    from ..sweeps.engine import Engine, Tally, Variant, make_scorer
    from ..train import as_loader

    check_choice("strategy", strategy, STRATEGIES)
    check_choice("metric", metric, ("error", "loss"))
    check_choice("split", split, ("test", "train"))
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating, np.integer)) or not budget >= 0:
        raise ArgumentError(f"budget={budget!r} must be a number >= 0 (the increase of {metric} allowed).")
    budget = float(budget)
    max_units = check_int("max_units", max_units, 1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, 1)
    max_rows = check_int("max_rows", max_rows, 1)
    if not isinstance(next_token, bool):
        raise ArgumentError(f"next_token={next_token!r} must be True or False.")
    units = find_units(model)
    if active_interventions(units):
        raise InterventionError("select() cannot run inside delete()/reorder()/intervene() on the same model: its "
                                "steps are lesions of their own. Leave the lesion first.")
    groups = _groups(units, group, candidates)
    limit = len(groups) if max_units is None else min(max_units, len(groups))
    loader = as_loader(data, batch_size, split=split)
    device = model_device(model, device)
    loss_fn = loss or F.cross_entropy
    engine = Engine(model, units, loader, device, make_scorer(loss_fn, next_token), max_rows)
    other = "loss" if metric == "error" else "error"
    from tqdm.auto import tqdm

    def evaluate(sets, base=()):
        variants = [Variant(id=i, k=len(s), deleted=tuple(sorted(s))) for i, s in enumerate(sets)]
        tallies = engine.run(variants, None, base)
        return [tallies[v.id].metrics() for v in variants]

    rows = []

    def row(step, removed, m, score, added=()):
        rows.append(dict(strategy=strategy, step=step, removed=",".join(map(str, sorted(removed))),
                         units_removed=len(removed), error=m["error"], loss=m["loss"],
                         error_increase=m["error"] - base["error"], loss_increase=m["loss"] - base["loss"],
                         within_budget=bool(m[metric] - base[metric] <= budget + 1e-12),
                         names=",".join(units[i].name for i in sorted(removed)), score=score))
        return rows[-1]

    with eval_mode(model), torch.no_grad():
        base_tally = Tally()
        engine.run([], base_tally)
        base = base_tally.metrics()
        row(0, [], base, float("nan"))
        bar = tqdm(total=limit, desc=f"select ({strategy})", unit="step", disable=not progress, leave=False)
        search = Search(model, units, groups, loader, device, loss_fn, next_token, limit, metric, other, evaluate,
                        row, bar)
        chosen, scores = STRATEGIES[strategy].choose(search)
        bar.close()
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return Selection(strategy, metric, budget, list(chosen), [units[i].name for i in chosen], frame,
                     {"error": base["error"], "loss": base["loss"]}, scores)
