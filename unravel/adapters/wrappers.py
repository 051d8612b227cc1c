"""Models other libraries wrap: accelerate's device hooks (``device_map``, CPU and disk offload)
and nnsight's wrapper (``nnsight.NNsight(model)``). Both take a module's *instance* ``forward``
and call the class's own forward inside it; unravel routes a block by swapping its class, so
while an intervention runs it makes the wrapper call the routed forward instead
(:func:`rebind_body`), and puts the wrapper's own back on exit. A forward replaced by anything
else is an override, which no class adapter describes (refused as before). It does not check
what a hook does to the tensors (accelerate's move them between devices and bring offloaded
weights in and out, which is what a forward of the model itself would do).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["as_module", "wrapper_of", "rebind_body"]

_NNSIGHT_STATE = "__nnsight__"  # nnsight.intervention.source.STATE: the module's controller state


def as_module(model: Any) -> Any:
    """The ``torch.nn.Module`` inside a wrapper that is not one (an ``nnsight.NNsight`` or
    ``LanguageModel`` envoy), or ``model`` unchanged.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> as_module(net) is net
    True
    """
    if isinstance(model, nn.Module):
        return model
    inner = getattr(type(model), "__mro__", ())
    if any(c.__module__.startswith("nnsight.") for c in inner):
        module = model.__dict__.get("_module")
        if isinstance(module, nn.Module):
            return module
    return model


def wrapper_of(module: nn.Module, cls: type | None = None) -> str | None:
    """``"accelerate"`` or ``"nnsight"`` when the module's instance ``forward`` is that library's
    wrapper around ``cls.forward`` (default: the module's class), else None.

    Examples
    --------
    >>> import torch
    >>> wrapper_of(torch.nn.Linear(2, 2)) is None
    True
    """
    d = module.__dict__
    if "forward" not in d:
        return None
    own = getattr(cls or type(module), "forward", None)
    state = d.get(_NNSIGHT_STATE)
    fwd = d["forward"]
    if state is not None and type(fwd).__module__.startswith("nnsight.") and type(fwd).__name__ == "Controller":
        return "nnsight" if getattr(state, "body", None) is own else None
    old = d.get("_old_forward")
    if "_hf_hook" in d and old is not None and getattr(getattr(fwd, "func", None), "__name__", "") == "new_forward":
        if getattr(old, "__self__", None) is module and getattr(old, "__func__", None) is own:
            return "accelerate"
    return None


def rebind_body(module: nn.Module, forward, cls: type):
    """Make the wrapper around ``module`` (see :func:`wrapper_of`; ``cls`` the module's own
    class) run ``forward`` (an unbound function) where it ran ``cls.forward``. Returns a function
    that puts the wrapper's own state back (the same objects); for an unwrapped module it does
    nothing.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> restore = rebind_body(net, torch.nn.Linear.forward, torch.nn.Linear)
    >>> restore()
    """
    kind = wrapper_of(module, cls)
    if kind == "nnsight":
        state = module.__dict__[_NNSIGHT_STATE]
        saved = state.body
        state.body = forward

        def restore():
            state.body = saved

        return restore
    if kind == "accelerate":
        saved = module.__dict__["_old_forward"]
        module.__dict__["_old_forward"] = forward.__get__(module)

        def restore():
            module.__dict__["_old_forward"] = saved

        return restore
    return lambda: None
