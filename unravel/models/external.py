"""Models nobody registered, named by a string: ``torchvision:NAME``, ``timm:NAME``,
``hf:CONFIG_OR_DIR`` and ``package.module:factory``. Each becomes a registry entry on the fly,
so the CLI (``--model``) and study specs take them like the reference models.

Nothing is downloaded unless asked: torchvision and timm models are built without weights
(``weights=None``, ``pretrained=False``) unless the builder is given ``pretrained=True`` (the
library's default weights, from its cache or its download); ``hf:`` reads a local ``config.json`` (a file, or a folder that may also
hold weights) with ``local_files_only``. It does not check that a model suits the data beyond the
sizes it fills in.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ArgumentError
from .entry import ModelEntry

__all__ = ["external_entry", "PREFIXES"]

#: The prefixes of model strings, and what follows the colon.
PREFIXES = {"torchvision": "a torchvision.models builder (resnet18, vit_b_16, ...)",
            "timm": "a timm model name (resnet18, convnext_atto, ...)",
            "hf": "a local Hugging Face config.json, or a folder holding one (and optionally weights)"}


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ArgumentError(f"{module} is not installed: pip install 'unravel[{extra}]'.") from None


def _torchvision(name: str):
    tvm = _require("torchvision.models", "vision")
    if not name or not callable(getattr(tvm, name, None)) or name.startswith("_"):
        raise ArgumentError(f"torchvision:{name}: no such builder in torchvision.models (e.g. resnet18, vit_b_16).")
    builder = getattr(tvm, name)

    def build(pretrained=False, **kw):  # pretrained: the builder's default weights, from torch's local cache
        return builder(weights="DEFAULT" if pretrained else None, **kw)

    return build, lambda shape: {}


def _timm(name: str):
    timm = _require("timm", "timm")
    if not timm.is_model(name):
        raise ArgumentError(f"timm:{name}: timm has no such model (see timm.list_models()).")

    def build(pretrained=False, **kw):
        return timm.create_model(name, pretrained=pretrained, **kw)

    return build, lambda shape: {"in_chans": shape[0]}


def _hf(where: str):
    transformers = _require("transformers", "hf")
    path = Path(where).expanduser()
    folder = path if path.is_dir() else path.parent
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ArgumentError(f"hf:{where}: no config.json there; give a local config file or a folder holding one "
                            "(nothing is downloaded).")
    config = transformers.AutoConfig.from_pretrained(str(config_file), local_files_only=True)
    archs = list(getattr(config, "architectures", None) or [])
    causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs) or not archs
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSequenceClassification
    has_weights = path.is_dir() and any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))

    def build(**kw):
        if "num_classes" in kw and not causal:
            kw["num_labels"] = kw.pop("num_classes")
        kw.pop("num_classes", None)  # a language model's classes are its vocabulary
        if has_weights:
            return auto.from_pretrained(str(folder), local_files_only=True, **kw)
        for k, v in kw.items():
            setattr(config, k, v)
        return auto.from_config(config)

    return build, lambda shape: {}


def _factory(spec: str):
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ArgumentError(f"{spec}: cannot import {module!r} ({e}).") from None
    builder = getattr(mod, attr, None)
    if not callable(builder):
        raise ArgumentError(f"{spec}: {module!r} has no callable {attr!r}.")
    return builder, lambda shape: {}


def external_entry(spec: str):
    """A :class:`~unravel.models.registry.ModelEntry` for a model string, or None when ``spec``
    holds no colon (a registered name).

    Examples
    --------
    >>> entry = external_entry("torchvision:resnet18")
    >>> net = entry.builder(num_classes=3)
    >>> net.fc.out_features
    3
    >>> external_entry("resnet_cifar") is None
    True
    """
    if not isinstance(spec, str) or ":" not in spec:
        return None
    prefix, _, rest = spec.partition(":")
    if prefix == "torchvision":
        builder, sizing = _torchvision(rest)
    elif prefix == "timm":
        builder, sizing = _timm(rest)
    elif prefix == "hf":
        builder, sizing = _hf(rest)
    elif "." in prefix or prefix.isidentifier():
        builder, sizing = _factory(spec)
    else:
        raise ArgumentError(f"model {spec!r}: expected torchvision:NAME, timm:NAME, hf:CONFIG_OR_DIR or "
                            "package.module:factory.")
    return ModelEntry(spec, builder, sizing, depth=None, width=None)


