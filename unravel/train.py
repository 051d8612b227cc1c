"""A compact training loop with callbacks, evaluation, and safe checkpoints.

Enough to train the small models that tests and studies analyse; not a general trainer. It does
not check that the model and the data agree in shape beyond what torch itself checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .data import DataSplit
from ._io import state_hash, write_atomic
from ._utils import check_number, check_seed, eval_mode, model_device
from .errors import ArgumentError, ArgumentTypeError, CheckpointError

__all__ = ["fit", "evaluate", "save", "load", "History", "Callback", "as_loader"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")


class Callback:
    """Base class for :func:`fit` callbacks; override what you need. A plain function
    ``f(model, metrics)`` works too, as an ``on_epoch_end``."""

    def on_train_begin(self, model: nn.Module) -> None:
        pass

    def on_step_end(self, model: nn.Module, step: int, metrics: dict) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, metrics: dict) -> None:
        pass


class History:
    """What :func:`fit` measured: one dict of metrics per epoch."""

    def __init__(self):
        self.epochs: list[dict] = []

    def __getitem__(self, i):
        return self.epochs[i]

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        last = self.epochs[-1] if self.epochs else {}
        return f"History(epochs={len(self)}, last={last})"

    def to_frame(self):
        """One row per epoch (tidy)."""
        import pandas as pd

        return pd.DataFrame(self.epochs)


def _dataset(data: Any, split: str) -> Dataset:
    if isinstance(data, DataSplit):
        return getattr(data, split)
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return TensorDataset(*data)
    raise ArgumentTypeError(f"expected a DataSplit, a Dataset, a DataLoader or a tuple (inputs, targets); "
                    f"got {type(data).__name__}.")


def as_loader(data: Any, batch_size: int = 256, split: str = "test", shuffle: bool = False,
              generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader over ``data``: a DataLoader (returned as is), a Dataset, a DataSplit (its
    ``split``) or a tuple ``(inputs, targets)``."""
    if isinstance(data, DataLoader):
        return data
    ds = _dataset(data, split)
    if len(ds) == 0:
        raise ArgumentError("the data is empty: nothing to train or evaluate on.")
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, *, batch_size: int = 512, device=None,
             loss: Callable = F.cross_entropy) -> dict:
    """Mean loss and error rate of ``model`` on ``data``, in eval mode (every submodule's mode is
    restored, so a frozen BatchNorm inside a training model stays in eval mode).

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(200, num_classes=2)
    >>> m = unravel.train.evaluate(unravel.models.resmlp(16, 2), data)
    >>> sorted(m), 0 <= m["error"] <= 1
    (['error', 'loss'], True)
    """
    loader = as_loader(data, batch_size, split="test")
    device = model_device(model, device)
    total_loss, wrong, count = 0.0, 0, 0
    with eval_mode(model):  # every submodule's flag comes back (a frozen BN stays frozen)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            total_loss += float(loss(out, y, reduction="sum"))
            wrong += int((out.argmax(1) != y).sum())
            count += len(y)
    if count == 0:
        raise ArgumentError("the data is empty: nothing to evaluate.")
    return {"loss": total_loss / count, "error": wrong / count}


#: The largest learning rate (and weight decay) :func:`fit` takes: anything larger only diverges.
MAX_LR = 1e3


def fit(model: nn.Module, train: Any, test: Any = None, epochs: int = 10, *, batch_size: int = 128,
        optimizer: str = "sgd", lr: float | None = None, momentum: float = 0.9, weight_decay: float = 5e-4,
        schedule: str = "cosine", seed: int = 0, device=None, callbacks: Iterable = (),
        progress: bool = True) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Parameters
    ----------
    model : nn.Module
    train : DataSplit, Dataset, DataLoader or (inputs, targets)
        A DataSplit gives its train split here and its test split as ``test`` by default.
    test : same kinds, optional
        Evaluated after each epoch.
    epochs : int
    batch_size : int
    optimizer : {"sgd", "adam"}
        SGD with momentum (lr 0.1 by default) or Adam (lr 1e-3 by default).
    schedule : {"cosine", "step", "constant"}
        Cosine annealing over all steps; ``"step"``, the rate divided by 10 after half and again
        after three quarters of the steps (He et al. 2016's CIFAR recipe: 32k and 48k of 64k
        iterations); or a constant rate.
    seed : int
        Seeds shuffling and any randomness in the model (dropout) for this run only; the
        caller's global generator is left as it was. Runs on CPU are deterministic.
    callbacks : iterable
        :class:`Callback` objects, or functions ``f(model, metrics)`` called after each epoch.
    progress : bool
        A tqdm bar over epochs.

    Returns
    -------
    History
        One dict per epoch: epoch, train_loss, train_error, test_loss, test_error, lr, seconds.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(400, num_classes=2)
    >>> net = unravel.models.resmlp(16, 2, width=16, depth=2)
    >>> hist = unravel.train.fit(net, data, epochs=2, progress=False)
    >>> hist[-1]["epoch"], hist[-1]["test_error"] < 0.5
    (2, True)
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ArgumentError(f"epochs={epochs!r}: must be a positive integer.")
    if optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer={optimizer!r}; allowed: {', '.join(OPTIMIZERS)}.")
    if schedule not in SCHEDULES:
        raise ArgumentError(f"schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}.")
    # finite and bounded before use: an infinite or NaN rate trains a model of NaNs
    lr = check_number("lr", lr, 0, MAX_LR, open_low=True, allow_none=True)
    momentum = check_number("momentum", momentum, 0, 1)
    weight_decay = check_number("weight_decay", weight_decay, 0, MAX_LR)
    seed = check_seed(seed)
    if test is None and isinstance(train, DataSplit):
        test = train.test
    device = model_device(model, device)
    model.to(device)
    callbacks = [cb if isinstance(cb, Callback) else _FunctionCallback(cb) for cb in callbacks]

    generator = torch.Generator().manual_seed(seed)
    loader = as_loader(train, batch_size, split="train", shuffle=True, generator=generator)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=0.1 if lr is None else lr, momentum=momentum,
                              weight_decay=weight_decay, nesterov=momentum > 0)
    else:
        opt = torch.optim.Adam(params, lr=1e-3 if lr is None else lr, weight_decay=weight_decay)
    total_steps = epochs * len(loader)
    base_lrs = [g["lr"] for g in opt.param_groups]

    history = History()
    from tqdm.auto import tqdm

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for cb in callbacks:
            cb.on_train_begin(model)
        step = 0
        # a model handed over in train mode keeps its submodules' flags (a frozen BatchNorm stays
        # frozen); one in eval mode is put in train mode. evaluate() and callbacks restore flags.
        if not model.training:
            model.train()
        bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            run_loss, run_wrong, run_count = 0.0, 0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                if schedule == "cosine":
                    for g, base in zip(opt.param_groups, base_lrs):
                        g["lr"] = 0.5 * base * (1 + math.cos(math.pi * step / total_steps))
                elif schedule == "step":
                    for g, base in zip(opt.param_groups, base_lrs):
                        g["lr"] = base * (0.1 ** ((2 * step >= total_steps) + (4 * step >= 3 * total_steps)))
                out = model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                run_loss += loss.item() * len(y)
                run_wrong += int((out.argmax(1) != y).sum())
                run_count += len(y)
                for cb in callbacks:
                    cb.on_step_end(model, step, {"epoch": epoch, "step": step, "loss": loss.item()})
            metrics = {"epoch": epoch, "train_loss": run_loss / run_count, "train_error": run_wrong / run_count}
            if test is not None:
                m = evaluate(model, test, device=device)
                metrics.update(test_loss=m["loss"], test_error=m["error"])
            metrics.update(lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - start)
            history.epochs.append(metrics)
            bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if k.endswith(("loss", "error"))})
            for cb in callbacks:
                cb.on_epoch_end(model, metrics)
    return history


class _FunctionCallback(Callback):
    def __init__(self, fn):
        if not callable(fn):
            raise ArgumentTypeError(f"a callback must be a Callback or a function (model, metrics); got {fn!r}.")
        self.fn = fn

    def on_epoch_end(self, model, metrics):
        self.fn(model, metrics)


def save(model: nn.Module, path, meta: dict | None = None) -> Path:
    """Save ``model``'s state dict and a dict of plain metadata (numbers, strings, lists).

    Examples
    --------
    >>> import tempfile, os, unravel
    >>> net = unravel.models.resmlp(4, 2, width=8, depth=1)
    >>> path = unravel.train.save(net, os.path.join(tempfile.mkdtemp(), "m.pt"), {"epochs": 3})
    >>> unravel.train.load(path, unravel.models.resmlp(4, 2, width=8, depth=1)) is not None
    True
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"state_dict": state, "meta": dict(meta or {}), "model_class": type(model).__qualname__,
            "content_hash": state_hash(state)}  # checked by load: a changed or damaged file is refused
    # written beside the destination, then moved: a failed write never leaves half a checkpoint
    return write_atomic(path, lambda tmp: torch.save(ckpt, tmp), "checkpoint")


def load(path, model: nn.Module | None = None, map_location="cpu"):
    """Load a checkpoint written by :func:`save`, a bare ``state_dict`` saved with ``torch.save``, or a
    ``.safetensors`` file; with ``weights_only=True`` (it cannot run code).

    With ``model``: its weights are replaced (strictly) and the model is returned. Without: the
    checkpoint dict (``state_dict``, ``meta``, ``model_class``) is returned.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a checkpoint (any file torch cannot read with
        ``weights_only=True``, or a dict without ``state_dict``), or does not fit ``model``.
    """
    path = Path(path)
    what = ("a checkpoint written by unravel.train.save (or `unravel train --save`), a saved state_dict, or a "
            ".safetensors file")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}: expected {what}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            ckpt = load_file(str(path), device=str(map_location))
        else:
            _check_zip(path)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # torch's unpickler raises many types on a file that is not a checkpoint
        # torch's own message (advice to turn weights_only off, or an opcode) would mislead here
        raise CheckpointError(f"{str(path)!r} is not a checkpoint unravel can read (torch.load with "
                              f"weights_only=True failed: {type(e).__name__}); expected {what}.") from None
    if isinstance(ckpt, dict) and ckpt and all(isinstance(k, str) and torch.is_tensor(v) for k, v in ckpt.items()):
        ckpt = {"state_dict": ckpt, "meta": {}, "model_class": None}  # a bare state_dict (torch.save, safetensors)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not an unravel checkpoint (no 'state_dict'); expected {what}.")
    _check_content(path, ckpt)
    if model is None:
        return ckpt
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} (saved from {ckpt.get('model_class')}) does not fit "
                              f"{type(model).__name__}: {str(e).splitlines()[0]}") from None
    return model


def _check_zip(path: Path) -> None:
    """A checkpoint torch wrote is a zip whose every record has a CRC-32: a damaged byte fails it."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            damaged = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        damaged = f"({type(e).__name__})"
    if damaged is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its record {damaged} fails its CRC check (the "
                              "file changed after torch wrote it). Write it again.")


def _check_content(path: Path, ckpt: dict) -> None:
    """The state_dict is a dict of tensors, equal to the content hash :func:`save` recorded; a
    warning names tensors that hold NaN or infinities."""
    import warnings

    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"checkpoint {str(path)!r}: its 'state_dict' is a {type(state).__name__}, not a "
                              "mapping of parameter names to tensors.")
    recorded = ckpt.get("content_hash")
    if recorded is not None and recorded != state_hash(state):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its weights do not hash as when it was written "
                              f"(content hash {recorded!r}). Write it again.")
    bad = [k for k, v in state.items() if v.is_floating_point() and v.device.type != "meta"
           and not bool(torch.isfinite(v).all())]
    if bad:
        warnings.warn(f"checkpoint {str(path)!r}: {len(bad)} of {len(state)} tensors hold NaN or infinite values "
                      f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the model will compute NaN.",
                      stacklevel=3)
