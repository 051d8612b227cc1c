"""Running a sweep: variants (lesioned networks) measured by the engine, or by the naive loop,
into a tidy frame with one row per variant and a baseline row; resumable from a results file, and
shared between the processes of a group. It does not choose the variants
(:mod:`~unravel.sweeps.lesions` does for the lesion studies; :func:`run_variants` takes yours).
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler

from .._io import check_file, data_hash, state_hash
from .._utils import check_choice, check_int, eval_mode, model_device, process_group_of
from ..adapters.wrappers import as_module
from ..errors import ArgumentError, InterventionError
from ..interventions import active_interventions
from ..losses import check_loss
from ..train import as_loader
from ..units import find_units
from . import _journal
from .engine import Engine, Tally, Variant, make_scorer

__all__ = ["run_variants", "COLUMNS"]

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
# Studies


def _variant_row(study, v: Variant, units, seed, tally) -> dict:
    changed = sorted(v.deleted) if v.order is None else v.info.get("moved", [])
    return dict(study=study, variant=v.id, k=v.k, units=",".join(map(str, changed)),
                names=",".join(units[i].name for i in changed), seed=seed, draw=v.draw,
                projection=any(units[i].projection for i in v.deleted),
                order=",".join(map(str, v.order)) if v.order is not None else "", **tally.metrics())


def _study(name, model, data, variants, *, seed, batch_size, device, progress, results, process_group,
           method, loss, max_rows, settings, next_token=False, return_items=False, count=None):
    model = as_module(model)  # an nnsight wrapper: the model inside
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
    if not isinstance(next_token, bool):
        raise ArgumentError(f"next_token={next_token!r} must be True or False.")
    if check_loss(loss) == "next_token":  # the built-in: cross-entropy of position t against token t + 1
        loss, next_token = None, True
    loss_fn = loss or F.cross_entropy
    group, rank, world = process_group_of(process_group)

    path = Path(results) if results is not None else None
    if path is not None:
        check_file(path, "results file")
    variants, count = _counted(variants, count)
    with _journal.lock(path) if path is not None and rank == 0 else contextlib.nullcontext():
        rows, done = _sweep(name, model, units, loader, variants, count, seed=seed, batch_size=batch_size,
                            device=device, progress=progress, path=path, group=group, rank=rank, world=world,
                            method=method, loss_fn=loss_fn, max_rows=max_rows, settings=settings,
                            next_token=next_token, return_items=return_items)
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


def _sweep(name, model, units, loader, variants, count, *, seed, batch_size, device, progress, path, group, rank,
           world, method, loss_fn, max_rows, settings, next_token, return_items):
    """The rows this process measured and the rows the results file already held."""
    done: dict[int, dict] = {}
    if path is not None:
        fingerprint = dict(settings, study=name, seed=seed, units=[u.name for u in units],
                           data_size=_data_size(loader), loss=getattr(loss_fn, "__qualname__", repr(loss_fn)),
                           next_token=next_token, weights=state_hash(model), data=data_hash(loader))
        if rank == 0:  # only rank 0 writes: the header, the fingerprint, the repair of a cut line
            _journal.prepare(path, fingerprint)
        if world > 1:
            import torch.distributed as dist

            dist.barrier(group)
        if rank != 0:
            _journal.check_stored(path, fingerprint)
        for r in _journal.read(path):
            done[int(r["variant"])] = r

    todo = (v for v in variants if v.id not in done)
    mine = itertools.islice(todo, rank, None, world)
    n_mine = len(range(rank, count - len([i for i in done if i >= 0]), world))
    need_baseline = -1 not in done
    engine = Engine(model, units, loader, device, make_scorer(loss_fn, next_token), max_rows, keep_items=return_items)
    # without a file the whole sweep is one group (the unlesioned states are computed once per
    # batch); with one, each stacked chunk is finished and written before the next starts
    group_size = max(n_mine, 1) if path is None else max(1, max_rows // batch_size)
    rows: list[dict] = []
    from tqdm.auto import tqdm

    with eval_mode(model), torch.no_grad():
        bar = tqdm(total=n_mine, desc=name, unit="variant", disable=not progress or rank != 0, leave=False)
        baseline = Tally(return_items) if need_baseline else None
        for chunk in _chunks(mine, group_size):
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

    return rows, done


#: The most variants one sweep may have: its frame holds a row per variant.
MAX_VARIANTS = 10**6


def check_count(count: int) -> int:
    """``count`` variants, if a sweep may have that many (at most :data:`MAX_VARIANTS`).

    Examples
    --------
    >>> from unravel.sweeps.run import check_count
    >>> check_count(4 * 5)
    20
    """
    if count > MAX_VARIANTS:
        raise ArgumentError(f"this sweep would have {count:,} variants; at most {MAX_VARIANTS:,} fit in one frame "
                            "(a row each). Give fewer ks or samples per k.")
    return count


def _counted(variants, count):
    """``(iterable of variants, how many)``; a sweep of more than MAX_VARIANTS is refused before
    any is made."""
    if count is None:
        variants = list(variants)
        count = len(variants)
    return variants, check_count(count)


def _chunks(items, size: int):
    """Lists of ``size`` items of an iterator; one empty list when it is empty (the baseline still runs)."""
    first = True
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk and not first:
            return
        first = False
        yield chunk


def _data_size(loader) -> int | None:
    try:
        return len(loader.dataset)
    except TypeError:  # an iterable dataset
        return None



def run_variants(name: str, model: nn.Module, data, variants, *, seed: int = 0, batch_size: int = 256, device=None,
                 progress: bool = True, results=None, process_group=None, method: str = "fast", loss=None,
                 max_rows: int = 2048, next_token: bool = False, return_items: bool = False):
    """A sweep over variants of your own (:class:`Variant`: units deleted, or an order of units),
    measured as the lesion studies are, in a frame with one row per variant and a baseline row.

    Parameters
    ----------
    name : str
        The sweep's name (the frame's ``study`` column).
    variants : list of Variant
        Each with a distinct ``id``; ``deleted`` unit indices, or an ``order`` of all units.

    The other parameters are those of :func:`delete_each`.

    Examples
    --------
    >>> import unravel
    >>> from unravel.sweeps import Variant, run_variants
    >>> net = unravel.models.resmlp(16, 4, width=8, depth=3)
    >>> data = unravel.data.synthetic(200, num_classes=4)
    >>> frame = run_variants("first-two", net, data, [Variant(id=0, k=2, deleted=(0, 1))], progress=False)
    >>> frame.variant.tolist(), frame.units.tolist()
    ([-1, 0], ['', '0,1'])
    """
    return _study(name, model, data, list(variants), seed=seed, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows, settings={}, next_token=next_token, return_items=return_items)
