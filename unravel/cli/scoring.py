"""How the commands score a model: next tokens on token ids (language-model data), labels
otherwise; and ``--group``, the candidates a lesion deletes together (single units, or the units
of one transformer layer).
"""

from __future__ import annotations

import inspect

from ..errors import ArgumentError

__all__: list = []

GROUPS = ("unit", "layer")


def add_group(q) -> None:
    """The ``--group`` option."""
    q.add_argument("--group", choices=GROUPS, default="unit",
                   help="what is deleted together: a unit (default), or all units of one layer (a transformer "
                        "layer's attention and MLP)")


def _takes(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def sweep_options(args, run) -> dict:
    """The keyword arguments of a sweep: next-token scoring on token ids, and the group."""
    from .. import sweeps

    options = {"next_token": run.tokens}
    group = getattr(args, "group", "unit")
    if group != "unit":
        if not _takes(sweeps.delete_each, "group"):
            raise ArgumentError(f"--group {group}: this version of unravel.sweeps deletes single units only")
        options["group"] = group
    return options


def next_token_loss(outputs, targets):
    """Mean cross-entropy of the output at position t against token t + 1 (a model's ``logits``
    attribute, or the first of a tuple, where it returns more than a tensor)."""
    import torch.nn.functional as F

    logits = getattr(outputs, "logits", outputs)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())


def attribution_options(args, run) -> dict:
    """The keyword arguments of :func:`unravel.attribution.path_length_gradients`: the next-token
    loss on token ids, and the group."""
    from .. import attribution

    fn = attribution.path_length_gradients
    options = {}
    if run.tokens:
        options["loss"] = next_token_loss
    group = getattr(args, "group", "unit")
    if group != "unit":
        if not _takes(fn, "group"):
            raise ArgumentError(f"--group {group}: this version of path_length_gradients attributes to single units "
                                "only")
        options["group"] = group
    return options

