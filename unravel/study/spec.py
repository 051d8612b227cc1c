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
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import data as data_mod, train as train_mod
from ..errors import ArgumentError, SpecError, UnravelError
from ..models import registry
from ._schema import bad, choice, integer, join, keys, list_of, number, optional, section, setting, text
from .kinds import KINDS, kind_names

__all__ = ["SpecError", "StudySpec", "DataSpec", "ModelSpec", "TrainSpec", "VeitLesionAnalysis",
           "VeitPathsAnalysis", "SsfDynamicsAnalysis", "NormPreservationAnalysis", "QuickstartAnalysis",
           "TOP_KEYS", "TRAIN_KEYS", "STUDY_DIRS", "list_studies", "load_spec", "parse_spec", "validate_spec",
           "apply_quick"]

TOP_KEYS = ("name", "kind", "title", "description", "data", "data_root", "data_options", "models", "train",
            "analysis", "quick", "seed", "seeds")
#: Where named studies' specs are looked for: the specs shipped inside the package first (found
#: through :mod:`importlib.resources`, so also in a wheel); append a folder to add your own.
STUDY_DIRS: list = [resources.files(__package__) / "specs"]

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
        except (UnravelError, OSError) as e:  # bad options, missing or unreadable files
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
class VeitLesionAnalysis:
    """``analysis:`` of a ``veit-lesion`` study: the k values and draws per k of Fig. 5."""

    ks: tuple = setting((1, 2, 4, 6, 8), list_of(integer(1), "positive integers"))
    samples_per_k: int = setting(5, integer(1))
    #: The claims about deep nets (single deletions near the baseline, smooth growth) are
    #: inconclusive for a residual net of fewer units: Veit et al. make them at 54.
    min_units: int = setting(27, integer(0))
    #: Bootstrap resamples behind each claim's confidence interval.
    n_boot: int = setting(1000, integer(10))


@dataclass(frozen=True)
class VeitPathsAnalysis:
    """``analysis:`` of a ``veit-paths`` study: probe batch, sampled paths, effective-path mass."""

    probe_size: int = setting(128, integer(1))
    num_samples: int = setting(100, integer(1))
    paths_per_pass: int = setting(64, integer(1))
    #: Examples the sampling estimator runs on (its cost grows with examples x sampled paths).
    sample_probe: int = setting(32, integer(1))
    mass: float = setting(0.9, number(0, 1, open_low=True))
    #: Depths of the residual model trained besides its own, for the depth sweep (does the
    #: window of effective paths stay put as n grows?); empty: no sweep.
    depths: tuple = setting((), list_of(integer(1), "depths"))
    #: The mean gradient path length and the share of paths carrying the gradient are
    #: inconclusive for fewer units: Veit et al. make these claims at n = 54, and with few units
    #: any window of a few lengths holds a large share of all 2**n paths.
    min_units: int = setting(27, integer(0))
    n_boot: int = setting(1000, integer(10))


@dataclass(frozen=True)
class SsfDynamicsAnalysis:
    """``analysis:`` of an ``ssf-dynamics`` study: the probe, the record steps, the random
    subnetworks and the shallow nets trained alone."""

    #: Training examples in the probe batch the histograms are recorded on, in train mode (its
    #: batch statistics, as training sees them): best the training batch size.
    probe_size: int = setting(64, integer(1))
    #: Ratio between record steps in the first epoch (``log_spaced_steps``): 2 records after
    #: steps 1, 2, 4, 8, ...; then after every epoch.
    log_base: float = setting(2.0, number(1, open_low=True))
    #: Units kept by the ResNet's random subnetworks, as fractions of its units (1: the whole net).
    subnetwork_fractions: tuple = setting((0.25, 0.5, 0.75, 1.0),
                                           list_of(number(0, 1, open_low=True), "fractions in (0, 1]"))
    subnetwork_samples: int = setting(3, integer(1))
    #: Training examples the subnetworks' BatchNorm statistics are recalibrated on.
    calibration_examples: int = setting(1024, integer(1))
    #: Test examples every error is measured on.
    eval_examples: int = setting(1000, integer(1))
    #: Depths of the ResNet trained alone beside the spec's (the shallow nets); empty: none.
    shallow_depths: tuple = setting((8, 14), list_of(integer(1), "depths"))
    n_boot: int = setting(1000, integer(10))


@dataclass(frozen=True)
class NormPreservationAnalysis:
    """``analysis:`` of a ``norm-preservation`` study: depths, probe examples, which units are
    tracked over training, the band around 1."""

    #: Depths of the residual and the plain net (each trained once per seed).
    depths: tuple = setting((20, 56, 110), list_of(integer(1), "depths 6n + 2"))
    #: Depths of the Procrustes net (the ``procrustes`` role), if the spec gives one.
    procrustes_depths: tuple = setting((110,), list_of(integer(1), "depths 6n + 2"))
    #: Test examples at which every unit's spectrum is measured after training.
    probe_size: int = setting(4, integer(1))
    #: Units per net measured when training begins and after every epoch: every transition unit
    #: and evenly spaced identity units; 0 measures all.
    track_units: int = setting(8, integer(0))
    #: Test examples (the first of the probe) at which the tracked units are measured.
    track_probe: int = setting(1, integer(1))
    #: Training examples that set the BatchNorm statistics before each measurement.
    calibration_size: int = setting(512, integer(1))
    #: Half-width of the band |log sigma| <= band around 1: the margin of the "near 1" claims.
    band: float = setting(0.1, number(0, open_low=True))
    #: Rounds of clip-and-restrict per projection of the Procrustes net's transitions.
    procrustes_iterations: int = setting(1, integer(1))
    n_boot: int = setting(1000, integer(10))


#: The studies a quickstart runs, in this order, and the fields each may set.
QUICKSTART_STUDIES = ("veit-lesion", "veit-paths", "norm-preservation", "ssf-dynamics")
SUBSTUDY_KEYS = ("data", "data_root", "data_options", "models", "train", "analysis")


@dataclass(frozen=True)
class QuickstartAnalysis:
    """``analysis:`` of a ``quickstart`` study: one sub-spec per study it runs, which inherits
    the quickstart's data and training fields."""

    studies: Mapping = field(default_factory=dict)

    @classmethod
    def from_spec(cls, value, path: str, spec: Mapping) -> QuickstartAnalysis:
        value = keys(value, path, QUICKSTART_STUDIES)
        inherited = {k: spec[k] for k in ("data", "data_root", "data_options", "train", "seed", "seeds")
                     if spec.get(k) is not None}
        studies = {}
        for kind in QUICKSTART_STUDIES:
            if kind in value:
                sub = _merge(inherited, keys(value[kind], join(path, kind), SUBSTUDY_KEYS))
                studies[kind] = parse_spec({**sub, "name": kind, "kind": kind}, join(path, kind))
        return cls(studies)


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
    kind = choice(kind_names)(join(path, "kind"), spec.get("kind"))
    entry = KINDS[kind]
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
    return StudySpec(texts["name"] or kind, kind, data, models, train, analysis, seeds, texts["title"],
                     texts["description"])


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
        keys(spec["quick"], "quick", [k for k in TOP_KEYS if k not in ("name", "kind", "quick")])


def _merge(base: Mapping, over: Mapping | None) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
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
    return _merge(spec, quick)


def list_studies() -> dict:
    """The named studies shipped with unravel (and in any folder added to :data:`STUDY_DIRS`):
    name -> spec file.

    Examples
    --------
    >>> from unravel.study import list_studies
    >>> sorted(list_studies())
    ['lm-ensemble', 'lm-ensemble-gpu', 'norm-preservation', 'quickstart', 'ssf-dynamics', 'veit-lesion', 'veit-lesion-mnist', 'veit-paths']
    """
    found: dict = {}
    for folder in STUDY_DIRS:
        folder = folder if hasattr(folder, "iterdir") else Path(folder)
        if folder.is_dir():
            for p in sorted(folder.iterdir(), key=lambda p: p.name):
                if p.name.endswith(".yaml") and p.is_file():
                    found.setdefault(p.name[:-len(".yaml")], p)
    return found


def load_spec(name_or_file, quick: bool = False) -> dict:
    """Read and check a spec, by study name (:func:`list_studies`) or YAML path; with ``quick``
    its ``quick:`` overrides are applied.

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
        if not path.suffix:
            studies = list_studies()
            if str(name_or_file) not in studies:
                raise SpecError(f"unknown study {str(name_or_file)!r}; available: {', '.join(studies) or 'none found'}"
                                " (or give a path to a YAML spec)")
            path = studies[str(name_or_file)]
    else:
        path = name_or_file  # a spec file found through importlib.resources
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
    if quick:
        spec = apply_quick(spec)
    validate_spec(spec)
    return spec
