"""The model registry: reference models by name, built to fit a dataset's inputs and classes.

One table read by the command line (``--model``) and by study specs (``models.<role>.name``). It
checks a model's name and keyword arguments before building; it does not check that a model
suits its data beyond the sizes it fills in.
"""

from __future__ import annotations

import inspect
import os
import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from ..errors import ArgumentError, UnravelError
from .entry import ModelEntry
from .external import external_entry

__all__ = ["ModelEntry", "SIZINGS", "BUILDERS", "register_model", "model_entry", "model_names", "model_arguments",
           "check_model_arguments", "build_model"]


def conv_sizing(input_shape: tuple) -> dict:
    """Convolutional nets: ``in_channels`` and ``dims`` (1 for sequences, 2 for images)."""
    return {"in_channels": input_shape[0], "dims": len(input_shape) - 1}


def flat_sizing(input_shape: tuple) -> dict:
    """Nets that flatten their input: ``in_features``."""
    return {"in_features": int(math.prod(input_shape))}


def channel_sizing(input_shape: tuple) -> dict:
    """Nets of one input dimensionality: ``in_channels`` only."""
    return {"in_channels": input_shape[0]}


#: Named sizing rules: input shape (channels first, no batch) -> keyword arguments.
SIZINGS: dict[str, Callable[[tuple], dict]] = {"conv": conv_sizing, "flat": flat_sizing, "channels": channel_sizing}


_REGISTRY: dict[str, ModelEntry] = {}


class _Builders(Mapping):
    """A read-only view: model name -> builder, in registration order."""

    def __getitem__(self, name: str) -> Callable[..., nn.Module]:
        return _REGISTRY[name].builder

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"BUILDERS({', '.join(_REGISTRY)})"


#: Model builders by name: a live, read-only view of the registry.
BUILDERS: Mapping[str, Callable[..., nn.Module]] = _Builders()


def register_model(name: str, builder: Callable[..., nn.Module], *, sizing="conv", depth: int | None = None,
                   width: str | None = "width", replace: bool = False) -> ModelEntry:
    """Make ``builder`` available by ``name`` to :func:`build_model`, study specs and the CLI.

    Parameters
    ----------
    name : str
    builder : callable
        Keyword arguments in, ``nn.Module`` out.
    sizing : {"conv", "flat", "channels"} or callable
        How the input shape becomes keyword arguments (see :data:`SIZINGS`), or a function
        ``input_shape -> dict``.
    depth : int, optional
        Depth the command line uses when ``--depth`` is not given.
    width : str or None
        The keyword that ``--width`` sets.
    replace : bool
        Allow replacing a registered name.

    Returns
    -------
    ModelEntry

    Raises
    ------
    ArgumentError
        If ``name`` is taken (and not ``replace``), or ``sizing`` is unknown.

    Examples
    --------
    >>> import unravel
    >>> from unravel.models import registry
    >>> entry = registry.register_model("tiny_mlp", unravel.models.resmlp, sizing="flat", replace=True)
    >>> net = registry.build_model("tiny_mlp", unravel.data.synthetic(40), width=8, depth=2)
    >>> len(unravel.find_units(net))
    2
    """
    if not isinstance(name, str) or not name:
        raise ArgumentError(f"a model name must be a non-empty string; got {name!r}.")
    if name in _REGISTRY and not replace:
        raise ArgumentError(f"a model named {name!r} is registered already; pass replace=True to replace it.")
    if not callable(builder):
        raise ArgumentError(f"builder of model {name!r} must be callable; got {builder!r}.")
    if isinstance(sizing, str):
        if sizing not in SIZINGS:
            raise ArgumentError(f"sizing={sizing!r} is not allowed; choose one of {', '.join(SIZINGS)} or pass "
                                "a function input_shape -> dict.")
        sizing = SIZINGS[sizing]
    entry = ModelEntry(name, builder, sizing, depth, width)
    _REGISTRY[name] = entry
    return entry


def model_names() -> tuple[str, ...]:
    """The registered model names, in registration order.

    Examples
    --------
    >>> from unravel.models import registry
    >>> registry.model_names()[:2]
    ('resnet_cifar', 'preact_resnet_cifar')
    """
    return tuple(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name``; an :class:`~unravel.errors.ArgumentError` listing the
    registered names if there is none.

    Examples
    --------
    >>> from unravel.models import registry
    >>> registry.model_entry("densenet_bc").width
    'growth'
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    entry = external_entry(name)
    if entry is None:
        raise ArgumentError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}, or torchvision:NAME, "
                            "timm:NAME, hf:CONFIG_OR_DIR, package.module:factory.")
    return entry


def model_arguments(name: str) -> tuple[str, ...] | None:
    """The keyword arguments model ``name`` takes (None if its builder takes any ``**kwargs``).

    Examples
    --------
    >>> from unravel.models import registry
    >>> registry.model_arguments("resmlp")
    ('in_features', 'num_classes', 'width', 'depth')
    """
    params = inspect.signature(model_entry(name).builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_model_arguments(name: str, kwargs: Mapping, *, complete: bool = True) -> None:
    """Raise :class:`~unravel.errors.ArgumentError` if model ``name`` takes no argument of
    ``kwargs``, or (``complete``) lacks one it needs.

    Examples
    --------
    >>> from unravel.models import registry
    >>> registry.check_model_arguments("resnet_cifar", {"depth": 20, "widht": 8})
    Traceback (most recent call last):
    ...
    unravel.errors.ArgumentError: model 'resnet_cifar' takes no argument 'widht'; its arguments: depth, width, \
num_classes, in_channels, shortcut, dims.
    """
    allowed = model_arguments(name)
    if allowed is not None:
        for key in kwargs:
            if key not in allowed:
                raise ArgumentError(f"model {name!r} takes no argument {key!r}; its arguments: {', '.join(allowed)}.")
    if complete:
        params = inspect.signature(model_entry(name).builder).parameters.values()
        missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if missing:
            raise ArgumentError(f"model {name!r} needs argument {', '.join(repr(m) for m in missing)}.")


def build_model(name: str, data_or_shape=None, **kwargs) -> nn.Module:
    """Build the registered model ``name``, sized for ``data_or_shape``.

    Parameters
    ----------
    name : str
        One of :func:`model_names`, or a model string: ``torchvision:NAME``, ``timm:NAME``,
        ``hf:CONFIG_OR_DIR`` (a local config) or ``package.module:factory`` (see
        :mod:`unravel.models.external`).
    data_or_shape : DataSplit or tuple of int, optional
        A dataset (its ``input_shape`` and ``num_classes`` are used) or one input's shape,
        channels first. The sizes it gives are defaults: ``kwargs`` override them.
    **kwargs
        The builder's keyword arguments (``depth``, ``width``, ...).

    Returns
    -------
    nn.Module

    Raises
    ------
    ArgumentError
        If ``name`` is not registered, an argument is unknown or missing, or the builder refuses
        a value (the builder's error, its message prefixed with the model's name).

    Examples
    --------
    >>> import unravel
    >>> from unravel.models import build_model
    >>> net = build_model("resnet_cifar", unravel.data.mnist1d(200), depth=8, width=4)
    >>> net.fc.out_features, len(unravel.find_units(net))
    (10, 3)
    >>> build_model("resmlp", (3, 4), num_classes=2).stem.in_features
    12
    """
    entry = model_entry(name)
    sized: dict = {}
    if data_or_shape is not None:
        shape = getattr(data_or_shape, "input_shape", data_or_shape)
        sized = dict(entry.sizing(tuple(shape)))
        if hasattr(data_or_shape, "num_classes"):
            sized["num_classes"] = data_or_shape.num_classes
    kwargs = {**sized, **kwargs}
    check_model_arguments(name, kwargs)
    _check_size(name, entry, kwargs)
    try:
        return entry.builder(**kwargs)
    except UnravelError as e:  # a value the builder refuses: say which model refused it
        raise type(e)(f"model {name!r}: {e}") from e
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, MemoryError) or "alloc" in str(e).lower() or "memory" in str(e).lower():
            raise ArgumentError(f"model {name!r} with {kwargs} does not fit in this machine's memory "
                                f"({type(e).__name__}); give a smaller depth or width.") from None
        raise


#: The largest depth or width a registered model is built with.
MAX_SIZE = 10**5


def _check_size(name: str, entry, kwargs: Mapping) -> None:
    """Refuse a depth or width beyond :data:`MAX_SIZE`, or a model whose parameters (counted on the
    meta device, where nothing is allocated) would not fit in memory, before building it."""
    for key in ("depth", entry.width):
        value = kwargs.get(key) if key else None
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SIZE:
            raise ArgumentError(f"model {name!r}: {key}={value} is beyond {MAX_SIZE:,}; give a smaller {key}.")
    if not any(key and key in kwargs for key in ("depth", entry.width)) or kwargs.get("pretrained"):
        return  # only a chosen depth or width makes a model too large; pretrained weights are read once, not twice
    try:
        with torch.device("meta"):
            numel = sum(t.numel() * t.element_size() for t in entry.builder(**kwargs).state_dict().values())
    except Exception:  # the builder refuses the values, or cannot build on meta: building says why
        return
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if numel > memory:
        raise ArgumentError(f"model {name!r} with {dict(kwargs)} would need {numel / 2**30:,.1f} GiB for its weights; "
                            f"this machine has {memory / 2**30:,.1f} GiB. Give a smaller depth or width.")
