"""Lesion sweeps: delete each unit, delete k random units, swap k random pairs (Veit et al. 2016,
Fig. 3 and 5), as tidy frames with one row per variant and a baseline row.

The engine computes the unlesioned states of a batch once and resumes each variant from the state
before its first changed unit; variants that resume at the same place share one forward, stacked
on the batch dimension. That assumes the model couples no samples in eval mode (true of BN in eval
mode, convolutions, attention within a sequence); it does not check it. Results equal the naive
loop (copy, lesion, full forward) to float tolerance; ``method="naive"`` is that loop. Sweeps run
on the model as it is: inside a lesion of the same model they refuse (a sweep's variants are
lesions of their own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler

from . import _journal
from ._utils import check_choice, check_int, eval_mode, model_device
from .errors import ArgumentError, InterventionError
from ._engine import Engine, Tally, Variant, make_scorer
from .interventions import active_interventions
from .lesion import _swappable, resolve_units, unit_shapes
from .train import as_loader
from .units import find_units

__all__ = ["delete_each", "delete_random", "reorder_random", "COLUMNS"]

#: The columns of every lesion study's frame, in order: a results file's columns and
#: ``kendall_tau`` (derived from ``order`` when the frame is built; NaN in deletion studies).
COLUMNS = [*_journal.COLUMNS, "kendall_tau"]


# ------------------------------------------------------------------------------------------
# Frames


def _kendall_tau(order) -> float:
    """Kendall's rank correlation between positions ``0..n-1`` and ``order`` (a permutation, as a
    sequence or a comma-separated string; empty: the identity): (concordant - discordant pairs)
    over all n(n-1)/2 pairs. 1.0 for the identity (and for n < 2)."""
    if isinstance(order, str):
        order = [int(s) for s in order.split(",")] if order else []
    o = np.asarray(order, dtype=np.int64)
    n = len(o)
    if n < 2:
        return 1.0
    i, j = np.triu_indices(n, 1)
    return float(np.sign(o[j] - o[i]).sum()) / (n * (n - 1) // 2)


def _frame(rows: list[dict], reorders: bool = False):
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS)
    for col, kind in (("variant", int), ("k", int), ("error", float), ("loss", float), ("samples", int),
                      ("seed", int), ("draw", int)):
        df[col] = df[col].astype(kind)
    df["projection"] = df["projection"].map(lambda v: v in (True, "True"))
    df["units"] = df["units"].fillna("").astype(str)
    df["names"] = df["names"].fillna("").astype(str)
    df["order"] = df["order"].fillna("").astype(str)
    df["per"] = df["per"].fillna("example").astype(str)
    # not journalled: derived from the order, so results files of every version resume alike
    df["kendall_tau"] = [_kendall_tau(o) for o in df["order"]] if reorders else np.nan
    df["kendall_tau"] = df["kendall_tau"].astype(float)
    return df.sort_values("variant", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Distribution over processes


def _process_group(process_group):
    import torch.distributed as dist

    if process_group is not None:
        return process_group, dist.get_rank(process_group), dist.get_world_size(process_group)
    if not dist.is_available():
        return None, 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        # launched under torchrun: join the job's group
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized() and dist.get_world_size() > 1:
        return None, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


# ------------------------------------------------------------------------------------------
# Studies


def _variant_row(study, v: Variant, units, seed, tally) -> dict:
    changed = sorted(v.deleted) if v.order is None else v.info.get("moved", [])
    return dict(study=study, variant=v.id, k=v.k, units=",".join(map(str, changed)),
                names=",".join(units[i].name for i in changed), seed=seed, draw=v.draw,
                projection=any(units[i].projection for i in v.deleted),
                order=",".join(map(str, v.order)) if v.order is not None else "", **tally.metrics())


def _study(name, model, data, variants, *, seed, batch_size, device, progress, results, process_group,
           method, loss, max_rows, settings, next_token=False, return_items=False):
    check_choice("method", method, ("fast", "naive"))
    if not isinstance(return_items, bool):
        raise ArgumentError(f"return_items={return_items!r} must be True or False.")
    if return_items and results is not None:
        raise ArgumentError(f"return_items=True cannot be combined with results={str(results)!r}: a results file "
                            "holds one line per variant, not its per-item outcomes, so a resumed sweep could not "
                            "return them. Leave out results=, or return_items.")
    batch_size = check_int("batch_size", batch_size, 1)
    max_rows = check_int("max_rows", max_rows, 1)
    units = find_units(model)
    if active_interventions(units):
        raise InterventionError(f"a lesion sweep ({name}) cannot run inside delete()/reorder()/intervene() on the "
                                "same model: its variants are lesions of their own. Leave the lesion first.")
    loader = as_loader(data, batch_size, split="test")
    if return_items and isinstance(getattr(loader, "sampler", None), RandomSampler):
        raise ArgumentError("return_items=True needs the data in a fixed order, but the DataLoader shuffles: its "
                            "columns would not be the same items from one variant to the next. Pass a "
                            "DataLoader with shuffle=False (or the dataset itself).")
    device = model_device(model, device)
    loss_fn = loss or F.cross_entropy
    if not isinstance(next_token, bool):
        raise ArgumentError(f"next_token={next_token!r} must be True or False.")
    group, rank, world = _process_group(process_group)

    path = Path(results) if results is not None else None
    done: dict[int, dict] = {}
    if path is not None:
        fingerprint = dict(settings, study=name, seed=seed, units=[u.name for u in units],
                           data_size=_data_size(loader), loss=getattr(loss_fn, "__qualname__", repr(loss_fn)),
                           next_token=next_token)
        if rank == 0:  # only rank 0 writes: the header, the fingerprint, the repair of a cut line
            _journal.prepare(path, fingerprint)
        if world > 1:
            import torch.distributed as dist

            dist.barrier(group)
        if rank != 0:
            _journal.check(path, json.loads(_journal.fingerprint_path(path).read_text()), fingerprint)
        for r in _journal.read(path):
            done[int(r["variant"])] = r

    todo = [v for v in variants if v.id not in done]
    mine = todo[rank::world]
    need_baseline = -1 not in done
    engine = Engine(model, units, loader, device, make_scorer(loss_fn, next_token), max_rows, keep_items=return_items)
    # without a file the whole sweep is one group (the unlesioned states are computed once per
    # batch); with one, each stacked chunk is finished and written before the next starts
    group_size = len(mine) if path is None else max(1, max_rows // batch_size)
    rows: list[dict] = []
    from tqdm.auto import tqdm

    with eval_mode(model), torch.no_grad():
        bar = tqdm(total=len(mine), desc=name, unit="variant", disable=not progress or rank != 0, leave=False)
        baseline = Tally(return_items) if need_baseline else None
        groups = [mine[i:i + group_size] for i in range(0, len(mine), group_size)] or [[]]
        for chunk in groups:
            run = engine.run if method == "fast" else engine.run_naive
            tallies = run(chunk, baseline if rank == 0 else None)
            if baseline is not None and rank == 0:
                rows.append(_variant_row(name, Variant(id=-1, k=0), units, seed, baseline))
                if return_items:  # travels with its row (gathered with it); never journalled
                    rows[-1]["_wrong"] = baseline.items()
                if path is not None:
                    _journal.append(path, rows[-1])
                baseline = None
            for v in chunk:
                rows.append(_variant_row(name, v, units, seed, tallies[v.id]))
                if return_items:
                    rows[-1]["_wrong"] = tallies[v.id].items()
                if path is not None:
                    _journal.append(path, rows[-1])
            bar.update(len(chunk))
        bar.close()

    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        dist.all_gather_object(gathered, rows, group=group)
        rows = [r for part in gathered for r in part]
    rows = list(done.values()) + rows
    items = {int(r["variant"]): r.pop("_wrong") for r in rows if "_wrong" in r}  # variant -> wrong flags
    frame = _frame(rows, reorders=name == "reorder_random")
    if not return_items:
        return frame
    return frame, np.stack([items[int(v)] for v in frame["variant"]])


def _data_size(loader) -> int | None:
    try:
        return len(loader.dataset)
    except TypeError:  # an iterable dataset
        return None


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
    loss : callable, optional
        ``loss(logits, targets, reduction=...)`` on flattened logits ``[N, C]`` and targets
        ``[N]``; default cross-entropy.
    max_rows : int
        Inputs in one stacked forward (memory bound).
    next_token : bool
        Causal language models: the output at position t is scored against the target at t + 1.
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
                next_token: bool = False, return_items: bool = False):
    """Delete each unit in turn (Veit et al. 2016, Fig. 3).

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode; its mode is restored.
    """

    units = find_units(model)
    variants = [Variant(id=i, k=1, deleted=(i,)) for i in range(len(units))]
    return _study("delete_each", model, data, variants, seed=0, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={}, next_token=next_token, return_items=return_items)


def _ks(ks, limit, what):
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = [ks]
    try:
        ks = list(ks)
    except TypeError:
        raise ArgumentError(f"ks={ks!r} must be an integer or a list of integers in 1..{limit} ({what}).") from None
    return [check_int("each k in ks", k, 1, limit) for k in ks]


def delete_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                  *, candidates=None, batch_size: int = 256, device=None, progress: bool = True, results=None,
                  process_group=None, method: str = "fast", loss=None, max_rows: int = 2048,
                  next_token: bool = False, return_items: bool = False):
    """Delete k units drawn uniformly at random, ``samples_per_k`` times per k (Veit Fig. 5a).

    Parameters
    ----------
    model : nn.Module
    ks : iterable of int
        Numbers of units to delete.
    samples_per_k : int
    seed : int
        Seeds the draws; the same seed gives the same variants.
    candidates : units, optional
        Draw only among these (indices, names or units); default all units.
    """
    units = find_units(model)
    pool = [u.index for u in (resolve_units(units, candidates) if candidates is not None else units)]
    ks = _ks(ks, len(pool), f"the model has {len(pool)} candidate units")
    samples_per_k = check_int("samples_per_k", samples_per_k, 1)
    seed = check_int("seed", seed)
    rng = np.random.default_rng(seed)
    variants = []
    for k in ks:
        for draw in range(samples_per_k):
            chosen = tuple(sorted(int(i) for i in rng.choice(pool, size=k, replace=False)))
            variants.append(Variant(id=len(variants), k=k, deleted=chosen, draw=draw))
    return _study("delete_random", model, data, variants, seed=seed, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={"ks": ks, "samples_per_k": samples_per_k, "candidates": pool},
                  next_token=next_token, return_items=return_items)


def reorder_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                   *, batch_size: int = 256, device=None, progress: bool = True, results=None,
                   process_group=None, method: str = "fast", loss=None, max_rows: int = 2048,
                   next_token: bool = False, return_items: bool = False):
    """Swap k random pairs of compatible units, ``samples_per_k`` times per k (Veit Fig. 5b).

    Compatible units have identity shortcuts and equal input and output shapes, and the same
    input shape and role as each other (so, in a CIFAR ResNet, units of one stage; in a
    transformer, attention with attention and feed-forward with feed-forward). The k swaps are
    applied one after another, each between a pair drawn uniformly among all compatible pairs.

    Parameters
    ----------
    model : nn.Module
    ks : iterable of int
    samples_per_k : int
    seed : int
    """
    units = find_units(model)
    loader = as_loader(data, check_int("batch_size", batch_size, 1), split="test")
    x0, _ = next(iter(loader))
    device = model_device(model, device)
    samples_per_k = check_int("samples_per_k", samples_per_k, 1)
    seed = check_int("seed", seed)
    shapes = unit_shapes(model, x0[:1].to(device))
    groups: dict[tuple, list[int]] = {}
    for u in units:
        if _swappable(u) is None and shapes[u.index][0] == shapes[u.index][1]:
            groups.setdefault((shapes[u.index][0], u.parts.label), []).append(u.index)
    pairs = [(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1:]]
    if not pairs:
        raise ArgumentError("no two units of this model may change places (identity shortcuts and equal "
                            "shapes are needed).")
    ks = _ks(ks, 10**9, "swaps of compatible pairs")
    rng = np.random.default_rng(seed)
    variants = []
    for k in ks:
        for draw in range(samples_per_k):
            order = list(range(len(units)))
            for i in rng.integers(0, len(pairs), size=k):
                a, b = pairs[int(i)]
                order[a], order[b] = order[b], order[a]
            moved = [p for p, q in enumerate(order) if p != q]
            variants.append(Variant(id=len(variants), k=k, order=tuple(order), draw=draw, info={"moved": moved}))
    return _study("reorder_random", model, loader, variants, seed=seed, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={"ks": ks, "samples_per_k": samples_per_k}, next_token=next_token,
                  return_items=return_items)


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
