"""Built-in losses, named so that the sweeps and the attribution take them as strings:
``"next_token"`` (causal language models: the output at position t scored against token t + 1).
It does not check that a model is causal; a bidirectional model given ``"next_token"`` sees the
tokens it is asked to predict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import logits_of
from .errors import ArgumentError

__all__ = ["next_token_loss", "LOSSES", "check_loss", "IGNORE_INDEX"]

#: The built-in losses the sweeps and :func:`unravel.attribution.path_length_gradients` take by name.
LOSSES = ("next_token",)

#: Targets equal to this are left out of the next-token loss (the convention of ``transformers``).
IGNORE_INDEX = -100


def next_token_loss(out, ids, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the output at position t against token t + 1 (nats per token), over the
    vocabulary; targets equal to -100 are left out.

    Parameters
    ----------
    out : tensor ``[B, T, V]`` or a model output holding it
        The logits are read as everywhere in unravel: the tensor itself, its ``logits`` (a
        Hugging Face ``CausalLMOutput``, a dict) or the first element of a tuple.
    ids : tensor ``[B, T]``
        The token ids (usually the model's inputs).
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch, unravel
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> round(float(unravel.losses.next_token_loss(torch.zeros(1, 3, 4), ids)), 4)  # uniform over 4: ln 4
    1.3863
    """
    logits = logits_of(out)
    if logits.dim() != 3 or ids.dim() != 2 or logits.shape[:2] != ids.shape:
        raise ArgumentError(f"loss='next_token' needs outputs [B, T, V] and token ids [B, T]; got outputs "
                            f"{tuple(logits.shape)} and targets {tuple(ids.shape)}.")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction=reduction,
                           ignore_index=IGNORE_INDEX)


def check_loss(loss, allowed=LOSSES):
    """``loss`` unchanged if it is None, a callable or a built-in's name; else an ArgumentError
    naming what is allowed.

    Examples
    --------
    >>> check_loss("next_token")
    'next_token'
    """
    if loss is None or callable(loss) or (isinstance(loss, str) and loss in allowed):
        return loss
    raise ArgumentError(f"loss={loss!r} is not a loss: give a callable or one of the built-in names "
                        f"{', '.join(repr(a) for a in allowed)}.")
