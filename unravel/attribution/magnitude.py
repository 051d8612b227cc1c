"""Veit et al.'s gradient magnitude by path length as the paper measured it (NeurIPS 2016,
Sec. 4.2 and Fig. 6): single paths sampled per length and measured on random training batches.

The paper runs one forward pass and one masked backward pass per measured path; here each batch
is recorded once and all the paths measured on it are propagated together
(:mod:`~unravel.attribution.sample`). The quantity is Veit's *magnitude* (number of paths x mean
single-path norm); the exact, cancelling *net* quantity is :func:`path_length_gradients`.
It does not draw the batches: pass the random training batches to measure on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import check_choice, check_int
from ..errors import ArgumentError
from ..interventions import intervene
from ..units import find_units
from ._record import MODES, analysis_mode, prepare, record
from .result import PathLengthGradients
from .sample import choose_paths, path_norms, summarise

__all__ = ["path_magnitudes", "single_path_norm"]


def path_magnitudes(model: nn.Module, batches, *, num_samples: int = 1000, generator=None,
                    loss: Callable | None = None, mode: str = "eval", paths_per_pass: int | None = None,
                    max_length: int | None = None) -> PathLengthGradients:
    """Veit et al.'s magnitude by path length, measured on several batches as the paper did.

    Per length k, ``num_samples`` paths are drawn uniformly (every path where length k has no
    more), and measurement i is taken on batch ``i mod len(batches)``: the norm, at the first
    unit's input, of the loss gradient propagated through that path only (the residual branch
    in its units, the shortcut elsewhere). ``norms`` is the number of length-k paths times the
    mean measured norm, with a per-length 95% interval (``low``, ``high``).

    Parameters
    ----------
    model : nn.Module
        As for :func:`path_length_gradients` (units forming a chain).
    batches : sequence
        Batches, each ``(inputs, targets)`` or inputs alone (the loss is then the summed top
        logit); Veit et al. use random training batches.
    num_samples : int
        Measurements per length (1,000 in the paper).
    generator : int, torch.Generator or random.Random, optional
        The seed or source of randomness for the paths.
    loss : callable, optional
        ``loss(outputs, targets) -> scalar`` (default: mean cross-entropy).
    mode : {"eval", "train"}
    paths_per_pass : int, optional
        Paths propagated together (default: as many as fit 32 MiB of stacked gradients, at most 128).
    max_length : int, optional
        Measure lengths up to this.

    Returns
    -------
    PathLengthGradients
        ``method="sample"``, ``quantity == "magnitude"``; ``loss`` is the mean over batches.

    Raises
    ------
    ArgumentError
        For no batches, or a bad ``num_samples``, ``mode``, ``paths_per_pass`` or ``max_length``.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(8, 3, width=8, depth=4)
    >>> batches = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
    >>> r = unravel.attribution.path_magnitudes(net, batches, num_samples=5, generator=0)
    >>> r.quantity, r.samples.tolist()
    ('magnitude', [1, 4, 5, 4, 1])
    >>> bool((r.low <= r.norms).all() and (r.norms <= r.high).all())
    True
    """
    num_samples = check_int("num_samples", num_samples, 1)
    paths_per_pass = check_int("paths_per_pass", paths_per_pass, 1, allow_none=True)
    max_length = check_int("max_length", max_length, 0, allow_none=True)
    check_choice("mode", mode, MODES)
    batches = list(batches)
    if not batches:
        raise ArgumentError("batches is empty: pass at least one batch, (inputs, targets) or inputs.")
    units = find_units(model)
    chosen, owner, counts, M = None, None, None, None
    norms, losses = None, []
    with analysis_mode(model, mode):
        for b, batch in enumerate(batches):
            x, y = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
            inputs, loss_fn = prepare(model, x, y, loss)
            records, _, L = record(model, units, inputs, y, loss_fn, fold=mode == "eval")
            if chosen is None:
                chosen, owner, counts, M = choose_paths(records, num_samples, generator, max_length)
                norms = [None] * len(chosen)
            mine = list(range(b, len(chosen), len(batches)))
            got = path_norms(records, L, [chosen[i] for i in mine], paths_per_pass)
            for i, v in zip(mine, got.tolist()):
                norms[i] = v
            losses.append(float(L.detach()))
            del records, L
    return summarise(torch.tensor(norms, dtype=torch.float64), owner, counts, M, loss=sum(losses) / len(losses))


def single_path_norm(model: nn.Module, x, y, path, *, loss: Callable | None = None) -> float:
    """Veit et al.'s protocol for one path, the reference the fast estimator is tested and timed
    against: one forward of the batch and one backward through the path alone (the residual
    branch in the units of ``path``, the shortcut in the others; the other branch detached).

    Returns the norm of the loss's gradient at the first unit's input, computed in float64 (a
    float32 norm of values near 1e-27 squares them below float32's smallest number and reads 0).

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resmlp(4, 3, width=4, depth=2).double()
    >>> x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    >>> single_path_norm(net, x, y, (0, 1)) > 0
    True
    """
    taken, leaf = {int(p) for p in path}, {}

    def compute(unit, xin, position, **kw):
        p = position.index
        if p == 0:
            xin = leaf.setdefault(0, xin.detach().requires_grad_())
        s, r = unit.shortcut(xin), unit.residual(xin, **kw)
        return unit.post(s.detach() + r if p in taken else s + r.detach())

    with intervene(model, compute=compute):
        value = (loss or F.cross_entropy)(model(x), y)
    grad, = torch.autograd.grad(value, leaf[0])
    return float(torch.linalg.vector_norm(grad.double()))
