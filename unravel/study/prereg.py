"""Pre-registration: a study's claim definitions, fixed in its spec and hashed before any run.

A spec's ``claims:`` section defines every claim (and check) its study judges, by id:
``statement``, ``statistic`` (what is estimated, in words), ``margin``, ``motivation`` (the
paper's number the margin stands on), ``direction`` (above, below, within), ``range`` (the values
the statistic can take, ``[low, high]`` with null for an open end, or null), ``params`` (the
claim's parameters: a mass, a grid of k), ``min_scale`` (the smallest scale the claim is judged
at, such as ``{units: 27}`` or ``{depth: 110}``: below it the verdict is inconclusive) and
``check`` (true: it holds by construction or tests only a sign, so it is reported apart and not
counted as evidence). ``correction`` names the multiple-testing correction (``holm``).

:func:`preregistered` picks exactly the fields a pre-registration fixes (``claims``, ``seeds``,
``correction``, ``analysis``); :func:`preregistration_hash` hashes them; ``unravel study
preregister NAME`` writes them with their hash to ``<spec>.preregistration.json`` beside the
spec (:func:`write_preregistration`). Committed before a run, that file is the contract: a run
records ``{commit, hash, matches}`` (:func:`preregistration_record`). A definition changed after
seeing data carries ``amended: {date, reason, original: {margin: ...}}``, and the report shows
the verdict under the original definition beside the amended one.

While a study runs, :func:`definitions` makes its claims' definitions the ones
:func:`~unravel.study.claims.judge` decides with (:func:`definition`).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..errors import SpecError
from .schema import bad, choice, flag, join, keys, number, optional, text

__all__ = ["DEFINITION_KEYS", "PREREGISTERED", "parse_claims", "preregistered", "preregistration_hash",
           "preregistration_path", "write_preregistration", "preregistration_record", "definitions", "definition"]

DEFINITION_KEYS = ("statement", "statistic", "margin", "motivation", "direction", "range", "params", "min_scale",
                   "check", "amended")
#: The spec fields a pre-registration fixes.
PREREGISTERED = ("claims", "seeds", "correction", "analysis")
CORRECTIONS = ("holm", "none")

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("unravel_claim_definitions", default=None)


def _range(path, v):
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2 or any(
            x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))) for x in v):
        bad(path, v, "[low, high] (null for an open end) or null")
    lo, hi = (float("-inf") if v[0] is None else v[0]), (float("inf") if v[1] is None else v[1])
    if not lo < hi:
        bad(path, v, "[low, high] with low below high")
    return list(v)


def _scale(path, v):
    v = keys(v, path, ("units", "depth", "layers", "seeds"))
    for k, x in v.items():
        number(0)(join(path, k), x)
    return dict(v)


def _amended(path, v):
    v = keys(v, path, ("date", "reason", "original"))
    for k in ("date", "reason"):
        if not v.get(k):
            raise SpecError(f"spec field {join(path, k)!r} is required for an amendment: when and why the definition "
                            "changed after data were seen")
        text(join(path, k), str(v[k]))
    original = keys(v.get("original"), join(path, "original"), ("margin", "direction"))
    if not original:
        raise SpecError(f"spec field {join(path, 'original')!r} is required: the definition before the amendment "
                        "(margin and/or direction)")
    return {"date": str(v["date"]), "reason": v["reason"], "original": dict(original)}


_CHECKS = {"statement": text, "statistic": text, "margin": number(float("-inf")), "motivation": text,
           "direction": choice(lambda: ("above", "below", "within")), "range": _range,
           "params": lambda p, v: dict(keys(v, p, list(v or {}))), "min_scale": _scale, "check": flag,
           "amended": optional(_amended)}


def parse_claims(value, path: str = "claims") -> dict:
    """The checked ``claims:`` section of a spec: id -> definition.

    Examples
    --------
    >>> from unravel.study.prereg import parse_claims
    >>> d = parse_claims({"x": {"statement": "X is small", "statistic": "x", "margin": 0.1, "direction": "below",
    ...                         "motivation": "the paper: 0.05", "range": [0, 1]}})
    >>> d["x"]["margin"], d["x"]["check"]
    (0.1, False)
    """
    value = keys(value, path, list(value or {}))
    out = {}
    for cid, d in value.items():
        p = join(path, cid)
        d = keys(d, p, DEFINITION_KEYS)
        for need in ("statement", "statistic", "margin", "direction", "motivation"):
            if d.get(need) is None:
                raise SpecError(f"spec field {join(p, need)!r} is required: a claim's definition gives "
                                "statement, statistic, margin, direction and motivation (the paper's number)")
        defaults = {"check": False, "range": None, "params": {}, "min_scale": {}, "amended": None}
        out[str(cid)] = {k: _CHECKS[k](join(p, k), d[k]) if d.get(k) is not None else defaults[k]
                         for k in DEFINITION_KEYS}
    return out


def check_correction(spec: Mapping, path: str = "") -> str:
    """The spec's ``correction`` (default ``holm``)."""
    return choice(lambda: CORRECTIONS)(join(path, "correction"), spec.get("correction", "holm"))


def preregistered(spec: Mapping) -> dict:
    """Exactly the fields of a spec dict that a pre-registration fixes, with defaults filled in.

    Examples
    --------
    >>> from unravel.study.prereg import preregistered
    >>> sorted(preregistered({"seeds": [0, 1], "claims": {}, "train": {"epochs": 3}}))
    ['analysis', 'claims', 'correction', 'seeds']
    """
    seeds = spec.get("seeds", [spec.get("seed", 0)])
    return {"claims": parse_claims(spec.get("claims")), "seeds": list(seeds),
            "correction": check_correction(spec), "analysis": spec.get("analysis") or {}}


def preregistration_hash(spec: Mapping) -> str:
    """The SHA-256 of :func:`preregistered` fields, as canonical JSON.

    Examples
    --------
    >>> from unravel.study.prereg import preregistration_hash
    >>> a = preregistration_hash({"seeds": [0, 1]})
    >>> a == preregistration_hash({"seeds": [0, 1], "train": {"epochs": 9}}), a == preregistration_hash({"seeds": [0]})
    (True, False)
    """
    blob = json.dumps(preregistered(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def preregistration_path(spec_file) -> Path:
    """Where the pre-registration of the spec file ``spec_file`` lives: beside it, named
    ``<spec name>.preregistration.json``."""
    spec_file = Path(spec_file)
    return spec_file.with_name(f"{spec_file.stem}.preregistration.json")


def write_preregistration(spec: Mapping, spec_file) -> Path:
    """Write the pre-registration of ``spec`` (read from ``spec_file``) beside it; returns its path."""
    out = preregistration_path(spec_file)
    out.write_text(json.dumps({"study": spec.get("name"), "hash": preregistration_hash(spec),
                               "fields": preregistered(spec)}, indent=2, sort_keys=True, default=str) + "\n")
    return out


def _git(args, cwd):
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def preregistration_record(spec: Mapping, spec_file) -> dict:
    """``{commit, hash, matches}`` for a run of ``spec``: the last commit of its pre-registration
    file (None if not committed or not in git), the hash of the spec's pre-registered fields, and
    whether the file holds that same hash.

    Examples
    --------
    >>> from unravel.study.prereg import preregistration_record
    >>> preregistration_record({"seeds": [0]}, None)["matches"]
    False
    """
    h = preregistration_hash(spec)
    if spec_file is None:
        return {"commit": None, "hash": h, "matches": False, "file": None}
    path = preregistration_path(spec_file)
    try:
        stored = json.loads(path.read_text()).get("hash")
    except (OSError, ValueError):
        stored = None
    commit = _git(["log", "-1", "--format=%H", "--", path.name], path.parent) if path.is_file() else None
    return {"commit": commit or None, "hash": h, "matches": stored == h, "file": path.name}


@contextlib.contextmanager
def definitions(defs: Mapping | None):
    """Make ``defs`` (id -> definition) the claim definitions :func:`definition` returns."""
    token = _ACTIVE.set(dict(defs) if defs else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def definition(cid: str) -> dict | None:
    """The active definition of claim ``cid``, or None (no spec defines it, or none is active).

    Examples
    --------
    >>> from unravel.study.prereg import definition, definitions
    >>> with definitions({"x": {"margin": 0.2}}):
    ...     definition("x")["margin"]
    0.2
    >>> definition("x") is None
    True
    """
    active = _ACTIVE.get()
    return None if active is None else active.get(cid)


def active() -> bool:
    """Whether a run's definitions are active (then every claim must have one)."""
    return _ACTIVE.get() is not None
