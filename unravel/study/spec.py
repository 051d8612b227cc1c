"""Study specs: the YAML a study runs from, read into checked dataclasses.

Every level refuses keys it does not know and every named choice (kind, data, model, optimizer,
schedule) is checked, with a :class:`SpecError` naming the key path and what is allowed. It does
not check that a study is large enough for its verdicts to be evidence.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .. import data as data_mod, train as train_mod
from ..errors import ArgumentError, SpecError, UnravelError
from ..models import registry
from .schema import bad, choice, integer, join, keys, list_of, number, optional, section, setting, text
from .folders import list_studies, load_study
from .kinds import get_kind
from .prereg import check_correction, parse_claims

__all__ = ["SpecError", "StudySpec", "DataSpec", "ModelSpec", "TrainSpec",
           "TOP_KEYS", "TRAIN_KEYS", "load_spec", "parse_spec", "validate_spec",
           "apply_quick", "merge"]

TOP_KEYS = ("name", "kind", "title", "description", "data", "data_root", "data_options", "models", "train",
            "analysis", "quick", "seed", "seeds", "claims", "correction")


# ------------------------------------------------------------------------------------------
# The sections of a spec


@dataclass(frozen=True)
class TrainSpec:
    """``train:`` how every model of a study is trained (see :func:`unravel.train.fit`)."""

    epochs: int = setting(5, integer(1))
    optimizer: str = setting("adam", choice(lambda: train_mod.OPTIMIZERS))
    lr: float | None = setting(None, optional(number(0, open_low=True)))
    batch_size: int = setting(128, integer(1))
    #: None: 5e-4 for SGD, 0 for Adam (see :attr:`decay`).
    weight_decay: float | None = setting(None, optional(number(0)))
    schedule: str = setting("cosine", choice(lambda: train_mod.SCHEDULES))

    @property
    def decay(self) -> float:
        """The weight decay used: ``weight_decay``, else 5e-4 for SGD and 0 for Adam."""
        return float(self.weight_decay if self.weight_decay is not None else
                     5e-4 if self.optimizer == "sgd" else 0.0)


TRAIN_KEYS = tuple(f.name for f in fields(TrainSpec))


@dataclass(frozen=True)
class DataSpec:
    """``data``, ``data_root`` and ``data_options``: a dataset of :data:`unravel.data.DATASETS`."""

    name: str = "mnist1d"
    root: str | None = None
    options: Mapping = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: Mapping, path: str = "") -> DataSpec:
        """Read the data fields of the spec (or sub-spec at ``path``) ``spec``."""
        name = choice(lambda: data_mod.DATASETS)(join(path, "data"), spec.get("data", "mnist1d"))
        root = spec.get("data_root")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            bad(join(path, "data_root"), root, "a folder")
        if name in data_mod.ROOTED and not root:
            raise SpecError(f"spec field {join(path, 'data_root')!r} is required for data {name!r}: the folder of "
                            "its local files")
        params = inspect.signature(data_mod.DATASETS[name]).parameters
        if root is not None and name not in data_mod.ROOTED and "root" not in params:
            raise SpecError(f"spec field {join(path, 'data_root')!r} does not apply to data {name!r}: it is made "
                            "here, not read from a folder")
        options = keys(spec.get("data_options"), join(path, "data_options"), [p for p in params if p != "root"])
        return cls(name, None if root is None else str(root), dict(options))

    def load(self) -> data_mod.DataSplit:
        """Load the dataset; a loader's complaint (a missing file, a bad option) becomes an
        :class:`~unravel.errors.ArgumentError` that names the data."""
        loader = data_mod.DATASETS[self.name]
        try:
            if self.name in data_mod.ROOTED:
                return loader(self.root, **self.options)
            # a dataset with a default folder (stdlib: this Python's standard library) reads another one
            return loader(**self.options) if self.root is None else loader(root=self.root, **self.options)
        except (UnravelError, OSError, TypeError, ValueError) as e:  # bad options, missing or unreadable files
            raise ArgumentError(f"data {self.name!r}: {str(e).splitlines()[0]}") from e


@dataclass(frozen=True)
class ModelSpec:
    """``models.<role>``: a registered model's ``name`` and its builder's keyword arguments."""

    name: str
    options: Mapping = field(default_factory=dict)
    path: str = field(default="model", compare=False)

    @classmethod
    def from_spec(cls, value, path: str) -> ModelSpec:
        if not isinstance(value, Mapping):
            raise SpecError(f"spec field {path!r} must be a mapping {{name: MODEL, ...its arguments}}; got {value!r}; "
                            f"models: {', '.join(registry.model_names())}")
        name = choice(registry.model_names)(join(path, "name"), value.get("name"))
        allowed = registry.model_arguments(name)
        if allowed is not None:
            keys(value, path, ("name", *allowed))
        return cls(name, {k: v for k, v in value.items() if k != "name"}, path)

    def build(self, data, **overrides):
        """The model, sized for ``data`` (see :func:`unravel.models.build_model`)."""
        try:
            return registry.build_model(self.name, data, **{**self.options, **overrides})
        except ArgumentError as e:
            raise SpecError(f"spec field {self.path!r}: {e}") from e


@dataclass(frozen=True)
class StudySpec:
    """A whole spec, checked: what :func:`~unravel.study.run_study` runs."""

    name: str
    kind: str
    data: DataSpec
    models: Mapping[str, ModelSpec]
    train: TrainSpec
    analysis: Any
    #: The training seeds: each model is trained once per seed, and every claim pools them.
    seeds: tuple = (0,)
    title: str | None = None
    description: str | None = None
    #: The pre-registered claim definitions, by id (see :mod:`~unravel.study.prereg`).
    claims: Mapping = field(default_factory=dict)
    #: The multiple-testing correction of the study's verdicts: ``holm`` or ``none``.
    correction: str = "holm"


# ------------------------------------------------------------------------------------------
# Reading specs


def parse_spec(spec: Mapping, path: str = "") -> StudySpec:
    """Check the spec dict ``spec`` and return it as a :class:`StudySpec`.

    Raises
    ------
    SpecError
        At the first unknown key or value not allowed; the message names its path (such as
        ``train.epoch``) and what is allowed.

    Examples
    --------
    >>> from unravel.study import parse_spec
    >>> spec = parse_spec({"name": "s", "kind": "veit-paths", "models": {"residual": {"name": "resmlp"}},
    ...                    "train": {"epochs": 2}})
    >>> spec.train.epochs, spec.train.optimizer, spec.analysis.probe_size
    (2, 'adam', 128)
    >>> parse_spec({"kind": "veit-paths", "train": {"epoch": 2}})
    Traceback (most recent call last):
    ...
    unravel.errors.SpecError: spec field 'train.epoch' is unknown; allowed fields: epochs, optimizer, lr, \
batch_size, weight_decay, schedule
    """
    keys(spec, path, TOP_KEYS)
    kind = spec.get("kind")
    entry = get_kind(kind, join(path, "kind"))
    data = DataSpec.from_spec(spec, path)
    train = section(TrainSpec, spec.get("train"), join(path, "train"))
    mpath = join(path, "models")
    given = keys(spec.get("models"), mpath, entry.roles + entry.optional_roles)
    missing = [r for r in entry.roles if r not in given]
    if missing:
        raise SpecError(f"spec field {mpath!r} lacks {', '.join(missing)}; study kind {kind!r} needs models named "
                        f"{', '.join(entry.roles)}")
    models = {role: ModelSpec.from_spec(m, join(mpath, role)) for role, m in given.items()}
    apath = join(path, "analysis")
    if entry.analysis is None:
        keys(spec.get("analysis"), apath, ())
        analysis = None
    elif hasattr(entry.analysis, "from_spec"):
        analysis = entry.analysis.from_spec(spec.get("analysis"), apath, spec)
    else:
        analysis = section(entry.analysis, spec.get("analysis"), apath)
    seeds = _seeds(spec, path)
    texts = {k: optional(text)(join(path, k), spec.get(k)) for k in ("name", "title", "description")}
    if texts["name"] is not None:
        study_name(texts["name"], join(path, "name"))
    return StudySpec(texts["name"] or kind, kind, data, models, train, analysis, seeds, texts["title"],
                     texts["description"], parse_claims(spec.get("claims"), join(path, "claims")),
                     check_correction(spec, path))


def study_name(name: str, path: str = "name") -> str:
    """``name`` if it is one path component (the results go to ``OUT/name/STAMP``): not empty, not
    ``.`` or ``..``, without ``/``, ``\\`` or a NUL byte; else a SpecError.

    Examples
    --------
    >>> from unravel.study.spec import study_name
    >>> study_name("veit-lesion")
    'veit-lesion'
    >>> study_name("../x")
    Traceback (most recent call last):
    ...
    unravel.errors.SpecError: spec field 'name' is '../x'; a study name is one folder name ...
    """
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0") \
            or Path(name).is_absolute() or Path(name).name != name:
        raise SpecError(f"spec field {path!r} is {name!r}; a study name is one folder name (no '/', '\\', '..' or "
                        "absolute path): the results are written to OUT/NAME/STAMP.")
    return name


def _seeds(spec: Mapping, path: str = "") -> tuple:
    """``seeds`` (a list of distinct non-negative integers) or ``seed`` (one), not both."""
    if spec.get("seed") is not None and spec.get("seeds") is not None:
        raise SpecError(f"spec fields {join(path, 'seed')!r} and {join(path, 'seeds')!r} are both given; give one "
                        "(seeds: a list of training seeds)")
    if spec.get("seeds") is None:
        return (integer(0)(join(path, "seed"), spec.get("seed", 0)),)
    seeds = list_of(integer(0), "non-negative integers")(join(path, "seeds"), spec["seeds"])
    if not seeds or len(set(seeds)) != len(seeds):
        bad(join(path, "seeds"), spec["seeds"], "a non-empty list of distinct non-negative integers")
    return tuple(seeds)


def validate_spec(spec: Mapping) -> None:
    """Raise :class:`SpecError` naming the first invalid field and what is allowed. The fields
    that ``quick`` overrides must be spec fields; the overrides' values are checked when they
    are applied (``load_spec(..., quick=True)``), since they may suit only the spec's own data.

    Examples
    --------
    >>> from unravel.study import validate_spec
    >>> validate_spec({"kind": "veit-paths", "models": {"residual": {"name": "vgg"}}})
    Traceback (most recent call last):
    ...
    unravel.errors.SpecError: spec field 'models.residual.name' is 'vgg'; allowed: resnet_cifar, ...
    """
    parse_spec(spec)
    if spec.get("quick") is not None:
        keys(spec["quick"], "quick", [k for k in TOP_KEYS if k not in ("name", "kind", "quick", "claims", "correction")])


def merge(base: Mapping, over: Mapping | None) -> dict:
    """A deep copy of ``base`` with ``over`` merged in: mappings merge key by key, anything else
    is replaced.

    Examples
    --------
    >>> from unravel.study.spec import merge
    >>> merge({"train": {"epochs": 9, "lr": 0.1}}, {"train": {"epochs": 1}})
    {'train': {'epochs': 1, 'lr': 0.1}}
    """
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def apply_quick(spec: Mapping) -> dict:
    """A copy of ``spec`` with its ``quick:`` overrides merged in (mappings merge key by key).

    Examples
    --------
    >>> from unravel.study import apply_quick
    >>> apply_quick({"train": {"epochs": 9, "lr": 0.1}, "quick": {"train": {"epochs": 1}}})["train"]
    {'epochs': 1, 'lr': 0.1}
    """
    quick = spec.get("quick")
    if quick is not None and not isinstance(quick, Mapping):
        raise SpecError(f"spec field 'quick' must be a mapping of overrides; got {quick!r}")
    return merge(spec, quick)


def load_spec(name_or_file, quick: bool = False) -> dict:
    """Read and check a spec, by study name (:func:`list_studies`), YAML path, or the path of a
    study folder that holds one spec; with ``quick`` its ``quick:`` overrides are applied. The
    code of the spec's folder, if it has any, is loaded first (:func:`load_study`).

    Raises
    ------
    SpecError
        If there is no such study or file, the file is not a YAML mapping, or a field is not
        allowed (:func:`parse_spec`).

    Examples
    --------
    >>> from unravel.study import load_spec
    >>> spec = load_spec("veit-lesion", quick=True)
    >>> spec["name"], spec["train"]["epochs"]
    ('veit-lesion', 1)
    """
    if isinstance(name_or_file, (str, os.PathLike)):
        path = Path(name_or_file)
        if not path.suffix and not path.is_dir():
            studies = list_studies()
            if str(name_or_file) not in studies:
                raise SpecError(f"unknown study {str(name_or_file)!r}; available: {', '.join(studies) or 'none found'}"
                                " (or give a path to a YAML spec or a study folder)")
            path = studies[str(name_or_file)]
    else:
        path = name_or_file  # a spec file found through importlib.resources
    if path.is_dir():
        specs = sorted(p for p in path.iterdir() if p.name.endswith(".yaml") and p.is_file())
        if len(specs) != 1:
            raise SpecError(f"study folder {str(path)!r} holds {len(specs)} YAML specs "
                            f"({', '.join(p.name for p in specs) or 'none'}); give the path of one")
        path = specs[0]
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist; give a YAML spec file or a study name "
                        f"({', '.join(list_studies())})")
    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping of fields {', '.join(TOP_KEYS)}")
    spec.setdefault("name", Path(path.name).stem)
    load_study(path.parent)  # the study's own code registers its kind
    if quick:
        spec = apply_quick(spec)
    validate_spec(spec)
    return spec
