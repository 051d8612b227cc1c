"""The trained-model cache: a checkpoint per trained model, keyed by everything its training
depends on, so that the studies and :mod:`unravel.lm` train a given model once.

It does not check that a cached checkpoint was made by the code that hashes the same; the key
holds a hash of the sources training depends on (:func:`code_hash`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from . import train as train_mod

__all__ = ["cache_dir", "code_hash", "cached_training"]

_ROOT = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Where trained models are kept: ``$UNRAVEL_CACHE`` or ``~/.cache/unravel``, then ``models/``.

    Examples
    --------
    >>> import os
    >>> from unravel.cache import cache_dir
    >>> os.environ["UNRAVEL_CACHE"] = "/tmp/unravel-cache"
    >>> str(cache_dir())
    '/tmp/unravel-cache/models'
    """
    return Path(os.environ.get("UNRAVEL_CACHE") or Path.home() / ".cache" / "unravel") / "models"


def code_hash(*extra) -> str:
    """A hash of the sources a trained model depends on (models, training, data, and the files
    ``extra``), so that cached models are not reused across changes to them.

    Examples
    --------
    >>> from unravel.cache import code_hash
    >>> len(code_hash())
    16
    """
    h = hashlib.sha256()
    files = sorted([*(_ROOT / "models").glob("*.py"), _ROOT / "train.py", *(_ROOT / "data").glob("*.py")])
    for p in [*files, *map(Path, extra)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_training(key: str, model: torch.nn.Module, fit: Callable[[], pd.DataFrame], *, cache: bool = True,
                    prefix: str = "", device=None):
    """``(model, history frame)``: ``model`` trained by ``fit()`` (which returns its history), or
    its weights and history read from the checkpoint cached under ``key`` (a string that holds
    every setting the training depends on). A damaged checkpoint is trained again.

    Examples
    --------
    >>> import os, tempfile, pandas as pd, torch
    >>> from unravel.cache import cached_training
    >>> os.environ["UNRAVEL_CACHE"] = tempfile.mkdtemp()
    >>> net, calls = torch.nn.Linear(2, 2), []
    >>> def fit():
    ...     calls.append(1)
    ...     return pd.DataFrame({"loss": [1.0, 0.5]})
    >>> _, h = cached_training("example", net, fit)
    >>> _, h2 = cached_training("example", net, fit)
    >>> len(calls), h.equals(h2)
    (1, True)
    """
    path = cache_dir() / f"{prefix}{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
    if cache and path.is_file():
        try:
            train_mod.load(path, model)
            history = torch.load(path, weights_only=True)["meta"]["history"]
            return (model if device is None else model.to(device)), pd.DataFrame(history)
        except Exception:  # a damaged cache entry: train again
            pass
    history = fit()
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        train_mod.save(model, tmp, {"key": key, "history": history.to_dict(orient="list")})
        os.replace(tmp, path)
    return model, history
