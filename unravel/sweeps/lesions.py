"""The lesion studies of Veit et al. 2016 (Fig. 3 and 5): delete each unit, delete k random
units, swap k random pairs; each a sweep (:func:`~unravel.sweeps.run.run_variants`) over the
variants it draws.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import nn

from .._utils import check_int, check_seed, model_device
from ..adapters.wrappers import as_module
from ..errors import ArgumentError
from ..lesion import unit_shapes
from ..train import as_loader
from ..units import find_units, resolve_units, swappable, unit_groups
from .engine import Variant
from .run import _study

__all__ = ["delete_each", "delete_random", "reorder_random"]


_STUDY_DOC = """
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        Evaluation data (a DataSplit gives its test split).
    batch_size : int
    device : torch.device or str, optional
        Default: where the model's parameters are.
    progress : bool
        A tqdm bar over variants.
    results : str or Path, optional
        A CSV file: each finished variant is appended in one write, and a rerun with the same
        file skips what is there, so a killed sweep loses only the variants in flight (one
        stacked chunk).
    process_group : torch.distributed.ProcessGroup, optional
        Shard variants over its ranks. Under ``torchrun`` the default group is joined
        automatically. Every rank returns the whole frame.
    method : {"fast", "naive"}
        "fast" reuses the unlesioned states and stacks variants on the batch dimension; "naive"
        deep-copies the model for each variant (the reference it is tested against).
    loss : callable or "next_token", optional
        ``loss(logits, targets, reduction=...)`` on flattened logits ``[N, C]`` and targets
        ``[N]``; default cross-entropy. ``"next_token"``: causal language models whose data are
        token ids, the output at position t scored by cross-entropy over the vocabulary against
        token t + 1 (the same as ``next_token=True``; pass the ids as inputs and as targets).
    max_rows : int
        Inputs in one stacked forward (memory bound).
    next_token : bool
        Causal language models: the output at position t is scored against the target at t + 1
        (with the default loss, what ``loss="next_token"`` does).
    group : {"unit", "layer", "stage"} or list of lists of units
        What moves together (:func:`unravel.units.unit_groups`): each unit alone (default);
        ``"layer"``, a transformer layer's sublayers (its attention and MLP units) deleted
        together, or reordered as a block; ``"stage"``, a CNN stage; or groups of your own. ``k``
        then counts groups, and ``units`` lists every unit of the variant's groups.
    return_items : bool
        Also return every variant's outcome on every scored item, for bootstrap confidence
        intervals: the result is ``(frame, wrong)`` (see Returns). Not with ``results`` (a
        results file holds no per-item outcomes, so a resumed sweep could not return them) nor
        with a DataLoader that shuffles.

    Returns
    -------
    frame : pandas.DataFrame
        One row per variant and a baseline row (``variant == -1``, ``k == 0``): study, variant,
        k, units (comma-separated indices), names, error, loss, samples (items scored), per
        (``"example"`` or ``"token"``), seed, draw (index of the random draw within its k),
        projection (a projection unit was deleted), order (reorders: the permutation), kendall_tau
        (reorders: Kendall's rank correlation between the original order of the units and the
        variant's, 1.0 for the baseline, as in Veit et al. Fig. 5b; NaN in deletion studies).
    wrong : numpy.ndarray of bool, shape ``[len(frame), samples]``
        Only with ``return_items=True``. Row i belongs to row i of ``frame``, column j is the j-th
        scored item (an example, or a token after the ``next_token`` shift and without ignored
        targets) in data order; True where the prediction (argmax) is wrong, so
        ``wrong.mean(1)`` equals ``frame.error``.

    Notes
    -----
    The logits are the output itself, its ``logits`` (a Hugging Face ``ModelOutput`` or a dict)
    or the first element of a tuple. Outputs ``[B, C]`` against targets ``[B]`` are scored per
    example; ``[B, T, C]`` against ``[B, T]`` per token (targets equal to -100 left out), so the
    error is the fraction of tokens predicted wrongly and the loss the mean per token.
"""


def delete_each(model: nn.Module, data, *, batch_size: int = 256, device=None, progress: bool = True,
                results=None, process_group=None, method: str = "fast", loss=None, max_rows: int = 2048,
                next_token: bool = False, group="unit", return_items: bool = False):
    """Delete each unit (or each group of units) in turn (Veit et al. 2016, Fig. 3).

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; its mode is restored.
    """

    groups = unit_groups(find_units(model), group)
    variants = [Variant(id=i, k=1, deleted=g) for i, g in enumerate(groups)]
    return _study("delete_each", model, data, variants, seed=0, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings=_group_setting(group, groups), next_token=next_token,
                  return_items=return_items)


def _by_unit(group) -> bool:
    """Whether ``group`` is the default, every unit on its own."""
    return isinstance(group, str) and group == "unit"


def _group_setting(group, groups) -> dict:
    """The grouping, for a results file's fingerprint (nothing for units alone, so that files
    written before groups existed still resume)."""
    return {} if _by_unit(group) else {"group": [list(g) for g in groups]}


#: The most swaps one reorder variant may make (each draws one pair; more only mixes the units
#: the same way).
MAX_SWAPS = 10**6


def _ks(ks, limit, what):
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = [ks]
    try:
        ks = list(ks)
    except TypeError:
        raise ArgumentError(f"ks={ks!r} must be an integer or a list of integers in 1..{limit} ({what}).") from None
    if not ks:
        raise ArgumentError(f"ks=[] names no k: give an integer or a list of integers in 1..{limit} ({what}).")
    return [check_int("each k in ks", k, 1, limit) for k in ks]


def delete_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                  *, candidates=None, batch_size: int = 256, device=None, progress: bool = True, results=None,
                  process_group=None, method: str = "fast", loss=None, max_rows: int = 2048,
                  next_token: bool = False, group="unit", return_items: bool = False):
    """Delete k units (or k groups) drawn uniformly at random, ``samples_per_k`` times per k
    (Veit Fig. 5a).

    Parameters
    ----------
    model : nn.Module
    ks : iterable of int
        Numbers of units to delete.
    samples_per_k : int
    seed : int
        Seeds the draws; the same seed gives the same variants.
    candidates : units, optional
        Draw only among these (indices, names or units); default all units. With ``group``, the
        groups all of whose units are candidates.
    """
    units = find_units(model)
    allowed = [u.index for u in (resolve_units(units, candidates) if candidates is not None else units)]
    if _by_unit(group):
        groups = [(i,) for i in allowed]  # in the order given: the draws of a seed stay those of before groups
    else:
        groups = [g for g in unit_groups(units, group) if set(g) <= set(allowed)]
    if not groups:
        raise ArgumentError("no candidate to delete: no group has all of its units among candidates=.")
    pool = list(range(len(groups)))
    what = "units" if _by_unit(group) else "groups"
    ks = _ks(ks, len(pool), f"the model has {len(pool)} candidate {what}")
    samples_per_k = check_int("samples_per_k", samples_per_k, 1)
    seed = check_seed(seed)

    def variants():  # made lazily, as the sweep reaches them
        rng = np.random.default_rng(seed)
        for i, (k, draw) in enumerate((k, draw) for k in ks for draw in range(samples_per_k)):
            chosen = sorted(int(j) for j in rng.choice(pool, size=k, replace=False))
            deleted = tuple(sorted(u for j in chosen for u in groups[j]))
            yield Variant(id=i, k=k, deleted=deleted, draw=draw)

    settings = {"ks": ks, "samples_per_k": samples_per_k, "candidates": [i for g in groups for i in g]}
    return _study("delete_random", model, data, variants(), count=len(ks) * samples_per_k, seed=seed,
                  batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={**settings, **_group_setting(group, groups)},
                  next_token=next_token, return_items=return_items)


def reorder_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                   *, batch_size: int = 256, device=None, progress: bool = True, results=None,
                   process_group=None, method: str = "fast", loss=None, max_rows: int = 2048,
                   next_token: bool = False, group="unit", return_items: bool = False):
    """Swap k random pairs of compatible units (or groups), ``samples_per_k`` times per k (Veit
    Fig. 5b).

    Compatible units have identity shortcuts and equal input and output shapes, and the same
    input shape and role as each other (so, in a CIFAR ResNet, units of one stage; in a
    transformer, attention with attention and feed-forward with feed-forward). The k swaps are
    applied one after another, each between a pair drawn uniformly among all compatible pairs.
    With ``group``, two groups are compatible when they hold as many units and theirs are
    compatible in turn; a swap moves each group as a block (``group="layer"``: whole
    transformer layers change places).

    Parameters
    ----------
    model : nn.Module
    ks : iterable of int
    samples_per_k : int
    seed : int
    """
    model = as_module(model)  # an nnsight wrapper: the model inside
    units = find_units(model)
    groups = unit_groups(units, group)
    loader = as_loader(data, check_int("batch_size", batch_size, 1), split="test")
    x0, _ = next(iter(loader))
    device = model_device(model, device)
    samples_per_k = check_int("samples_per_k", samples_per_k, 1)
    seed = check_seed(seed)
    shapes = unit_shapes(model, x0[:1].to(device))

    def role(i):  # what a unit must share with the one it changes places with; None: it may not move
        u = units[i]
        ok = swappable(u) is None and shapes[i][0] == shapes[i][1]
        return (shapes[i][0], u.parts.label) if ok else None

    alike: dict[tuple, list[int]] = {}
    for j, g in enumerate(groups):
        roles = tuple(role(i) for i in g)
        if None not in roles:
            alike.setdefault(roles, []).append(j)
    pairs = [(a, b) for js in alike.values() for i, a in enumerate(js) for b in js[i + 1:]]
    if not pairs:
        what = "units" if _by_unit(group) else "groups"
        raise ArgumentError(f"no two {what} of this model may change places (identity shortcuts and equal "
                            "shapes are needed).")
    ks = _ks(ks, MAX_SWAPS, "swaps of compatible pairs")

    def variants():  # made lazily, as the sweep reaches them
        rng = np.random.default_rng(seed)
        for i, (k, draw) in enumerate((k, draw) for k in ks for draw in range(samples_per_k)):
            order = list(range(len(units)))
            for j in rng.integers(0, len(pairs), size=k):
                ga, gb = pairs[int(j)]
                for a, b in zip(groups[ga], groups[gb]):
                    order[a], order[b] = order[b], order[a]
            moved = [p for p, q in enumerate(order) if p != q]
            yield Variant(id=i, k=k, order=tuple(order), draw=draw, info={"moved": moved})

    return _study("reorder_random", model, loader, variants(), count=len(ks) * samples_per_k, seed=seed,
                  batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={"ks": ks, "samples_per_k": samples_per_k, **_group_setting(group, groups)},
                  next_token=next_token, return_items=return_items)


_EACH_EXAMPLES = """
    Examples
    --------
    Per-item outcomes give bootstrap confidence intervals of each variant's error (resample the
    items, the same ones for every row, so differences to the baseline row are paired too):

    >>> import numpy as np, unravel
    >>> net = unravel.models.resmlp(16, 4, width=8, depth=3)
    >>> data = unravel.data.synthetic(200, num_classes=4)  # 40 test examples
    >>> frame, wrong = unravel.sweeps.delete_each(net, data, progress=False, return_items=True)
    >>> wrong.shape, bool((wrong.mean(1) == frame.error).all())
    ((4, 40), True)
    >>> resampled = np.random.default_rng(0).integers(0, wrong.shape[1], size=(1000, wrong.shape[1]))
    >>> errors = wrong[:, resampled].mean(-1)  # [variants, 1000]
    >>> low, high = np.quantile(errors, [0.025, 0.975], axis=1)
    >>> low.shape, bool((low <= high).all())
    ((4,), True)
"""

for _f, _examples in ((delete_each, _EACH_EXAMPLES), (delete_random, ""), (reorder_random, "")):
    _f.__doc__ = _f.__doc__.rstrip() + "\n" + _STUDY_DOC + _examples
