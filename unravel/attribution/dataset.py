"""The exact path-length decomposition over a whole dataset, batch by batch, and shared between
the processes of a group (``torchrun``) as the sweeps share their variants: each rank takes every
world-size-th batch, and the parts are combined as the dataset's mean loss weighs them. It does
not keep the per-example input parts (a dataset's worth); it keeps their norms per length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._utils import check_choice, check_int, model_device, process_group_of
from ..adapters.wrappers import as_module
from ..errors import ArgumentError
from ..losses import IGNORE_INDEX, check_loss
from ..train import as_loader
from .exact import path_length_gradients
from .result import PathLengthGradients

__all__ = ["dataset_path_length_gradients"]


def _weight(x, y, loss) -> float:
    """What a batch's mean loss counts for in the dataset's: its examples, or (next-token) its
    scored tokens; 1 for the summed top logit (no targets)."""
    if y is None:
        return 1.0
    if loss == "next_token":
        return float((y[:, 1:] != IGNORE_INDEX).sum())
    return float(x.shape[0])


def dataset_path_length_gradients(model: nn.Module, data, *, loss: Callable | str | None = None,
                                  wrt: str = "input", group="unit", max_length: int | None = None,
                                  batch_size: int = 64, chunk_size: int | None = None, device=None,
                                  process_group=None, progress: bool = True) -> PathLengthGradients:
    """The gradient of a dataset's mean loss split by path length, exactly, batch by batch.

    Parameters
    ----------
    model : nn.Module
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        A DataSplit gives its test split. Token data for ``loss="next_token"``: ``(ids, ids)``.
    loss : callable or "next_token", optional
        As in :func:`path_length_gradients`; a callable is taken to be a mean over the batch's
        examples (each batch weighted by its examples).
    wrt : {"input", "units"}
    group : {"unit", "layer", "stage"} or list of lists of units
        As in :func:`path_length_gradients`.
    max_length : int, optional
        Input only: lengths kept; the norm of the rest is ``dropped_norm``.
    batch_size : int
        Examples per decomposition (the memory bound).
    chunk_size : int, optional
    device : torch.device or str, optional
        Default: where the model's parameters are.
    process_group : torch.distributed.ProcessGroup, optional
        Shard batches over its ranks (rank r takes batches r, r + world, ...). Under ``torchrun``
        the default group is joined automatically. Every rank returns the whole result.
    progress : bool
        A tqdm bar over this rank's batches (rank 0 only).

    Returns
    -------
    PathLengthGradients
        ``norms[k]``: the norm of the length-k part of the dataset's gradient (for
        ``wrt="input"`` over every example's input, for ``wrt="units"`` over all parameters);
        ``param_by_length`` (units): the parts, which sum to the dataset's parameter gradient.
        ``by_length`` and ``total`` are None (a dataset's worth of input gradients is not kept).
        ``loss``: the dataset's mean loss.

    Raises
    ------
    ArgumentError
        For ``max_length`` with ``wrt="units"``, and what :func:`path_length_gradients` refuses.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(16, 4, width=8, depth=3).double()
    >>> data = unravel.data.synthetic(200, num_classes=4)
    >>> x, y = data.test.tensors
    >>> whole = unravel.attribution.dataset_path_length_gradients(net, (x.double(), y), batch_size=16,
    ...                                                           progress=False)
    >>> one = unravel.attribution.path_length_gradients(net, x.double(), y)  # the 40 examples at once
    >>> torch.allclose(whole.norms, one.norms, rtol=1e-10), round(whole.loss - one.loss, 12)
    (True, 0.0)

    Notes
    -----
    Each batch is decomposed by :func:`path_length_gradients` (its mean loss); a batch's parts
    are scaled by its share of the dataset's loss (its examples, or scored tokens, over the
    dataset's), so the squared input norms add over batches and the parameter parts sum.
    """
    model = as_module(model)
    check_choice("wrt", wrt, ("input", "units"))
    loss = check_loss(loss)
    max_length = check_int("max_length", max_length, 0, allow_none=True)
    if max_length is not None and wrt == "units":
        raise ArgumentError("max_length with wrt='units' is not supported over a dataset (the parts past it are "
                            "not returned per batch); leave max_length out.")
    loader = as_loader(data, check_int("batch_size", batch_size, 1), split="test")
    device = model_device(model, device)
    group_, rank, world = process_group_of(process_group)

    counts, sq, parts, loss_sum, weight_sum = None, None, None, 0.0, 0.0
    from tqdm.auto import tqdm

    try:
        total = max(0, -(-(len(loader) - rank) // world))
    except TypeError:  # an iterable dataset
        total = None
    bar = tqdm(total=total, desc="paths", unit="batch", disable=not progress or rank != 0, leave=False)
    for i, (x, y) in enumerate(loader):
        if i % world != rank:
            continue
        bar.update(1)
        x, y = x.to(device), y.to(device)
        w = _weight(x, y, loss)
        if w == 0.0:
            continue  # nothing of this batch is scored
        res = path_length_gradients(model, x, y, loss=loss, wrt=wrt, group=group, max_length=max_length,
                                    chunk_size=chunk_size)
        counts = res.counts if counts is None else counts
        loss_sum += w * res.loss
        weight_sum += w
        if wrt == "input":  # squared norms add over examples; the last slot the dropped part
            here = torch.cat([res.norms.double(), torch.tensor([res.dropped_norm], dtype=torch.float64)])
            sq = w * w * here.pow(2) if sq is None else sq + w * w * here.pow(2)
        else:
            scaled = {k: w * v for k, v in res.param_by_length.items()}
            parts = scaled if parts is None else {k: parts[k] + v for k, v in scaled.items()}
        del res
    bar.close()

    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        small = (counts, None if sq is None else sq.tolist(), loss_sum, weight_sum)
        dist.all_gather_object(gathered, small, group=group_)
        counts = next((g[0] for g in gathered if g[0] is not None), None)
        loss_sum = sum(g[2] for g in gathered)
        weight_sum = sum(g[3] for g in gathered)
        if wrt == "input":
            sq = sum(torch.tensor(g[1], dtype=torch.float64) for g in gathered if g[1] is not None)
        else:
            if counts is not None and parts is None:  # this rank had no batch
                parts = {k: p.new_zeros((len(counts),) + tuple(p.shape)) for k, p in model.named_parameters()
                         if p.requires_grad}
            for k in sorted(parts or {}):
                dist.all_reduce(parts[k], group=group_)
    if counts is None:
        raise ArgumentError("no batch of the data had anything to score (every target ignored?).")
    K = len(counts)  # lengths 0..M (M = max_length where given)
    lengths = torch.arange(K)
    counts_t = torch.tensor([float(c) for c in counts[:K]], dtype=torch.float64)
    if wrt == "input":
        norms = sq[:K].sqrt() / weight_sum
        dropped = float(sq[K].sqrt()) / weight_sum
        return PathLengthGradients("exact", wrt, lengths, counts[:K], norms, norms / counts_t, dropped_norm=dropped,
                                   loss=loss_sum / weight_sum)
    parts = {k: v / weight_sum for k, v in parts.items()}
    norms = sum(v.flatten(1).double().pow(2).sum(1) for v in parts.values()).sqrt().cpu()
    return PathLengthGradients("exact", wrt, lengths, counts[:K], norms, norms / counts_t, param_by_length=parts,
                               loss=loss_sum / weight_sum)
