"""Studies: a YAML spec in, a results folder out, with a verdict per published claim computed
from the measured data.

A spec names a study ``kind`` (one of :data:`KINDS`), data, models, training and analysis
settings; :func:`run_study` trains, measures, writes tidy CSVs, figures (PNG and SVG),
``summary.json``, ``report.md``, the resolved ``config.yaml`` and ``environment.json``. Each
verdict is a plain function of tidy frames (``claim_*``), so it can be checked on synthetic data.
This module does not check that a study's models are large or trained long enough for a claim to
be meaningful; the report states the settings next to every verdict.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from . import attribution, data as data_mod, lesion, models, plots, train
from .graph import UnraveledGraph
from .units import find_units

__all__ = ["run_study", "load_spec", "list_studies", "SpecError", "KINDS", "MODEL_BUILDERS", "STUDY_DIRS",
           "claim_single_deletions", "claim_smooth_growth", "claim_projection_hurts", "claim_exponential_decay",
           "claim_mean_length_below", "claim_shallow_first", "claim_mean_length_moves", "claim_dense_shallower",
           "claim_alike", "claim_residual_closer", "claim_deeper_closer"]

VEIT = "Veit, Wilber & Belongie, NeurIPS 2016"
SSF = "Shallow subnetwork first, Neural Networks 148 (2022)"
NORM = "Zaeemzadeh, Rahnavard & Shah, IEEE TPAMI 43(11) (2021)"

#: Model builders by the name a spec gives them.
MODEL_BUILDERS = {
    "resnet_cifar": models.resnet_cifar, "preact_resnet_cifar": models.preact_resnet_cifar,
    "plain_cifar": models.plain_cifar, "se_resnet_cifar": models.se_resnet_cifar, "densenet_bc": models.densenet_bc,
    "resmlp": models.resmlp, "plain_mlp": models.plain_mlp, "resnet1d": models.resnet1d, "plain1d": models.plain1d,
}
_CONV = {"resnet_cifar", "preact_resnet_cifar", "plain_cifar", "se_resnet_cifar", "densenet_bc"}
TOP_KEYS = ("name", "kind", "title", "description", "data", "data_root", "data_options", "models", "train",
            "analysis", "quick", "seed")
TRAIN_KEYS = ("epochs", "optimizer", "lr", "batch_size", "weight_decay", "schedule")
#: Where named studies' specs are looked for.
STUDY_DIRS = [Path(__file__).resolve().parents[1] / "studies", Path(sys.prefix) / "share" / "unravel" / "studies"]


class SpecError(ValueError):
    """A study spec names an unknown field or value; the message names it and what is allowed."""


# ------------------------------------------------------------------------------------------
# Specs


def list_studies() -> dict[str, Path]:
    """The named studies shipped with unravel: name -> spec file."""
    found: dict[str, Path] = {}
    for d in STUDY_DIRS:
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found.setdefault(p.stem, p)
    return found


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_spec(name_or_file, quick: bool = False) -> dict:
    """Read and validate a spec, by study name (``unravel study list``) or YAML path; with
    ``quick`` its ``quick:`` overrides are applied."""
    path = Path(str(name_or_file))
    if not path.suffix:
        studies = list_studies()
        if str(name_or_file) not in studies:
            raise SpecError(f"unknown study {str(name_or_file)!r}; available: {', '.join(studies) or 'none found'} "
                            "(or give a path to a YAML spec)")
        path = studies[str(name_or_file)]
    if not path.is_file():
        raise FileNotFoundError(f"spec file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping of fields {', '.join(TOP_KEYS)}")
    spec.setdefault("name", path.stem)
    if quick:
        spec = _merge(spec, spec.get("quick") or {})
    validate_spec(spec)
    return spec


def validate_spec(spec: dict) -> None:
    """Raise :class:`SpecError` naming the first invalid field and the allowed values."""
    for k in spec:
        if k not in TOP_KEYS:
            raise SpecError(f"spec field {k!r} is unknown; allowed fields: {', '.join(TOP_KEYS)}")
    if spec.get("kind") not in KINDS:
        raise SpecError(f"spec field 'kind' is {spec.get('kind')!r}; allowed: {', '.join(KINDS)}")
    dname = spec.get("data", "mnist1d")
    if dname not in data_mod.DATASETS:
        raise SpecError(f"spec field 'data' is {dname!r}; allowed: {', '.join(data_mod.DATASETS)}")
    for role, m in (spec.get("models") or {}).items():
        if not isinstance(m, dict) or m.get("name") not in MODEL_BUILDERS:
            got = m.get("name") if isinstance(m, dict) else m
            raise SpecError(f"spec field 'models.{role}.name' is {got!r}; allowed: {', '.join(MODEL_BUILDERS)}")
    for k in spec.get("train") or {}:
        if k not in TRAIN_KEYS:
            raise SpecError(f"spec field 'train.{k}' is unknown; allowed: {', '.join(TRAIN_KEYS)}")
    opt = (spec.get("train") or {}).get("optimizer", "adam")
    if opt not in train.OPTIMIZERS:
        raise SpecError(f"spec field 'train.optimizer' is {opt!r}; allowed: {', '.join(train.OPTIMIZERS)}")
    needed = KINDS[spec["kind"]][1]
    missing = [r for r in needed if r not in (spec.get("models") or {})]
    if missing:
        raise SpecError(f"spec field 'models' lacks {', '.join(missing)}; study kind {spec['kind']!r} needs "
                        f"models named {', '.join(needed)}")


# ------------------------------------------------------------------------------------------
# Running


class _Context:
    def __init__(self, spec, out: Path, device, seed, progress):
        self.spec, self.out, self.device, self.seed, self.progress = spec, out, device, seed, progress
        self.figures: list[tuple[str, str]] = []
        self.tables: list[str] = []
        self._data = None

    @property
    def data(self):
        if self._data is None:
            self._data = load_data(self.spec)
        return self._data

    def model(self, role_or_spec, **overrides):
        m = dict(self.spec["models"][role_or_spec]) if isinstance(role_or_spec, str) else dict(role_or_spec)
        m.update(overrides)
        torch.manual_seed(self.seed)
        return build_model(m, self.data).to(self.device)

    def fit(self, model, callbacks=()):
        t = dict(self.spec.get("train") or {})
        return train.fit(model, self.data, epochs=int(t.get("epochs", 5)), optimizer=t.get("optimizer", "adam"),
                         lr=t.get("lr"), batch_size=int(t.get("batch_size", 128)),
                         weight_decay=float(t.get("weight_decay", 5e-4 if t.get("optimizer") == "sgd" else 0.0)),
                         schedule=t.get("schedule", "cosine"), seed=self.seed, device=self.device,
                         callbacks=callbacks, progress=self.progress)

    def frame(self, name, df):
        df.to_csv(self.out / f"{name}.csv", index=False)
        self.tables.append(f"{name}.csv")
        return df

    def figure(self, name, ax, caption):
        plots.save(ax, self.out / name)
        self.figures.append((f"{name}.png", caption))

    def probe(self, n=None):
        n = n or int((self.spec.get("analysis") or {}).get("probe_size", 128))
        x, y = self.data.batch(n)
        return x.to(self.device), y.to(self.device)


def load_data(spec):
    name = spec.get("data", "mnist1d")
    options = dict(spec.get("data_options") or {})
    if name in data_mod.ROOTED:
        if not spec.get("data_root"):
            raise SpecError(f"spec field 'data_root' is required for data {name!r}: the folder of its local files")
        return data_mod.DATASETS[name](spec["data_root"], **options)
    return data_mod.load(name, **options)


def build_model(mspec: dict, data):
    """Build a model from a spec entry ``{name: ..., **kwargs}`` sized for ``data``."""
    mspec = dict(mspec)
    name = mspec.pop("name")
    shape = data.input_shape
    if name in _CONV:
        mspec.setdefault("in_channels", shape[0])
        mspec.setdefault("dims", len(shape) - 1)
    elif name in ("resmlp", "plain_mlp"):
        mspec.setdefault("in_features", int(np.prod(shape)))
    else:
        mspec.setdefault("in_channels", shape[0])
    mspec.setdefault("num_classes", data.num_classes)
    try:
        return MODEL_BUILDERS[name](**mspec)
    except TypeError as e:
        raise SpecError(f"model {name!r}: {e}") from None


def _git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(seed, device) -> dict:
    """Versions, seed, device and git revision: what ``environment.json`` holds."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("unravel", "torch", "numpy", "pandas", "networkx", "scipy", "seaborn", "matplotlib", "mnist1d",
                "scikit-learn", "torchvision"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "versions": versions,
            "seed": seed, "device": str(device),
            "cuda": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else None,
            "git_revision": _git_revision(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def run_study(spec_or_name, out=None, *, quick: bool = False, device="cpu", seed: int | None = None,
              progress: bool = True) -> Path:
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
        Overrides the spec's seed.
    """
    if isinstance(spec_or_name, dict):
        spec = _merge(spec_or_name, spec_or_name.get("quick") or {}) if quick else copy.deepcopy(spec_or_name)
        spec.setdefault("name", spec.get("kind", "study"))
        validate_spec(spec)
    else:
        spec = load_spec(spec_or_name, quick=quick)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("device 'cuda' was asked for but torch sees no CUDA device here")
    seed = int(spec.get("seed", 0) if seed is None else seed)
    spec["seed"] = seed
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = Path(out or "results") / spec["name"] / stamp
    folder.mkdir(parents=True, exist_ok=True)
    resolved = {k: v for k, v in spec.items() if k != "quick"}
    resolved["quick"] = quick
    resolved["device"] = str(device)
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    (folder / "environment.json").write_text(json.dumps(environment(seed, device), indent=2))
    ctx = _Context(spec, folder, device, seed, progress)
    claims = KINDS[spec["kind"]][0](ctx)
    summary = {"study": spec["name"], "kind": spec["kind"], "quick": quick, "seed": seed, "claims": claims}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    (folder / "report.md").write_text(_report(spec, ctx, claims, quick))
    return folder


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if torch.is_tensor(o):
        return o.tolist()
    return str(o)


def _report(spec, ctx, claims, quick) -> str:
    lines = [f"# {spec.get('title', spec['name'])}", ""]
    if spec.get("description"):
        lines += [spec["description"].strip(), ""]
    if quick:
        lines += ["*Quick run (`--quick`): tiny models and few epochs, a smoke test of the pipeline; "
                  "its verdicts are not evidence either way.*", ""]
    t = spec.get("train") or {}
    lines += [f"Data: `{spec.get('data', 'mnist1d')}`; training: {t.get('epochs', 5)} epochs of "
              f"{t.get('optimizer', 'adam')}; seed {ctx.seed}; device `{ctx.device}`.", "",
              "## Verdicts", "", "| claim | source | measured | verdict |", "|---|---|---|---|"]
    for c in claims:
        measured = ", ".join(f"{k} = {_fmt(v)}" for k, v in c["measured"].items())
        lines.append(f"| {c['statement']} | {c['source']} | {measured} | **{'true' if c['verdict'] else 'false'}** |")
    lines += ["", "Each verdict is computed from this run's data by the rule stated in `summary.json`.", ""]
    for c in claims:
        lines.append(f"- *{c['statement']}* — rule: {c['rule']}")
    lines += ["", "## Figures", ""]
    for path, caption in ctx.figures:
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    lines += ["## Data", ""] + [f"- [`{t}`]({t})" for t in ctx.tables] + [""]
    return "\n".join(lines)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _claim(cid, statement, source, measured, verdict, rule):
    return {"id": cid, "statement": statement, "source": source, "measured": measured, "verdict": bool(verdict),
            "rule": rule}


# ------------------------------------------------------------------------------------------
# Verdicts: plain functions of tidy frames


def claim_single_deletions(residual: pd.DataFrame, plain: pd.DataFrame, factor: float = 0.5) -> dict:
    """Single deletions hurt the residual net far less than the plain net: the residual net's
    mean error increase is below ``factor`` times the plain net's (delete_each frames)."""
    def increase(df):
        base = float(df.loc[df.variant == -1, "error"].iloc[0])
        return float(df.loc[df.variant >= 0, "error"].mean() - base), base

    r, rb = increase(residual)
    p, pb = increase(plain)
    return _claim("single-deletions", "Deleting a single unit hurts a residual net far less than a plain net",
                  f"{VEIT}, Fig. 3",
                  {"residual_baseline_error": rb, "residual_mean_increase": r, "plain_baseline_error": pb,
                   "plain_mean_increase": p},
                  r < factor * p, f"residual mean increase < {factor} x plain mean increase")


def claim_smooth_growth(frame: pd.DataFrame, share: float = 0.5) -> dict:
    """Error grows smoothly with k: no single step between consecutive k (k = 0 being the
    baseline) makes more than ``share`` of the total rise of the mean error."""
    mean = frame.groupby("k").error.mean().sort_index()
    steps = mean.diff().dropna()
    rise = float(mean.iloc[-1] - mean.iloc[0])
    biggest = float(steps.max()) if len(steps) else 0.0
    verdict = len(steps) >= 3 and rise > 0 and biggest <= share * rise
    return _claim("smooth-growth", "Error grows smoothly as more units are deleted (no cliff)", f"{VEIT}, Fig. 5a",
                  {"ks": mean.index.tolist(), "mean_error": [round(float(e), 4) for e in mean], "total_rise": rise,
                   "largest_step": biggest},
                  verdict, f"at least three steps, a positive rise, and no step above {share} of the rise")


def claim_projection_hurts(frame: pd.DataFrame) -> dict:
    """Deleting a projection (downsampling) unit hurts more than deleting an identity unit."""
    units = frame[frame.variant >= 0]
    proj, ident = units[units.projection], units[~units.projection]
    if proj.empty or ident.empty:
        return _claim("projection-units", "Projection units hurt more when deleted than identity units",
                      f"{VEIT}, Sec. 4.2", {"projection_units": len(proj), "identity_units": len(ident)}, False,
                      "needs both kinds of unit")
    p, i = float(proj.error.mean()), float(ident.error.mean())
    return _claim("projection-units", "Projection units hurt more when deleted than identity units",
                  f"{VEIT}, Sec. 4.2", {"projection_mean_error": p, "identity_mean_error": i}, p > i,
                  "mean error after deleting a projection unit > after deleting an identity unit")


def claim_exponential_decay(frame: pd.DataFrame, min_r2: float = 0.8) -> dict:
    """Per-path gradient magnitude decays exponentially with length: a log-linear fit of
    ``per_path_norm`` against length has a negative slope and R^2 >= ``min_r2``."""
    d = frame[frame.per_path_norm > 0]
    x, y = d.length.to_numpy(float), np.log(d.per_path_norm.to_numpy(float))
    if len(x) < 3:
        return _claim("exponential-decay", "Gradient magnitude per path decays exponentially with length",
                      f"{VEIT}, Fig. 6(a)", {"lengths_fitted": len(x)}, False, "needs three lengths")
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300)
    return _claim("exponential-decay", "Gradient magnitude per path decays exponentially with length",
                  f"{VEIT}, Fig. 6(a)", {"slope_log_per_length": float(slope), "r2": float(r2),
                                         "factor_per_length": float(math.exp(slope))},
                  slope < 0 and r2 >= min_r2, f"log-linear fit: slope < 0 and R^2 >= {min_r2}")


def claim_mean_length_below(frame: pd.DataFrame, n: int, factor: float = 0.8) -> dict:
    """The gradient-weighted mean path length lies well below n/2: below ``factor * n/2``,
    weighting each length by its total magnitude (``norm``)."""
    w = frame.norm.to_numpy(float)
    mean = float((w * frame.length.to_numpy(float)).sum() / w.sum())
    return _claim("mean-length", "The gradient comes mostly from paths far shorter than the typical path",
                  f"{VEIT}, Sec. 4.1", {"gradient_mean_length": mean, "mean_path_length": n / 2, "units": n},
                  mean < factor * n / 2, f"magnitude-weighted mean length < {factor} x n/2")


def _half_time(series: pd.Series) -> float:
    """Fractional epoch at which the error first covers half its way from start to end."""
    e = series.sort_index()
    start, end = float(e.iloc[0]), float(e.iloc[-1])
    target = start - 0.5 * (start - end)
    if start <= end:
        return float("inf")  # never improved
    xs, ys = e.index.to_numpy(float), e.to_numpy(float)
    for i in range(1, len(ys)):
        if ys[i] <= target:
            return float(xs[i - 1] + (ys[i - 1] - target) / max(ys[i - 1] - ys[i], 1e-12) * (xs[i] - xs[i - 1]))
    return float(xs[-1])


def claim_shallow_first(frame: pd.DataFrame) -> dict:
    """Shallow subnetworks reach low error before deep ones: the half-way time of the smallest
    subnetwork is earlier than that of the largest (subnetworks_frame of a tracker)."""
    by_k = frame.groupby(["subnetwork_units", "epoch"]).error.mean()
    ks = sorted(frame.subnetwork_units.unique())
    times = {int(k): _half_time(by_k.loc[k]) for k in ks}
    shallow, deep = times[ks[0]], times[ks[-1]]
    return _claim("shallow-first", "Shallow subnetworks reach low error before deep ones", SSF,
                  {"half_way_epoch_by_units": times}, shallow < deep,
                  "epoch at which the error covers half its fall: smallest subnetwork < largest")


def claim_mean_length_moves(frame: pd.DataFrame) -> dict:
    """Over training the gradient's mean path length grows (low-degree terms are learned first,
    so the shallow paths' share of the gradient falls): last > first (tracker frame, wrt units)."""
    by_epoch = frame.groupby("epoch").mean_length.mean().sort_index()
    first, last = float(by_epoch.iloc[0]), float(by_epoch.iloc[-1])
    return _claim("mean-length-moves", "The gradient's mean path length grows over training (shallow terms first)",
                  SSF, {"mean_length_first": first, "mean_length_last": last,
                        "by_epoch": [round(float(v), 3) for v in by_epoch]}, last > first,
                  "mean length of the unit-parameter gradient at the last record > at the first")


def claim_dense_shallower(res: float, res_n: int, dense: float, dense_n: int) -> dict:
    """DenseNet's effective paths are shallower than ResNet's, relative to depth: the mean path
    length divided by the number of units is smaller for the DenseNet."""
    return _claim("dense-shallower", "DenseNet's effective paths are shallower than ResNet's", SSF,
                  {"resnet_mean_length": res, "resnet_units": res_n, "densenet_mean_length": dense,
                   "densenet_units": dense_n, "resnet_relative": res / res_n, "densenet_relative": dense / dense_n},
                  dense / dense_n < res / res_n, "mean length / units: DenseNet < ResNet")


def claim_alike(a: float, a_n: int, b: float, b_n: int, tolerance: float = 0.1) -> dict:
    """SE-ResNets behave like ResNets: their relative mean path lengths differ by less than
    ``tolerance``."""
    diff = abs(a / a_n - b / b_n)
    return _claim("se-alike", "SE-ResNets and ResNets behave alike", SSF,
                  {"resnet_relative": a / a_n, "se_resnet_relative": b / b_n, "difference": diff},
                  diff < tolerance, f"|relative mean lengths| differ by < {tolerance}")


def _log_dev(frame):
    return frame.assign(dev=np.abs(np.log(frame.ratio.clip(lower=1e-300))))


def claim_residual_closer(frame: pd.DataFrame) -> dict:
    """Residual ratios are closer to 1 than plain ones at every depth: mean ``|log ratio|``
    (norm_ratios frames with columns family, depth)."""
    d = _log_dev(frame).groupby(["depth", "family"]).dev.mean().unstack()
    ok = bool((d["residual"] < d["plain"]).all())
    return _claim("residual-closer", "Residual nets preserve the gradient norm better than plain nets", NORM,
                  {"mean_abs_log_ratio": {int(k): {c: round(float(v), 4) for c, v in row.items()}
                                          for k, row in d.iterrows()}}, ok,
                  "mean |log ratio| residual < plain at every depth")


def claim_deeper_closer(frame: pd.DataFrame) -> dict:
    """Deeper residual nets preserve the norm better: mean ``|log ratio|`` of the deepest residual
    net < that of the shallowest."""
    d = _log_dev(frame[frame.family == "residual"]).groupby("depth").dev.mean().sort_index()
    return _claim("deeper-closer", "Deeper residual nets preserve the gradient norm better still", NORM,
                  {"mean_abs_log_ratio_by_depth": {int(k): round(float(v), 4) for k, v in d.items()}},
                  float(d.iloc[-1]) < float(d.iloc[0]), "mean |log ratio|: deepest residual < shallowest")


# ------------------------------------------------------------------------------------------
# The studies


def _veit_lesion(ctx) -> list:
    a = ctx.spec.get("analysis") or {}
    ks, spk = list(a.get("ks", [1, 2, 4, 6, 8])), int(a.get("samples_per_k", 5))
    frames = {}
    for role in ("residual", "plain"):
        model = ctx.model(role)
        hist = ctx.fit(model)
        ctx.frame(f"train_{role}", hist.to_frame().assign(model=role))
        n = len(find_units(model))
        kk = [k for k in ks if k <= n]
        frames[role] = {
            "each": lesion.delete_each(model, ctx.data, device=ctx.device, progress=ctx.progress).assign(model=role),
            "random": lesion.delete_random(model, ctx.data, ks=kk, samples_per_k=spk, seed=ctx.seed, device=ctx.device,
                                           progress=ctx.progress).assign(model=role)}
        if role == "residual":
            try:
                frames[role]["reorder"] = lesion.reorder_random(model, ctx.data, ks=kk, samples_per_k=spk,
                                                                seed=ctx.seed, device=ctx.device,
                                                                progress=ctx.progress).assign(model=role)
            except ValueError:  # one unit per stage: nothing may change places
                frames[role]["reorder"] = None
    each = ctx.frame("delete_each", pd.concat([frames[r]["each"] for r in frames]))
    rnd = ctx.frame("delete_random", pd.concat([frames[r]["random"] for r in frames]))
    ctx.figure("delete_each", plots.deletion_errors(each), "Test error after deleting each single unit (Veit Fig. 3)")
    ctx.figure("delete_random", plots.error_vs_k(rnd), "Error against the number of deleted units (Veit Fig. 5a)")
    if frames["residual"]["reorder"] is not None:
        reo = ctx.frame("reorder_random", frames["residual"]["reorder"])
        ctx.figure("reorder_random", plots.error_vs_k(reo), "Error against the number of swapped pairs (Veit Fig. 5b)")
    return [claim_single_deletions(frames["residual"]["each"], frames["plain"]["each"]),
            claim_smooth_growth(frames["residual"]["random"]),
            claim_projection_hurts(frames["residual"]["each"])]


def _veit_paths(ctx) -> list:
    a = ctx.spec.get("analysis") or {}
    model = ctx.model("residual")
    ctx.frame("train", ctx.fit(model).to_frame())
    units = find_units(model)
    n = len(units)
    dist = ctx.frame("path_lengths", UnraveledGraph(units).length_distribution())
    ctx.figure("path_lengths", plots.path_length_distribution(dist), "How many paths have each length")
    x, y = ctx.probe()
    exact = attribution.path_length_gradients(model, x, y)
    sample = attribution.path_length_gradients(model, x, y, method="sample", num_samples=int(a.get("num_samples", 100)),
                                               generator=ctx.seed, chunk_size=int(a.get("paths_per_pass", 64)))
    grads = ctx.frame("gradient_by_length", pd.concat([exact.to_frame(), sample.to_frame()], ignore_index=True))
    eff = exact.effective_paths(float(a.get("mass", 0.9)))
    eff_s = sample.effective_paths(float(a.get("mass", 0.9)))
    ctx.frame("effective_paths", pd.DataFrame([{"method": "exact", **eff}, {"method": "sample", **eff_s}]))
    ctx.figure("gradient_per_path", plots.gradient_by_length(grads, "per_path_norm", window=eff_s["lengths"]),
               "Gradient magnitude per path by length, log scale (Veit Fig. 6a); shaded: effective paths (sampled)")
    ctx.figure("gradient_total", plots.gradient_by_length(grads, "norm", window=eff["lengths"]),
               "Total gradient magnitude by length (Veit Fig. 6b); shaded: effective paths (exact)")
    decay = claim_exponential_decay(sample.to_frame())
    below = claim_mean_length_below(sample.to_frame(), n)
    below["measured"]["exact_gradient_mean_length"] = exact.mean_length
    below["measured"]["effective_paths_exact"] = list(eff["lengths"])
    below["measured"]["effective_share_of_all_paths"] = eff["fraction_of_paths"]
    decay["measured"]["exact_slope"] = claim_exponential_decay(exact.to_frame())["measured"].get("slope_log_per_length")
    return [decay, below]


def _ssf_dynamics(ctx) -> list:
    a = ctx.spec.get("analysis") or {}
    results, claims = {}, []
    for role in [r for r in ("resnet", "densenet", "se_resnet") if r in ctx.spec["models"]]:
        model = ctx.model(role)
        n = len(find_units(model))
        subs = sorted({max(1, int(round(f * n))) for f in a.get("subnetwork_fractions", [0.25, 0.5, 0.75, 1.0])})
        tracker = attribution.PathLengthTracker(ctx.probe(), wrt=("units",), subnetwork_units=subs,
                                                subnetwork_samples=int(a.get("subnetwork_samples", 3)),
                                                seed=ctx.seed)
        ctx.frame(f"train_{role}", ctx.fit(model, callbacks=[tracker]).to_frame())
        tf = ctx.frame(f"paths_{role}", tracker.to_frame().assign(model=role))
        sf = ctx.frame(f"subnetworks_{role}", tracker.subnetworks_frame().assign(model=role))
        ctx.figure(f"heatmap_{role}", plots.length_heatmap(tf), f"{role}: share of the parameter gradient by path "
                   "length, over training")
        ctx.figure(f"subnetworks_{role}", plots.subnetwork_errors(sf), f"{role}: error of random subnetworks over "
                   "training")
        last = tf[tf.epoch == tf.epoch.max()]
        results[role] = (float(last.mean_length.iloc[0]), n, tf, sf)
    res_mean, res_n, res_tf, res_sf = results["resnet"]
    claims += [claim_shallow_first(res_sf), claim_mean_length_moves(res_tf)]
    if "densenet" in results:
        claims.append(claim_dense_shallower(res_mean, res_n, results["densenet"][0], results["densenet"][1]))
    if "se_resnet" in results:
        claims.append(claim_alike(res_mean, res_n, results["se_resnet"][0], results["se_resnet"][1]))
    return claims


def _norm_preservation(ctx) -> list:
    a = ctx.spec.get("analysis") or {}
    rows = []
    for depth in a.get("depths", [8, 20, 32]):
        for family in ("residual", "plain"):
            model = ctx.model(family, depth=int(depth))
            if int(a.get("train", 1)):
                ctx.fit(model)
            x, y = ctx.probe()
            rows.append(attribution.norm_ratios(model, x, y).assign(family=family, depth=int(depth),
                                                                    model=f"{family}-{depth}"))
    frame = ctx.frame("norm_ratios", pd.concat(rows, ignore_index=True))
    ctx.figure("norm_ratios", plots.norm_ratios(frame, hue="model"), "Gradient norm ratio per unit; 1 is perfect "
               "preservation")
    return [claim_residual_closer(frame), claim_deeper_closer(frame)]


def _quickstart(ctx) -> list:
    claims = []
    for sub in ("veit-lesion", "veit-paths", "norm-preservation", "ssf-dynamics"):
        spec = (ctx.spec.get("analysis") or {}).get(sub)
        if spec is None:
            continue
        sub_spec = _merge({k: ctx.spec[k] for k in ("data", "data_root", "data_options", "train") if k in ctx.spec},
                          spec)
        sub_spec.setdefault("name", sub)
        sub_spec["kind"] = sub
        validate_spec(sub_spec)
        sub_ctx = _Context(sub_spec, ctx.out, ctx.device, ctx.seed, ctx.progress)
        sub_ctx._data = ctx.data if sub_spec.get("data", "mnist1d") == ctx.spec.get("data", "mnist1d") and \
            sub_spec.get("data_options") == ctx.spec.get("data_options") else None
        got = KINDS[sub][0](_Prefixed(sub_ctx, sub))
        for c in got:
            c["study"] = sub
        claims += got
        ctx.figures += sub_ctx.figures
        ctx.tables += sub_ctx.tables
    return claims


class _Prefixed:
    """A context whose files are prefixed with the sub-study's name (quickstart)."""

    def __init__(self, ctx, prefix):
        self._ctx, self._prefix = ctx, prefix

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def frame(self, name, df):
        return self._ctx.frame(f"{self._prefix}_{name}", df)

    def figure(self, name, ax, caption):
        return self._ctx.figure(f"{self._prefix}_{name}", ax, caption)


#: Study kinds: kind -> (runner, model roles it needs).
KINDS = {
    "veit-lesion": (_veit_lesion, ("residual", "plain")),
    "veit-paths": (_veit_paths, ("residual",)),
    "ssf-dynamics": (_ssf_dynamics, ("resnet",)),
    "norm-preservation": (_norm_preservation, ("residual", "plain")),
    "quickstart": (_quickstart, ()),
}
