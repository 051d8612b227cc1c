"""How the commands score a model: next tokens on token ids (language-model data), labels
otherwise; and ``--group``, the candidates a lesion deletes together (single units, or the units
of one transformer layer).
"""

from __future__ import annotations

__all__: list = []



def add_group(q) -> None:
    """The ``--group`` option."""
    from ..units.groups import GROUPS

    q.add_argument("--group", choices=GROUPS, default="unit",
                   help="what moves together: a unit (default), all units of one layer (a transformer layer's "
                        "attention and MLP), or a stage (a new one at every projection shortcut)")


def sweep_options(args, run) -> dict:
    """The keyword arguments of a sweep: next-token scoring on token ids, and the group."""
    return {"next_token": run.tokens, "group": getattr(args, "group", "unit")}


def attribution_options(args, run) -> dict:
    """The keyword arguments of :func:`unravel.attribution.path_length_gradients`: the
    next-token loss on token ids, and the group."""
    options = {"group": getattr(args, "group", "unit")}
    if run.tokens:
        options["loss"] = "next_token"
    return options
