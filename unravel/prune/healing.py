"""Healing: a short fine-tune of a pruned model, with its cost (steps, seconds) and the loss it
recovered. Public as :func:`unravel.prune.heal`.

Gromov et al. (2024) heal pruned LLMs with a short parameter-efficient fine-tune; this is the
plain version (every parameter, Adam) for the models unravel prunes. It does not check that the
data it heals on is not the data a result is reported on.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from ..sweeps.engine import make_scorer
from .._utils import check_choice, check_int, check_number, check_seed, eval_mode, logits_of, model_device, saved_modes
from ..errors import ArgumentError

__all__ = ["heal", "Healing", "quality"]


@dataclasses.dataclass(frozen=True)
class Healing:
    """What :func:`heal` did and what it cost.

    Attributes
    ----------
    steps, batch_size : int
    lr : float
    seconds : float
        Wall-clock time of the fine-tune (the two evaluations not included).
    examples : int
        The training examples the loss before and after is measured on.
    loss_before, loss_after, error_before, error_after : float
        Mean loss and error on those examples (eval mode), per example or per token.
    """

    steps: int
    batch_size: int
    lr: float
    seconds: float
    examples: int
    loss_before: float
    loss_after: float
    error_before: float
    error_after: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@torch.no_grad()
def quality(model: nn.Module, data, split: str = "test", *, batch_size: int = 256, loss=None,
            next_token: bool = False, max_examples: int | None = None, device=None) -> dict:
    """Mean ``loss`` and ``error`` of ``model`` on a split (eval mode), scored as the lesion sweeps
    score (per example, or per token; ``next_token`` for causal language models).

    Examples
    --------
    >>> import unravel
    >>> from unravel.prune import quality
    >>> data = unravel.data.synthetic(100, num_classes=2)
    >>> sorted(quality(unravel.models.resmlp(16, 2), data))
    ['error', 'examples', 'items', 'loss']
    """
    from ..train import as_loader

    import torch.nn.functional as F

    score = make_scorer(loss or F.cross_entropy, next_token)
    device = model_device(model, device)
    total, wrong, count, seen = 0.0, 0, 0, 0
    with eval_mode(model):
        for x, y in as_loader(data, batch_size, split=split):
            if max_examples is not None and seen >= max_examples:
                break
            if max_examples is not None:
                x, y = x[: max_examples - seen], y[: max_examples - seen]
            seen += len(x)
            s_loss, s_wrong, s_count, _, _ = score(model(x.to(device)), y.to(device))
            total, wrong, count = total + s_loss, wrong + s_wrong, count + s_count
    if count == 0:
        raise ArgumentError(f"the {split} split is empty: nothing to score.")
    return {"loss": total / count, "error": wrong / count, "items": count, "examples": seen}


def _training_loss(loss_fn, next_token):
    def compute(out, y):
        logits = logits_of(out)
        if next_token:
            logits, y = logits[:, :-1], y[:, 1:]
        return loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="mean")
    return compute


def heal(model: nn.Module, data, *, steps: int = 100, lr: float = 1e-4, batch_size: int = 32, loss=None,
         next_token: bool = False, split: str = "train", seed: int = 0, eval_examples: int = 1024, device=None,
         progress: bool = False) -> Healing:
    """Fine-tune ``model`` in place for ``steps`` Adam steps on ``data``'s ``split``, and return
    what it cost and what it recovered (loss and error on the first ``eval_examples`` examples of
    that split, before and after).

    Parameters
    ----------
    model : nn.Module
        A pruned model (:func:`unravel.prune.remove`), or any model; trained in train mode, its
        modes restored afterwards. Its modules and shapes are not changed.
    data : DataSplit, Dataset, DataLoader or (inputs, targets)
        A DataSplit gives its ``split``; batches are drawn in an order fixed by ``seed``.
    steps : int
        Optimiser steps (the loader is cycled when it has fewer batches).
    lr : float
        Adam's learning rate: small, since the weights are trained already.
    batch_size : int
    loss : callable, optional
        ``loss(logits, targets, reduction=...)`` on flattened logits; default cross-entropy.
    next_token : bool
        Causal language models: the output at t is trained and scored against the target at t + 1.
    split : {"train", "test"}
    seed : int
    eval_examples : int
        How many examples of the split the loss before and after is measured on.
    device : optional
    progress : bool

    Returns
    -------
    Healing

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> data = unravel.data.synthetic(200, input_shape=(8,), num_classes=3)
    >>> net = unravel.models.resmlp(8, 3, width=16, depth=4)
    >>> _ = unravel.train.fit(net, data, epochs=3, optimizer="adam", lr=1e-2, progress=False)
    >>> small = unravel.prune.remove(net, [1, 2])
    >>> h = unravel.prune.heal(small, data, steps=30, lr=1e-3)
    >>> h.steps, h.loss_after <= h.loss_before
    (30, True)
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from ..train import as_loader

    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    eval_examples = check_int("eval_examples", eval_examples, 1)
    check_choice("split", split, ("train", "test"))
    lr = check_number("lr", lr, 0, 1e3, open_low=True)  # finite: an infinite rate heals into NaN weights
    seed = check_seed(seed)
    if not isinstance(next_token, bool):
        raise ArgumentError(f"next_token={next_token!r} must be True or False.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ArgumentError("the model has no trainable parameters: there is nothing to heal.")
    device = model_device(model, device)
    loss_fn = loss or F.cross_entropy
    measure = dict(split=split, loss=loss_fn, next_token=next_token, max_examples=eval_examples, device=device)
    before = quality(model, data, **measure)
    g = torch.Generator().manual_seed(int(seed))
    loader = as_loader(data, batch_size, split=split, shuffle=True, generator=g)
    train_loss = _training_loss(loss_fn, next_token)
    opt = torch.optim.Adam(params, lr=float(lr))
    start = time.perf_counter()
    with saved_modes(model):
        model.train()
        done = 0
        bar = tqdm(total=steps, desc="heal", unit="step", disable=not progress, leave=False)
        while done < steps:
            for x, y in loader:
                out = model(x.to(device))
                value = train_loss(out, y.to(device))
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                done += 1
                bar.update(1)
                if done == steps:
                    break
        bar.close()
    seconds = time.perf_counter() - start
    after = quality(model, data, **measure)
    return Healing(steps, batch_size, float(lr), round(seconds, 3), before["examples"],
                   before["loss"], after["loss"], before["error"], after["error"])
