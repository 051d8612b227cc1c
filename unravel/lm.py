"""Language models trained here: a GPT-2 from ``transformers`` (random initialisation from a
config, nothing downloaded) trained on the standard library's source (:func:`unravel.data.stdlib`),
its next-token loss in bits per byte, and a cache of trained checkpoints keyed by their settings.

The model is registered as ``gpt2_lm`` (``depth`` layers of two residual units each, attention
and MLP), so study specs and the command line build it by name. Training is AdamW with a linear
warm-up and a cosine decay, on random windows of the training files; nothing here checks that a
model trained long enough for an analysis to mean anything (the history says how far it got).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import cached_training, code_hash
from ._utils import check_device, check_int, check_seed, eval_mode, logits_of, model_device
from .errors import ArgumentError
from .losses import next_token_loss
from .models.registry import register_model

__all__ = ["gpt2", "LMTraining", "fit", "evaluate", "trained", "train_study_model", "cache_key"]


def gpt2(num_classes: int = 256, context: int = 128, depth: int = 6, width: int = 256, heads: int = 4,
         dropout: float = 0.0) -> nn.Module:
    """A GPT-2 language model (``transformers.GPT2LMHeadModel``) with random weights.

    Parameters
    ----------
    num_classes : int
        The vocabulary (256: bytes).
    context : int
        The longest sequence (``n_positions``).
    depth : int
        Transformer layers; each holds two residual units (attention, MLP).
    width : int
        The hidden size; a multiple of ``heads``.
    heads : int
    dropout : float
        Residual, embedding and attention dropout (0: none; the studies measure at eval anyway).

    Examples
    --------
    >>> import unravel
    >>> lm = unravel.lm.gpt2(context=32, depth=2, width=32, heads=2)
    >>> len(unravel.find_units(lm)), lm.config.n_positions
    (4, 32)
    """
    for name, v, low in (("num_classes", num_classes, 2), ("context", context, 2), ("depth", depth, 1),
                         ("width", width, 1), ("heads", heads, 1)):
        check_int(name, v, low)
    if width % heads:
        raise ArgumentError(f"width={width} must be a multiple of heads={heads}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ArgumentError(f"dropout={dropout!r} must be a number in [0, 1).")
    import transformers

    cfg = transformers.GPT2Config(vocab_size=num_classes, n_positions=context, n_embd=width, n_layer=depth,
                                  n_head=heads, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                                  use_cache=False, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


register_model("gpt2_lm", gpt2, sizing=lambda shape: {"context": int(shape[-1])}, depth=6, width="width",
               replace=True)


#: What :class:`LMTraining` ``precision`` allows: float32 throughout, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class LMTraining:
    """How :func:`fit` trains: ``steps`` AdamW updates (betas 0.9, 0.95) on batches of
    ``batch_size`` random windows, the learning rate warmed up linearly over ``warmup`` steps to
    ``lr`` and decayed by a cosine to a tenth of it; weight decay on the weight matrices only;
    gradients clipped to norm 1; the validation windows scored every ``eval_every`` steps.
    ``precision="bf16"`` runs the training steps' forward passes under bfloat16 autocast (the
    weights and optimiser stay float32; evaluation and every later measurement run in float32):
    the usual mixed precision of language-model training, several times faster on a GPU."""

    steps: int = 1500
    batch_size: int = 8
    lr: float = 1.5e-3
    warmup: int = 100
    weight_decay: float = 0.1
    eval_every: int = 250
    precision: str = "fp32"

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup", self.warmup, 0)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ArgumentError(f"lr={self.lr!r} must be a number > 0.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ArgumentError(f"weight_decay={self.weight_decay!r} must be a number >= 0.")
        if self.precision not in PRECISIONS:
            raise ArgumentError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}.")


def _windows(data, split):
    if torch.is_tensor(data):
        return data
    if hasattr(data, "tensors"):  # a TensorDataset of (ids, ids)
        return data.tensors[0]
    ds = getattr(data, split, None)
    if ds is None:
        raise ArgumentError(f"expected token windows [N, T], a TensorDataset of them or a TextSplit with a "
                            f"{split!r} split; got {type(data).__name__}.")
    return ds.tensors[0]


@torch.no_grad()
def evaluate(model: nn.Module, data, split: str = "test", *, batch_size: int = 64, device=None) -> dict:
    """Next-token loss (nats), bits per byte (the loss over ln 2, for byte tokens) and error (the
    share of tokens whose most likely prediction is wrong), in eval mode.

    Examples
    --------
    >>> import torch, unravel
    >>> lm = unravel.lm.gpt2(context=16, depth=1, width=16, heads=2)
    >>> m = unravel.lm.evaluate(lm, torch.randint(0, 256, (4, 16)))
    >>> sorted(m), m["tokens"]
    (['bits_per_byte', 'error', 'loss', 'tokens'], 60)
    """
    ids = _windows(data, split)
    device = model_device(model, device)
    total, wrong, count = 0.0, 0, 0
    with eval_mode(model):
        for i in range(0, len(ids), batch_size):
            x = ids[i:i + batch_size].to(device)
            logits = logits_of(model(x))[:, :-1]
            y = x[:, 1:]
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            wrong += int((logits.argmax(-1) != y).sum())
            count += y.numel()
    if count == 0:
        raise ArgumentError("no token to score: the windows are empty or one token long.")
    return {"loss": total / count, "bits_per_byte": total / count / math.log(2), "error": wrong / count,
            "tokens": count}


def fit(model: nn.Module, data, training: LMTraining | None = None, *, seed: int = 0, device=None,
        progress: bool = True):
    """Train a causal language model in place on a :class:`~unravel.data.TextSplit`'s corpus
    (random training windows, ``seed`` fixes them) and return its history.

    Returns
    -------
    pandas.DataFrame
        One row per evaluation: ``step``, ``tokens`` (seen so far), ``seconds``, ``train_loss``
        (mean since the last row), ``val_loss``, ``val_bits_per_byte``, ``val_error``.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.stdlib(context=32, train_windows=8, validation_windows=8, test_windows=8)
    >>> lm = unravel.lm.gpt2(context=32, depth=1, width=32, heads=2)
    >>> hist = unravel.lm.fit(lm, data, unravel.lm.LMTraining(steps=4, batch_size=2, eval_every=2), progress=False)
    >>> hist.step.tolist(), bool((hist.val_bits_per_byte < 8.1).all())
    ([2, 4], True)
    """
    import pandas as pd

    t = training or LMTraining()
    corpus = getattr(data, "corpus", None)
    if corpus is None or getattr(data, "validation", None) is None:
        raise ArgumentError(f"fit needs a TextSplit (unravel.data.stdlib(...)); got {type(data).__name__}.")
    context = int(data.input_shape[0])
    device = model_device(model, device)
    torch.manual_seed(seed)
    batches = corpus.batches(context, t.batch_size, seed=seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=t.lr, betas=(0.9, 0.95))

    def factor(step):  # step counts from 0
        warm = min(1.0, (step + 1) / t.warmup) if t.warmup else 1.0
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, t.steps - 1))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                else contextlib.nullcontext())
    from tqdm.auto import tqdm

    rows, losses, start = [], [], time.perf_counter()
    was_training = model.training
    model.train()
    bar = tqdm(range(1, t.steps + 1), desc="train lm", unit="step", disable=not progress, leave=False)
    try:
        for step in bar:
            x = next(batches).to(device)
            with autocast:
                loss = next_token_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % t.eval_every == 0 or step == t.steps:
                m = evaluate(model, data, "validation", device=device)
                rows.append({"step": step, "tokens": step * t.batch_size * context,
                             "seconds": round(time.perf_counter() - start, 2), "train_loss": float(np.mean(losses)),
                             "val_loss": m["loss"], "val_bits_per_byte": m["bits_per_byte"], "val_error": m["error"]})
                bar.set_postfix(val_bpb=f"{m['bits_per_byte']:.3f}")
                losses = []
                model.train()
    finally:
        bar.close()
        model.train(was_training)
    return pd.DataFrame(rows)


def _code_hash() -> str:
    return code_hash(__file__)


def _describe(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
        return {"class": type(model).__qualname__, "config": cfg}
    return {"class": type(model).__qualname__, "shapes": [[k, list(v.shape)] for k, v in model.state_dict().items()]}


def cache_key(model: nn.Module, data, training: LMTraining, seed: int, device) -> str:
    """The settings a trained checkpoint is cached under (JSON): the model's class and config, the
    data (its name, context, validation windows, and the corpus fingerprint: the standard library differs between
    machines), the training settings, the seed, the device type, the versions of torch and
    transformers, and a hash of the code the training depends on."""
    import transformers

    fp = data.corpus.fingerprint()
    return json.dumps({"model": _describe(model), "data": {"name": data.name, "context": int(data.input_shape[0]),
                                                           "validation": len(data.validation), "corpus": fp},
                       "training": dataclasses.asdict(training), "seed": int(seed),
                       "device": torch.device(device).type if device is not None else "cpu",
                       "torch": torch.__version__, "transformers": transformers.__version__, "code": _code_hash()},
                      sort_keys=True, default=str)


def trained(model: nn.Module, data, training: LMTraining | None = None, *, seed: int = 0, device=None,
            cache: bool = True, progress: bool = True):
    """``(model, history)``: ``model`` (freshly initialised, say after ``torch.manual_seed(seed)``)
    trained by :func:`fit`, or its weights read from the cache when a model of the same
    :func:`cache_key` was trained before (in ``$UNRAVEL_CACHE`` or ``~/.cache/unravel``, under
    ``models/``, beside the studies' models).

    Examples
    --------
    >>> import os, tempfile, torch, unravel
    >>> os.environ["UNRAVEL_CACHE"] = tempfile.mkdtemp()
    >>> data = unravel.data.stdlib(context=16, train_windows=8, validation_windows=8, test_windows=8)
    >>> t = unravel.lm.LMTraining(steps=2, batch_size=2, eval_every=2)
    >>> _ = torch.manual_seed(0)
    >>> a, h = unravel.lm.trained(unravel.lm.gpt2(context=16, depth=1, width=16, heads=2), data, t, progress=False)
    >>> _ = torch.manual_seed(0)
    >>> b, h2 = unravel.lm.trained(unravel.lm.gpt2(context=16, depth=1, width=16, heads=2), data, t, progress=False)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), h.equals(h2)
    (True, True)
    """
    training = training or LMTraining()
    device = model_device(model, device)
    key = cache_key(model, data, training, seed, device)
    return cached_training(key, model, lambda: fit(model, data, training, seed=seed, device=device, progress=progress),
                           cache=cache, prefix="lm-", device=device)



def train_study_model(seed: int = 0, *, study: str = "lm-ensemble", quick: bool = False, steps: int | None = None,
                      device="cpu", cache: bool = True, progress: bool = True):
    """``(model, history, data)``: the language model of a study spec (its ``models.lm``, data and
    training settings; ``quick``: its quick overrides) trained from ``seed`` (or read from the
    cache): what ``unravel lm train`` runs, and the very model the study then reuses.

    Examples
    --------
    >>> import os, tempfile, unravel
    >>> os.environ["UNRAVEL_CACHE"] = tempfile.mkdtemp()
    >>> model, hist, data = unravel.lm.train_study_model(quick=True, steps=2, progress=False)
    >>> len(unravel.find_units(model)), hist.step.tolist()[-1]
    (8, 2)
    """
    from .study.spec import load_spec, parse_spec

    device = check_device(device)
    seed = check_seed(seed)
    spec = load_spec(study, quick=quick)
    if steps is not None:
        spec.setdefault("analysis", {})["steps"] = check_int("steps", steps, 1)
    checked = parse_spec(spec)
    if "lm" not in checked.models or not hasattr(checked.analysis, "training"):
        raise ArgumentError(f"study {study!r} trains no language model (it needs models.lm and an lm-ensemble "
                            "analysis).")
    data = checked.data.load()
    torch.manual_seed(seed)
    model = checked.models["lm"].build(data).to(device)
    model, history = trained(model, data, checked.analysis.training, seed=seed, device=device, cache=cache,
                             progress=progress)
    return model, history, data
