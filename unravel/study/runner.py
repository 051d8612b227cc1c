"""Running a study: a spec in, a results folder out.

:func:`run_study` checks the whole spec first, then writes the resolved ``config.yaml`` and
``environment.json``, runs the study's kind and writes its tidy CSVs, figures, ``summary.json``
and ``report.md``. It does not check that a study's models are large or trained long enough for
its verdicts to be evidence; the report states the settings next to every verdict.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import plots, train
from ..cache import cached_training, code_hash
from .._io import check_folder, data_hash, write_text
from .._utils import check_device, check_seed
from ..errors import ArgumentError
from .environment import environment
from .folders import list_studies
from .kinds import get_kind
from .prereg import definitions, preregistration_record
from .report import report_markdown, summary_json
from .verdicts import holm
from .spec import DataSpec, ModelSpec, StudySpec, apply_quick, load_spec, parse_spec, validate_spec

__all__ = ["Context", "run_study", "load_data", "build_model", "read_items", "spec_file"]


class Context:
    """What a study kind's function works with: its checked spec, data, models and output files.

    Attributes
    ----------
    spec : StudySpec
    analysis
        ``spec.analysis``: the kind's settings.
    out : Path
        The results folder.
    device : torch.device
    seeds : tuple of int
        The training seeds; a kind trains and measures once per seed and pools them in its claims.
    progress : bool
    cache : bool
        Reuse trained models from :func:`cache_dir` (keyed by model, data, training, seed, device
        type and the source of the models, training and data code).
    figures : list of (file, caption)
    tables : list of str
        What :meth:`figure` and :meth:`frame` wrote, for the report.
    """

    def __init__(self, spec: StudySpec, out: Path, device, seeds, progress: bool, *, data=None,
                 prefix: str = "", figures=None, tables=None, cache: bool = True):
        self.spec, self.analysis, self.out, self.device = spec, spec.analysis, Path(out), device
        self.seeds, self.progress, self.prefix, self.cache = tuple(seeds), progress, prefix, cache
        self.figures: list[tuple[str, str]] = [] if figures is None else figures
        self.tables: list[str] = [] if tables is None else tables
        self._data = data

    @property
    def seed(self) -> int:
        """The first training seed."""
        return self.seeds[0]

    @property
    def data(self):
        """The spec's dataset, loaded on first use."""
        if self._data is None:
            self._data = self.spec.data.load()
        return self._data

    @functools.cached_property
    def _data_hash(self) -> str:
        """The hash of the dataset's content, computed once: every trained model's cache key holds it."""
        return data_hash(self.data)

    def _model_spec(self, role_or_spec):
        m = self.spec.models[role_or_spec] if isinstance(role_or_spec, str) else role_or_spec
        return ModelSpec.from_spec(m, "model") if isinstance(m, Mapping) else m

    def model(self, role_or_spec, seed: int | None = None, **overrides):
        """The model of a role (or a :class:`ModelSpec`), initialised from ``seed`` (default: the
        first seed), on the device."""
        m = self._model_spec(role_or_spec)
        torch.manual_seed(self.seed if seed is None else seed)
        return m.build(self.data, **overrides).to(self.device)

    def fit(self, model, callbacks=(), seed: int | None = None):
        """Train ``model`` as the spec's ``train:`` says; returns its history."""
        t = self.spec.train
        return train.fit(model, self.data, epochs=t.epochs, optimizer=t.optimizer, lr=t.lr, batch_size=t.batch_size,
                         weight_decay=t.decay, schedule=t.schedule, seed=self.seed if seed is None else seed,
                         device=self.device, callbacks=callbacks, progress=self.progress)

    def trained(self, role_or_spec, seed: int, **overrides):
        """``(model, history frame)``: the model of a role built and trained from ``seed``, or read
        from the cache when the same model, data, training, seed and code were trained before."""
        m = self._model_spec(role_or_spec)
        model = self.model(m, seed, **overrides)
        # the data's content, not only its name and folder: other files in the same folder train another model
        data = [self.spec.data.name, self.spec.data.root, dict(self.spec.data.options), self._data_hash]
        key = json.dumps({"model": m.name, "options": {**m.options, **overrides}, "data": data,
                          "train": dataclasses.asdict(self.spec.train),
                          "seed": seed, "device": self.device.type, "code": code_hash()}, sort_keys=True, default=str)
        return cached_training(key, model, lambda: self.fit(model, seed=seed).to_frame(), cache=self.cache,
                               device=self.device)

    def seed_bar(self, what: str):
        """The seeds, with a progress bar named ``what`` when there are several and progress is on."""
        from tqdm.auto import tqdm

        return tqdm(self.seeds, desc=what, unit="seed", disable=not self.progress or len(self.seeds) < 2, leave=False)

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def frame(self, name: str, df):
        """Write ``df`` as ``<name>.csv`` and return it."""
        df.to_csv(self.out / f"{self._name(name)}.csv", index=False)
        self.tables.append(f"{self._name(name)}.csv")
        return df

    def items(self, name: str, items) -> None:
        """Write per-item outcomes (rows as in the frame of the same name) as ``<name>_items.npz``:
        what the claims' confidence intervals resample. A bool array is bit-packed (see
        :func:`read_items`); any other is stored as ``values``."""
        items = np.asarray(items)
        arrays = ({"bits": np.packbits(items, axis=1), "shape": np.array(items.shape)} if items.dtype == bool
                  else {"values": items})
        np.savez_compressed(self.out / f"{self._name(name)}_items.npz", **arrays)
        self.tables.append(f"{self._name(name)}_items.npz")

    def figure(self, name: str, ax, caption: str) -> None:
        """Save the figure of ``ax`` as ``<name>.png`` and ``.svg``, captioned in the report."""
        plots.save(ax, self.out / self._name(name))
        self.figures.append((f"{self._name(name)}.png", caption))

    def probe(self, n: int | None = None):
        """The first ``n`` test examples (default: the analysis' ``probe_size``, else 128) on the device."""
        n = n or getattr(self.analysis, "probe_size", 128)
        x, y = self.data.batch(n)
        return x.to(self.device), y.to(self.device)

    def sub(self, spec: StudySpec, prefix: str) -> Context:
        """A context for a sub-study: its files prefixed ``<prefix>_``, listed in this report, and
        this study's data reused when the sub-study names the same."""
        return Context(spec, self.out, self.device, spec.seeds, self.progress, prefix=prefix,
                       data=self.data if spec.data == self.spec.data else None,
                       figures=self.figures, tables=self.tables, cache=self.cache)


def read_items(path) -> np.ndarray:
    """The bool array :meth:`Context.items` wrote.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from unravel.study.runner import read_items
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x_items.npz"
    >>> w = np.array([[True, False, True]])
    >>> np.savez_compressed(p, bits=np.packbits(w, axis=1), shape=np.array(w.shape))
    >>> read_items(p).tolist()
    [[True, False, True]]
    """
    z = np.load(path)
    rows, cols = (int(v) for v in z["shape"])
    return np.unpackbits(z["bits"], axis=1, count=cols).astype(bool).reshape(rows, cols)


def spec_file(name_or_file) -> Path | None:
    """The YAML file a study name or path names (None if there is none to find).

    Examples
    --------
    >>> from unravel.study.runner import spec_file
    >>> spec_file("veit-paths").name
    'veit-paths.yaml'
    """
    path = Path(name_or_file)
    if not path.suffix and not path.is_dir():
        return list_studies().get(str(name_or_file))
    if path.is_dir():
        specs = sorted(path.glob("*.yaml"))
        return specs[0] if len(specs) == 1 else None
    return path if path.is_file() else None


def load_data(spec: Mapping):
    """The dataset a spec dict names (``data``, ``data_root``, ``data_options``).

    Examples
    --------
    >>> from unravel.study import load_data
    >>> load_data({"data": "mnist1d", "data_options": {"num_samples": 200}}).input_shape
    (1, 40)
    """
    return DataSpec.from_spec(spec).load()


def build_model(mspec: Mapping, data):
    """Build a model from a spec entry ``{name: ..., **kwargs}`` sized for ``data``.

    Examples
    --------
    >>> import unravel
    >>> from unravel.study import build_model
    >>> net = build_model({"name": "resmlp", "depth": 3}, unravel.data.synthetic(40))
    >>> len(unravel.find_units(net))
    3
    """
    return ModelSpec.from_spec(mspec, "model").build(data)


def _device(device) -> torch.device:
    return check_device(device)


def run_study(spec_or_name, out=None, *, quick: bool = False, device="cpu", seed: int | None = None,
              seeds=None, progress: bool = True, cache: bool = True) -> Path:
    """Run a study and return its results folder ``<out>/<study>/<timestamp>/``.

    Parameters
    ----------
    spec_or_name : str, Path or dict
        A study name (:func:`list_studies`), a YAML file, or a spec dict.
    out : str or Path
        Parent folder (default ``results``).
    quick : bool
        Apply the spec's ``quick`` overrides (tiny models, one or two epochs: a smoke run).
    device : str
    seed : int, optional
        Run this one training seed instead of the spec's.
    seeds : list of int, optional
        Run these training seeds instead of the spec's (not with ``seed``).
    cache : bool
        Reuse models trained before with the same settings and code (see :meth:`Context.trained`).

    Returns
    -------
    Path
        The folder with ``config.yaml``, ``environment.json``, tidy CSVs, figures (PNG and SVG),
        ``summary.json`` and ``report.md``.

    Raises
    ------
    SpecError
        If the spec names an unknown field or value (before anything runs).
    ArgumentError
        If the device, seed or data cannot be used.

    Examples
    --------
    >>> import json, tempfile
    >>> from unravel.study import run_study
    >>> spec = {"kind": "norm-preservation", "data": "synthetic",
    ...         "data_options": {"num_samples": 80, "input_shape": [1, 8]},
    ...         "models": {"residual": {"name": "preact_resnet_cifar", "width": 2},
    ...                    "plain": {"name": "preact_plain_cifar", "width": 2}},
    ...         "train": {"epochs": 1}, "analysis": {"depths": [8], "probe_size": 2, "calibration_size": 32}}
    >>> folder = run_study(spec, tempfile.mkdtemp(), progress=False)
    >>> summary = json.loads((folder / "summary.json").read_text())
    >>> [c["id"] for c in summary["claims"]], [c["id"] for c in summary["checks"]]
    (['identity-near-one', 'deeper-concentrates', 'transition-farther'], ['plain-farther'])
    """
    if isinstance(spec_or_name, Mapping):
        spec = apply_quick(spec_or_name) if quick else copy.deepcopy(dict(spec_or_name))
        spec.setdefault("name", spec.get("kind", "study"))
        validate_spec(spec)
    else:
        spec = load_spec(spec_or_name, quick=quick)
    source = None if isinstance(spec_or_name, Mapping) else spec_file(spec_or_name)
    device = _device(device)
    if seed is not None and seeds is not None:
        raise ArgumentError("give seed or seeds, not both.")
    if seed is not None:
        seeds = [check_seed(seed)]
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
            raise ArgumentError(f"seeds={seeds!r}: must be a list of non-negative integers.")
        spec.pop("seed", None)
        spec["seeds"] = [check_seed(s, "seeds") for s in seeds]
    checked = parse_spec(spec)
    seeds = list(checked.seeds)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = check_folder(Path(out or "results") / checked.name / stamp, "results folder")
    folder.mkdir(parents=True, exist_ok=True)
    resolved = {k: v for k, v in spec.items() if k != "quick"}
    resolved["quick"] = quick
    resolved["device"] = str(device)
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    env = environment(seeds[0], device)
    env["seeds"] = seeds
    (folder / "environment.json").write_text(summary_json(env))
    ctx = Context(checked, folder, device, seeds, progress, cache=cache)
    start = time.perf_counter()
    with definitions(checked.claims or None):
        results = get_kind(checked.kind).run(ctx)
    claims = [c for c in results if c.get("kind", "claim") != "check"]
    checks = [c for c in results if c.get("kind") == "check"]
    if checked.correction == "holm":
        holm(claims)
    prereg = preregistration_record(spec, source)
    summary = {"study": checked.name, "kind": checked.kind, "quick": quick, "seeds": seeds,
               "git_revision": env["git_revision"], "git_dirty": env["git_dirty"],
               "seconds": round(time.perf_counter() - start, 1), "correction": checked.correction,
               "preregistration": prereg, "claims": claims, "checks": checks,
               "checks_passed": all(c["verdict"] == "supported" for c in checks)}
    # the finished work, written whole or saved elsewhere (the error says where)
    write_text(folder / "summary.json", summary_json(summary), "summary")
    write_text(folder / "report.md", report_markdown(checked, claims, seeds=seeds, device=device, quick=quick,
                                                     figures=ctx.figures, tables=ctx.tables, environment=env,
                                                     checks=checks, preregistration=prereg),
               "report")
    return folder
