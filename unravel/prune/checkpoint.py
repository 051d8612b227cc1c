"""Loading pruned models: a state dict saved from a pruned model into the unpruned architecture
(:func:`load`), and a pruned ``transformers`` model saved with ``save_pretrained``
(:func:`from_pretrained`).
"""

from __future__ import annotations

from torch import nn

from ..errors import ArgumentError, CheckpointError
from ..units import ResidualUnit, resolve_units
from ..units import find_units
from .hf import HF_SUBLAYERS_KEY, zero_sublayers
from .removal import remove

__all__ = ["load", "from_pretrained"]


def load(path, model: nn.Module, map_location="cpu") -> nn.Module:
    """A pruned model saved by ``unravel prune`` (or :func:`unravel.train.save` with
    ``meta={"removed": [unit names]}``): ``model`` is the unpruned architecture (its weights do
    not matter); the units named in the checkpoint are removed from it and the weights loaded.

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint, names no removed units, or does not fit.

    Examples
    --------
    >>> import os, tempfile, unravel
    >>> net = unravel.models.resmlp(4, 2, width=8, depth=3)
    >>> small = unravel.prune.remove(net, [1])
    >>> path = unravel.train.save(small, os.path.join(tempfile.mkdtemp(), "p.pt"), {"removed": ["blocks.1"]})
    >>> back = unravel.prune.load(path, unravel.models.resmlp(4, 2, width=8, depth=3))
    >>> len(unravel.find_units(back))
    2
    """
    from .. import train

    ckpt = train.load(path, map_location=map_location)
    removed = (ckpt.get("meta") or {}).get("removed")
    if not isinstance(removed, (list, tuple)):
        raise CheckpointError(f"{str(path)!r} is not a pruned checkpoint: its meta has no 'removed' list of unit names.")
    try:
        pruned = remove(model, list(removed))
    except ArgumentError as e:
        raise CheckpointError(f"{str(path)!r} removes units that {type(model).__name__} does not have: {e}") from None
    try:
        pruned.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {type(model).__name__} without "
                              f"{', '.join(removed)}: {str(e).splitlines()[0]}") from None
    return pruned


def from_pretrained(path, model_class=None, **kwargs) -> nn.Module:
    """Load a pruned ``transformers`` model saved with ``save_pretrained``.

    A model whose removals dropped whole layers loads with ``transformers``' own
    ``from_pretrained``; one with removed sublayers (listed in its config under
    ``unravel_removed_sublayers``) loads here: the model is built and its sublayers replaced by
    :class:`ZeroBranch` before the weights are loaded.

    Parameters
    ----------
    path : str or Path
        A folder written by ``save_pretrained``.
    model_class : type, optional
        The ``transformers`` class to load with; default the config's first architecture.
    **kwargs
        Passed on to ``from_pretrained``.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    if model_class is None:
        archs = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, archs[0], None) if archs else None
        if model_class is None:
            raise ArgumentError(f"{str(path)!r}: the config names no architecture; pass model_class=...")
    names = list(getattr(config, HF_SUBLAYERS_KEY, None) or [])
    if not names:
        return model_class.from_pretrained(path, **kwargs)
    # the removed sublayers' weights are missing: transformers initialises them, then they go
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = model_class.from_pretrained(path, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    units = resolve_units(find_units(model), names)
    hosts: dict[nn.Module, list[ResidualUnit]] = {}
    for u in units:
        hosts.setdefault(u.module, []).append(u)
    for block, us in hosts.items():
        zero_sublayers(block, [u.position for u in us], [u.name for u in us])
    return model.eval()
