"""Lesions at inference: delete or reorder residual units of a model (Veit et al. 2016).

A lesion is a context manager built on :func:`unravel.intervene`: it leaves the model exactly as
it was (same classes, modules, state_dict bits and train/eval flags), also through an exception,
and whatever runs inside it -- attribution included -- sees the lesioned network. The lesion
studies (``delete_each``, ``delete_random``, ``reorder_random``) are in :mod:`unravel.sweeps`.
Nothing here checks that the model couples no samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._utils import as_tuple, check_int, eval_mode, model_device, saved_modes
from .errors import ArgumentError
from .interventions import intervene
from .units import find_units, resolve_units, swappable

__all__ = ["delete", "reorder", "unit_shapes", "recalibrate_bn", "recalibrated_bn"]


# ------------------------------------------------------------------------------------------
# Naming units


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
        The model itself, its units deleted while inside.

    Raises
    ------
    ArgumentError
        For an unknown index or name (the message lists the valid range and names).

    Notes
    -----
    A projection unit keeps its projection; a post-activation unit keeps its ReLU (or a post-LN
    transformer unit its LayerNorm); a plain unit is replaced by its bypass (the identity, or a
    parameter-free subsample-and-pad where the shape changes); a DenseNet layer adds zero
    channels. Lesions nest, and what runs inside sees the lesioned network (attribution inside
    ``delete`` decomposes the lesioned model's gradient). On exit (also through an exception) the
    model is exactly as before.

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
    if units is None:
        raise ArgumentError("delete(model, None) names no unit; give unit indices, names or ResidualUnits "
                            "(an empty list deletes nothing).")
    with intervene(model, delete=units):
        yield model


def unit_shapes(model: nn.Module, inputs) -> list[tuple[tuple, tuple]]:
    """Per unit, the shape of its input and output (batch dimension dropped) on ``inputs``.

    One forward pass in eval mode without gradients; the model's modes are restored. Inside a
    lesion, the shapes are the lesioned network's.

    Examples
    --------
    >>> import torch, unravel
    >>> shapes = unravel.lesion.unit_shapes(unravel.models.resnet_cifar(8), torch.randn(1, 3, 32, 32))
    >>> shapes[0], shapes[1]
    (((16, 32, 32), (16, 32, 32)), ((16, 32, 32), (32, 16, 16)))
    """
    units = find_units(model)
    shapes: dict[int, tuple] = {}

    def compute(unit, x, position, **kw):
        y = unit.forward(x, **kw)
        shapes[position.index] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
        return y

    with eval_mode(model), torch.no_grad(), intervene(model, compute=compute):
        model(*as_tuple(inputs))
    return [shapes.get(u.index) for u in units]


def _check_order(units, order, shapes=None):
    n = len(units)
    if isinstance(order, (str, bytes)) or not hasattr(order, "__iter__") or isinstance(order, Mapping):
        raise ArgumentError(f"order must be a sequence of units (indices, names or ResidualUnits), one per position; "
                            f"got {order!r}.")
    named = [resolve_units(units, [i]) for i in order]  # ints, names and units only: a float is refused
    order = [u[0].index for u in named]
    if sorted(order) != list(range(n)):
        raise ArgumentError(f"order must be a permutation of 0..{n - 1} (the model has {n} units); got {order}.")
    bad = []
    for p, q in enumerate(order):
        if p == q:
            continue
        for i in {p, q}:
            why = swappable(units[i])
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
        raise ArgumentError("only units with an identity shortcut and equal input and output shapes may change "
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
    ArgumentError
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
    with intervene(model, place={p: q for p, q in enumerate(order) if p != q}):
        yield model


# ------------------------------------------------------------------------------------------
# Batch-norm statistics of a lesioned network


def _norm_layers(model: nn.Module) -> list:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Any, *, batch_size: int = 256, max_examples: int | None = None,
                   device=None) -> nn.Module:
    """Recompute every BatchNorm layer's running statistics from ``data``, in place, for the
    network as it runs now (inside a lesion: the lesioned network).

    A deleted unit changes what the layers after it receive, so the running statistics the
    trained network kept no longer describe their inputs: evaluated with them, a subnetwork is
    out of distribution (lesion damage rather than what the subnetwork computes). This resets
    them and makes one pass over ``data`` with the BatchNorm layers in train mode and momentum
    None (a cumulative average), every other module in eval mode (no dropout) and no
    gradients; modes and momenta are restored, and a layer that did not run (in a deleted
    unit's branch) keeps its statistics. :func:`recalibrated_bn` puts the old statistics
    back afterwards.

    Parameters
    ----------
    model : nn.Module
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        A DataSplit gives its train split; a DataLoader is used as it is.
    batch_size : int
        Examples per forward pass. The running mean (variance) becomes the mean over batches of
        each batch's mean (unbiased variance): with one batch, exactly the data's.
    max_examples : int, optional
        Use only the first so many examples.
    device : optional
        Default: where the model is.

    Returns
    -------
    nn.Module
        The model.

    Raises
    ------
    ArgumentError
        If ``data`` is empty, or ``max_examples`` or ``batch_size`` is not a positive integer.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1, in_channels=1)
    >>> x, y = torch.randn(64, 1, 40), torch.zeros(64, dtype=torch.long)
    >>> with unravel.lesion.delete(net, [1]), unravel.lesion.recalibrated_bn(net, (x, y)):
    ...     int(net.stage3[0].residual[1].num_batches_tracked)
    1
    >>> int(net.stage3[0].residual[1].num_batches_tracked)
    0
    """
    from .train import as_loader

    batch_size = check_int("batch_size", batch_size, 1)
    max_examples = check_int("max_examples", max_examples, 1, allow_none=True)
    loader = _batches(data, batch_size) or as_loader(data, batch_size, split="train")
    device = model_device(model, device)
    layers = _norm_layers(model)
    momenta = [m.momentum for m in layers]
    saved = [[b.detach().clone() for b in m.buffers()] for m in layers]
    seen = 0
    with saved_modes(model):
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        try:
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if max_examples is not None:
                    x = x[: max_examples - seen]
                if len(x) == 0:
                    break
                model(x.to(device))
                seen += len(x)
                if max_examples is not None and seen >= max_examples:
                    break
        finally:
            for m, momentum, old in zip(layers, momenta, saved):
                m.momentum = momentum
                if not int(m.num_batches_tracked):  # not run (a deleted unit's branch): as it was
                    for b, v in zip(m.buffers(), old):
                        b.copy_(v)
    if seen == 0:
        raise ArgumentError("recalibrate_bn got no examples (the data is empty): give data with at least one example.")
    return model


def _batches(data, batch_size):
    """Slices of the inputs where ``data`` holds them as one tensor (a DataSplit's train split, a
    TensorDataset, a tuple): no per-example collation, which costs more than the forward here."""
    from torch.utils.data import TensorDataset

    from .data import DataSplit

    if isinstance(data, DataSplit):
        data = data.train
    if isinstance(data, TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and data and all(torch.is_tensor(t) for t in data):
        x = data[0]
        return [(x[i:i + batch_size],) for i in range(0, len(x), batch_size)] or [(x,)]
    return None


@contextlib.contextmanager
def recalibrated_bn(model: nn.Module, data: Any, **kwargs):
    """:func:`recalibrate_bn` inside; every BatchNorm buffer bit-exactly as before on exit (also
    through an exception). Keyword arguments go to :func:`recalibrate_bn`.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1, in_channels=1)
    >>> data = (torch.randn(32, 1, 40), torch.zeros(32, dtype=torch.long))
    >>> before = {k: v.clone() for k, v in net.state_dict().items()}
    >>> with unravel.lesion.delete(net, [0, 2]), unravel.lesion.recalibrated_bn(net, data):
    ...     out = net.eval()(data[0])
    >>> all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    True
    """
    saved = [(b, b.detach().clone()) for m in _norm_layers(model) for b in m.buffers()]
    try:
        recalibrate_bn(model, data, **kwargs)
        yield model
    finally:
        with torch.no_grad():
            for b, old in saved:
                b.copy_(old)


# The lesion studies live in unravel.sweeps; re-exported here, where users look for them.
