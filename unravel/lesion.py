"""Lesions at inference: delete or reorder residual units, and fast lesion studies (Veit et al. 2016).

A lesion is a context manager that leaves the model exactly as it was (same modules, same
state_dict bits, same train/eval flag), also through an exception. Studies return tidy frames,
one row per variant plus a baseline row; their engine reuses shared prefixes and stacks variants
on the batch dimension, which assumes the model couples no samples in eval mode (true of BN in
eval mode, convolutions, attention over a sequence); it does not check that.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._routing import Layer, active_layers, route, unit_key
from .train import as_loader
from .units import ResidualUnit, find_units

__all__ = ["delete", "reorder", "unit_shapes", "delete_each", "delete_random", "reorder_random", "COLUMNS"]

#: The columns of every lesion study's frame, in order.
COLUMNS = ["study", "variant", "k", "units", "names", "error", "loss", "samples", "seed", "draw", "projection", "order"]


# ------------------------------------------------------------------------------------------
# Naming units


def _describe(units: Sequence[ResidualUnit]) -> str:
    names = [u.name for u in units]
    shown = names if len(names) <= 12 else names[:6] + ["..."] + names[-3:]
    return f"{len(units)} units (indices 0..{len(units) - 1}; names {', '.join(shown)})"


def resolve_units(units: Sequence[ResidualUnit], spec: Any) -> list[ResidualUnit]:
    """The units named by ``spec``: an index, a name, a ResidualUnit, or an iterable of them.
    Duplicates are dropped (the order of first appearance is kept)."""
    if isinstance(spec, (int, str, ResidualUnit)) or (torch.is_tensor(spec) and spec.dim() == 0):
        spec = [spec]
    by_name = {u.name: u for u in units}
    by_key = {unit_key(u): u for u in units}
    out: dict[tuple, ResidualUnit] = {}
    for s in spec:
        if torch.is_tensor(s) or isinstance(s, np.integer):
            s = int(s)
        if isinstance(s, bool):
            raise ValueError(f"unit {s!r} is a bool; give unit indices, names or ResidualUnits.")
        if isinstance(s, int):
            if not 0 <= s < len(units):
                raise ValueError(f"unit index {s} is out of range: the model has {_describe(units)}.")
            u = units[s]
        elif isinstance(s, str):
            if s not in by_name:
                raise ValueError(f"no unit named {s!r}: the model has {_describe(units)}.")
            u = by_name[s]
        elif isinstance(s, ResidualUnit):
            if unit_key(s) not in by_key:
                raise ValueError(f"{s!r} is not a unit of this model, which has {_describe(units)}.")
            u = by_key[unit_key(s)]
        else:
            raise ValueError(f"cannot name a unit with {type(s).__name__} {s!r}; give unit indices, names "
                             "or ResidualUnits.")
        out.setdefault(unit_key(u), u)
    return list(out.values())


# ------------------------------------------------------------------------------------------
# Lesions as context managers


@contextlib.contextmanager
def delete(model: nn.Module, units):
    """Delete residual units at inference: inside the block, a deleted unit computes
    ``post(shortcut(x))``.

    Parameters
    ----------
    model : nn.Module
    units : int, str, ResidualUnit or iterable of them
        Unit indices (forward order), names, or units from :func:`unravel.find_units`. A unit
        named twice is deleted once; that is not an error.

    Yields
    ------
    nn.Module
        The model itself.

    Raises
    ------
    ValueError
        For an unknown index or name (the message lists the valid range and names).

    Notes
    -----
    A projection unit keeps its projection; a post-activation unit keeps its ReLU (or a post-LN
    transformer unit its LayerNorm); a plain unit is replaced by its bypass (the identity, or a
    parameter-free subsample-and-pad where the shape changes); a DenseNet layer adds zero
    channels. Lesions nest. On exit (also through an exception) the model is exactly as before.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(8, 3, width=8, depth=4).eval()
    >>> x = torch.randn(2, 8)
    >>> with unravel.lesion.delete(net, [1, "blocks.3"]):
    ...     lesioned = net(x)
    >>> manual = net.head(net.blocks[2](net.blocks[0](net.stem(x))))
    >>> torch.allclose(lesioned, manual)
    True
    """
    all_units = find_units(model)
    chosen = resolve_units(all_units, units)
    with route(all_units, Layer(deleted=[unit_key(u) for u in chosen])):
        yield model


def unit_shapes(model: nn.Module, inputs) -> list[tuple[tuple, tuple]]:
    """Per unit, the shape of its input and output (batch dimension dropped) on ``inputs``.

    One forward pass in eval mode without gradients; the model's modes are restored.

    Examples
    --------
    >>> import torch, unravel
    >>> shapes = unravel.lesion.unit_shapes(unravel.models.resnet_cifar(8), torch.randn(1, 3, 32, 32))
    >>> shapes[0], shapes[1]
    (((16, 32, 32), (16, 32, 32)), ((16, 32, 32), (32, 16, 16)))
    """
    units = find_units(model)
    shapes: dict[int, tuple] = {}

    def compute(unit, x, position_unit, **kw):
        y = unit.forward(x, **kw)
        shapes[position_unit.index] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
        return y

    with _eval(model), torch.no_grad(), route(units, Layer(compute=compute)):
        model(*_as_tuple(inputs))
    return [shapes.get(u.index) for u in units]


def _as_tuple(inputs):
    return inputs if isinstance(inputs, tuple) else (inputs,)


@contextlib.contextmanager
def _eval(model):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _swappable(u: ResidualUnit) -> str | None:
    """Why ``u`` may not change places, or None."""
    if u.kind != "residual":
        return f"it is a {u.kind} unit (no identity shortcut)"
    if u.projection:
        return "it has a projection shortcut"
    return None


def _check_order(units, order, shapes=None):
    n = len(units)
    try:
        order = [int(i) for i in order]
    except (TypeError, ValueError):
        raise ValueError(f"order must be a sequence of unit indices, got {order!r}.") from None
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1} (the model has {n} units); got {order}.")
    bad = []
    for p, q in enumerate(order):
        if p == q:
            continue
        for i in {p, q}:
            why = _swappable(units[i])
            if why:
                bad.append(f"unit {i} ({units[i].name}): {why}")
        if shapes is not None:
            (pin, _), (qin, qout) = shapes[p], shapes[q]
            if qin != qout:
                bad.append(f"unit {q} ({units[q].name}): its input and output shapes differ ({qin} -> {qout})")
            elif qin != pin:
                bad.append(f"unit {q} ({units[q].name}) takes inputs of shape {qin} but position {p} "
                           f"({units[p].name}) receives {pin}")
    if bad:
        raise ValueError("only units with an identity shortcut and equal input and output shapes may change "
                         "places; " + "; ".join(dict.fromkeys(bad)) + ".")
    return order


@contextlib.contextmanager
def reorder(model: nn.Module, order: Sequence[int], example_inputs=None):
    """Run the units in another order: position ``p`` runs unit ``order[p]``.

    Parameters
    ----------
    model : nn.Module
    order : sequence of int
        A permutation of the unit indices.
    example_inputs : tensor or tuple, optional
        With it, shapes are checked before entering (one forward pass without gradients);
        without it, units that move must still have identity shortcuts, and a unit whose input
        shape does not fit its new position fails at the first forward with a clear message.

    Raises
    ------
    ValueError
        If ``order`` is not a permutation, or a unit that moves has a projection shortcut, no
        shortcut (plain), is a DenseNet layer, or (with ``example_inputs``) does not fit its new
        position's shapes. The message names each offending unit and why.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(4, 2, width=4, depth=3).eval()
    >>> x = torch.randn(2, 4)
    >>> with unravel.lesion.reorder(net, [2, 1, 0]):
    ...     swapped = net(x)
    >>> torch.allclose(swapped, net.head(net.blocks[0](net.blocks[1](net.blocks[2](net.stem(x))))))
    True
    """
    units = find_units(model)
    shapes = unit_shapes(model, example_inputs) if example_inputs is not None else None
    order = _check_order(units, order, shapes)
    placement = {unit_key(units[p]): units[q] for p, q in enumerate(order) if p != q}
    with route(units, Layer(placement=placement)):
        yield model


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


class _Tally:
    def __init__(self):
        self.loss, self.wrong, self.count = 0.0, 0, 0

    def add(self, out, y, loss_fn):
        self.loss += float(loss_fn(out, y, reduction="sum"))
        self.wrong += int((out.argmax(-1) != y).sum())
        self.count += len(y)

    def metrics(self):
        return {"error": self.wrong / self.count, "loss": self.loss / self.count, "samples": self.count}


def _stacked_compute(units, variants, cache, batch):
    """The ``compute`` of a routing layer that runs ``variants`` (all with the same first change
    ``f``) stacked on the batch dimension: before ``f`` every unit returns its cached unlesioned
    output instead of computing; from ``f`` on each variant runs its own units."""
    V = len(variants)
    f = variants[0].first
    assert all(v.first == f for v in variants)

    def compute(unit, x, position_unit, **kw):
        p = position_unit.index
        if p < f:
            cached = cache[p]
            return cached if V == 1 else cached.repeat((V,) + (1,) * (cached.dim() - 1))
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, v in enumerate(variants):
            q = v.placed(p)
            groups.setdefault((q, q in v.deleted), []).append(j)

        def run(action, xs):
            q, gone = action
            return units[q].bypass(xs) if gone else units[q].forward(xs, **kw)

        if len(groups) == 1:
            return run(next(iter(groups)), x)
        out = None
        for action, js in groups.items():
            rows = torch.cat([torch.arange(j * batch, (j + 1) * batch, device=x.device) for j in js])
            part = run(action, x.index_select(0, rows))
            if out is None:
                out = part.new_empty((V * batch,) + tuple(part.shape[1:]))
            out.index_copy_(0, rows, part)
        return out

    return compute


class _Engine:
    """Evaluates variants of one model on one dataset (see the module docstring)."""

    def __init__(self, model, units, loader, device, loss_fn, max_rows):
        self.model, self.units, self.loader, self.device = model, units, loader, device
        self.loss_fn, self.max_rows = loss_fn, max_rows

    def run(self, variants: list[Variant], baseline: _Tally | None):
        """Tallies for ``variants`` (and the unlesioned net into ``baseline`` when given)."""
        tallies = {v.id: _Tally() for v in variants}
        by_first: dict[int, list[Variant]] = {}
        for v in variants:
            by_first.setdefault(v.first, []).append(v)
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            cache: dict[int, torch.Tensor] = {}

            def record(unit, xin, position_unit, **kw):
                out = unit.forward(xin, **kw)
                cache[position_unit.index] = out
                return out

            with route(self.units, Layer(compute=record)):
                out = self.model(x)
            if baseline is not None:
                baseline.add(out, y, self.loss_fn)
            per_chunk = max(1, self.max_rows // len(y))
            chunks = [same[i:i + per_chunk] for same in by_first.values() for i in range(0, len(same), per_chunk)]
            for chunk in chunks:
                if chunk[0].first >= len(self.units):  # nothing changed (swaps that undo each other)
                    for v in chunk:
                        tallies[v.id].add(out, y, self.loss_fn)
                    continue
                with route(self.units, Layer(compute=_stacked_compute(self.units, chunk, cache, len(y)))):
                    stacked = self.model(x if len(chunk) == 1 else x.repeat((len(chunk),) + (1,) * (x.dim() - 1)))
                stacked = stacked.view((len(chunk), len(y)) + tuple(stacked.shape[1:]))
                for j, v in enumerate(chunk):
                    tallies[v.id].add(stacked[j], y, self.loss_fn)
        return tallies

    def run_naive(self, variants: list[Variant], baseline: _Tally | None):
        """The reference: for each variant a deep copy of the model, lesioned, full forward."""
        tallies = {}
        if baseline is not None:
            for x, y in self.loader:
                baseline.add(self.model(x.to(self.device)), y.to(self.device), self.loss_fn)
        for v in variants:
            m = copy.deepcopy(self.model)
            t = _Tally()
            with contextlib.ExitStack() as stack:
                if v.order is not None:
                    stack.enter_context(reorder(m, v.order))
                if v.deleted:
                    stack.enter_context(delete(m, list(v.deleted)))
                for x, y in self.loader:
                    t.add(m(x.to(self.device)), y.to(self.device), self.loss_fn)
            tallies[v.id] = t
        return tallies


# ------------------------------------------------------------------------------------------
# Results files: one CSV line per finished variant, appended in one write


def _read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        # a line cut short by a kill: drop it, it is redone
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if None not in r and all(v is not None for v in r.values())]


def _append_row(path: Path, row: dict):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writerow(row)
    data = buf.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write of one line: a kill leaves it whole or cut, never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_header(path: Path):
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writeheader()
        path.write_text(buf.getvalue())


def _frame(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS)
    for col, kind in (("variant", int), ("k", int), ("error", float), ("loss", float), ("samples", int),
                      ("seed", int), ("draw", int)):
        df[col] = df[col].astype(kind)
    df["projection"] = df["projection"].map(lambda v: v in (True, "True"))
    df["units"] = df["units"].fillna("").astype(str)
    df["names"] = df["names"].fillna("").astype(str)
    df["order"] = df["order"].fillna("").astype(str)
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
           method, loss, max_rows):
    if method not in ("fast", "naive"):
        raise ValueError(f"method={method!r}; allowed: 'fast' (shared prefixes, stacked variants) or 'naive'.")
    units = find_units(model)
    if active_layers(units):
        raise ValueError("a lesion study cannot run inside delete()/reorder() on the same model; "
                         "leave the lesion first.")
    loader = as_loader(data, batch_size, split="test")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    loss_fn = loss or F.cross_entropy
    group, rank, world = _process_group(process_group)

    path = Path(results) if results is not None else None
    done: dict[int, dict] = {}
    if path is not None:
        if rank == 0:
            _ensure_header(path)
        if world > 1:
            import torch.distributed as dist

            dist.barrier(group)
        for r in _read_results(path):
            if r["study"] != name or int(r["seed"]) != seed:
                raise ValueError(f"results file {str(path)!r} holds study {r['study']!r} with seed {r['seed']}; "
                                 f"this call is {name!r} with seed {seed}. Use another file.")
            done[int(r["variant"])] = r

    todo = [v for v in variants if v.id not in done]
    mine = todo[rank::world]
    need_baseline = -1 not in done
    engine = _Engine(model, units, loader, device, loss_fn, max_rows)
    # without a file the whole sweep is one group (the unlesioned states are computed once per
    # batch); with one, each stacked chunk is finished and written before the next starts
    group_size = len(mine) if path is None else max(1, max_rows // batch_size)
    rows: list[dict] = []
    from tqdm.auto import tqdm

    with _eval(model), torch.no_grad():
        bar = tqdm(total=len(mine), desc=name, unit="variant", disable=not progress or rank != 0, leave=False)
        baseline = _Tally() if need_baseline else None
        groups = [mine[i:i + group_size] for i in range(0, len(mine), group_size)] or [[]]
        for chunk in groups:
            run = engine.run if method == "fast" else engine.run_naive
            tallies = run(chunk, baseline if rank == 0 else None)
            if baseline is not None and rank == 0:
                rows.append(_variant_row(name, Variant(id=-1, k=0), units, seed, baseline))
                if path is not None:
                    _append_row(path, rows[-1])
                baseline = None
            for v in chunk:
                rows.append(_variant_row(name, v, units, seed, tallies[v.id]))
                if path is not None:
                    _append_row(path, rows[-1])
            bar.update(len(chunk))
        bar.close()

    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        dist.all_gather_object(gathered, rows, group=group)
        rows = [r for part in gathered for r in part]
    rows = list(done.values()) + rows
    return _frame(rows)


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
        ``loss(outputs, targets, reduction=...)``; default cross-entropy.
    max_rows : int
        Inputs in one stacked forward (memory bound).

    Returns
    -------
    pandas.DataFrame
        One row per variant and a baseline row (``variant == -1``, ``k == 0``): study, variant,
        k, units (comma-separated indices), names, error, loss, samples (inputs evaluated), seed,
        draw (index of the random draw within its k), projection (a projection unit was
        deleted), order (reorders: the permutation).
"""


def delete_each(model: nn.Module, data, *, batch_size: int = 256, device=None, progress: bool = True,
                results=None, process_group=None, method: str = "fast", loss=None, max_rows: int = 2048):
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
                  max_rows=max_rows)


def _ks(ks, limit, what):
    ks = [int(k) for k in ([ks] if isinstance(ks, int) else ks)]
    bad = [k for k in ks if not 1 <= k <= limit]
    if bad:
        raise ValueError(f"ks={bad}: each k must lie in 1..{limit} ({what}).")
    return ks


def delete_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                  *, candidates=None, batch_size: int = 256, device=None, progress: bool = True, results=None,
                  process_group=None, method: str = "fast", loss=None, max_rows: int = 2048):
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
    rng = np.random.default_rng(seed)
    variants = []
    for k in ks:
        for draw in range(samples_per_k):
            chosen = tuple(sorted(int(i) for i in rng.choice(pool, size=k, replace=False)))
            variants.append(Variant(id=len(variants), k=k, deleted=chosen, draw=draw))
    return _study("delete_random", model, data, variants, seed=seed, batch_size=batch_size, device=device,
                  progress=progress, results=results, process_group=process_group, method=method, loss=loss,
                  max_rows=max_rows)


def reorder_random(model: nn.Module, data, ks: Iterable[int] = (1, 2, 4, 8), samples_per_k: int = 5, seed: int = 0,
                   *, batch_size: int = 256, device=None, progress: bool = True, results=None,
                   process_group=None, method: str = "fast", loss=None, max_rows: int = 2048):
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
    loader = as_loader(data, batch_size, split="test")
    x0, _ = next(iter(loader))
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    shapes = unit_shapes(model, x0[:1].to(device))
    groups: dict[tuple, list[int]] = {}
    for u in units:
        if _swappable(u) is None and shapes[u.index][0] == shapes[u.index][1]:
            groups.setdefault((shapes[u.index][0], u.parts.label), []).append(u.index)
    pairs = [(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1:]]
    if not pairs:
        raise ValueError("no two units of this model may change places (identity shortcuts and equal "
                         "shapes are needed).")
    ks = [int(k) for k in ([ks] if isinstance(ks, int) else ks)]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks={ks}: each k must be a positive integer.")
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
                  max_rows=max_rows)


for _f in (delete_each, delete_random, reorder_random):
    _f.__doc__ = _f.__doc__.rstrip() + "\n" + _STUDY_DOC
