"""Pruning Hugging Face ``transformers`` models: their layer lists and configs (a dropped layer
updates ``num_hidden_layers`` and the layer indices caches use), and the sublayers replaced by
:class:`~unravel.prune.ZeroBranch` where a unit is part of a layer (what the layer's adapter
says through :meth:`unravel.adapters.Adapter.zero_plan`), listed in the config.
"""

from __future__ import annotations

from torch import nn

from ..adapters import adapter_for, original_class
from ..errors import UnsupportedModelError
from ..units import find_units
from .modules import ZeroBranch

__all__ = ["HF_SUBLAYERS_KEY", "is_hf", "is_hf_block", "layer_config", "renumber", "zero_plan", "zero_sublayers",
           "record_sublayers"]

#: The config attribute of a pruned ``transformers`` model listing the sublayers replaced by
#: :class:`ZeroBranch` (unit names in the pruned model), read back by :func:`from_pretrained`.
HF_SUBLAYERS_KEY = "unravel_removed_sublayers"


def is_hf(module: nn.Module) -> bool:
    return any(c.__module__.startswith("transformers.") for c in type(module).__mro__) and hasattr(module, "config")


def is_hf_block(module: nn.Module) -> bool:
    return original_class(module).__module__.startswith("transformers.")


_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def layer_config(root: nn.Module, list_name: str, length: int):
    """(config, key) counting the layers of the ModuleList ``list_name``, or None."""
    parts = list_name.split(".") if list_name else []
    for i in range(len(parts) - 1, -1, -1):
        owner = root.get_submodule(".".join(parts[:i]))
        config = getattr(owner, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            continue
        for key in _COUNT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == length:
                return config, key
        return None
    return None


def renumber(layer: nn.Module, old: int, new: int) -> None:
    for m in layer.modules():
        for attr in ("layer_idx", "layer_id"):
            v = getattr(m, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and v == old:
                setattr(m, attr, new)


def zero_plan(block, positions, names) -> dict[str, dict]:
    """attr -> the arguments of a :class:`ZeroBranch`, for the units at ``positions`` of a
    transformers layer: what its adapter says (:meth:`unravel.adapters.Adapter.zero_plan`)."""
    what = f"{', '.join(names)} of {type(block).__name__}"
    plan = adapter_for(block).zero_plan(block, positions, what)
    if plan is None:
        raise UnsupportedModelError(
            f"cannot remove {what} physically: only whole layers, or sublayers of transformers layers that "
            "unravel reads from their forward, can be removed (this layer has a hand-written adapter, and its "
            "deletion is not the identity). Use unravel.lesion.delete.")
    return plan


def zero_sublayers(block, positions, names) -> None:
    """Replace the sublayers of ``block`` that compute the units at ``positions`` by zero modules."""
    for attr, z in zero_plan(block, positions, names).items():
        module = ZeroBranch(z["outputs"], z["index"], z["data"], z["passthrough"])
        if z["layer_idx"] is not None:  # caches are checked by the layer index of what they are passed to
            module.layer_idx = z["layer_idx"]
        owner, _, name = attr.rpartition(".")  # a submodule read through: "attention.output.dense"
        setattr(block.get_submodule(owner) if owner else block, name, module)


def record_sublayers(new, zeroed):
    """List the ZeroBranch sublayers of a transformers model in its config (by unit name)."""
    config = getattr(new, "config", None)
    if config is None:
        return
    index = {u.key: u.name for u in find_units(new)}
    recorded = list(getattr(config, HF_SUBLAYERS_KEY, None) or [])
    for block, positions in zeroed:
        for p in positions:
            name = index.get((id(block), p))
            if name is not None and name not in recorded:
                recorded.append(name)
    setattr(config, HF_SUBLAYERS_KEY, recorded)
