"""Claims: the verdict on each published claim, as a plain function of measured trials.

The framework side of every study's claims: a registry of what each paper reports
(:func:`register_paper`), and :func:`judge`, which turns a statistic over
:class:`~unravel.study.stats.Trials` into a claim dict. A study's own ``claim_*`` functions live
in its folder (``studies/<name>/claims.py``); this module knows no study by name.

Each claim is a dict: ``id``, ``statement``, ``source``, ``effect`` (what is estimated),
``kind`` (``claim``, or ``check`` for what holds by construction or tests only a sign),
``range`` (the values the statistic can take, or None), ``estimate`` (the mean over seeds of each
seed's statistic), ``ci`` (95%, hierarchical bootstrap over seeds, then test examples and draws;
inside ``range``, around the estimate), ``margin`` and
``direction`` (the claim says the effect lies above or below the margin), ``paper`` (the paper's
own figure for this quantity, where it gives one), ``seeds``, ``rule``, ``verdict``
(``"supported"``, ``"contradicted"`` or ``"inconclusive"``), ``why`` and ``measured``
(supporting numbers). An effect that is undefined on the data, or a precondition that fails (a
net that did not train), gives ``"inconclusive"``, never a verdict either way. Every claim
function takes ``requires``, more preconditions ``(ok, reason)`` (a study's scale, say).

The margins are stated choices (see each function); the verdicts say nothing about whether the
models are large or trained long enough to stand for the papers' models: the reports state the
settings next to every verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..errors import ArgumentError
from .intervals import bootstrap
from .prereg import active, definition
from .verdicts import make_claim, p_values

__all__ = ["register_paper", "paper_entry", "judge", "check_columns", "PAPERS"]

_PAPERS: dict[str, dict] = {}

#: What each paper reports for the quantity a claim measures, by claim id: ``where`` (figure or
#: section), ``value`` (a number when the paper states one, else None) and ``note`` (its setting,
#: in words). A read-only view; studies add their entries with :func:`register_paper`.
PAPERS = MappingProxyType(_PAPERS)


def register_paper(cid: str, *, where: str, note: str, value: float | None = None) -> None:
    """Record what the paper behind claim ``cid`` reports, for :func:`judge` to show beside ours.

    A study registers its papers' entries when it is loaded. Registering the same entry again
    does nothing; a different entry under a registered id is refused.

    Raises
    ------
    ArgumentError
        If ``cid`` is registered already with another entry.

    Examples
    --------
    >>> from unravel.study import PAPERS, register_paper
    >>> register_paper("example-claim", where="Fig. 1", note="the paper's own words")
    >>> PAPERS["example-claim"]["where"]
    'Fig. 1'
    """
    entry = {"where": where, "value": value, "note": note}
    if _PAPERS.get(cid, entry) != entry:
        raise ArgumentError(f"claim id {cid!r} has a paper entry already ({_PAPERS[cid]['where']}); give the new "
                            "claim another id.")
    _PAPERS[cid] = entry


def paper_entry(cid: str) -> dict | None:
    """A copy of claim ``cid``'s registered paper entry, or None.

    Examples
    --------
    >>> from unravel.study.claims import paper_entry
    >>> paper_entry("no-such-claim") is None
    True
    """
    return dict(_PAPERS[cid]) if cid in _PAPERS else None


def _seeds(*trials):
    return sorted({int(s) for t in trials for s in t.frame.seed.unique()})


def _scale_ok(min_scale: dict, scale: dict | None):
    """Preconditions from a definition's ``min_scale`` against the claim's measured ``scale``."""
    out = []
    for key, least in (min_scale or {}).items():
        got = (scale or {}).get(key)
        out.append((got is not None and got >= least,
                    f"the claim is judged at {key} >= {least:g} (its pre-registered minimum scale); this run has "
                    f"{'no measured ' + key if got is None else f'{key} {got:g}'}"))
    return out


def judge(cid, statement, source, stat, trials, *, margin, direction, effect, measured=None, requires=(),
          n_boot=1000, boot_seed=0, paper_key=None, extra=(), range=None, check=False,  # noqa: A002
          scale=None) -> dict:
    """The claim dict for statistic ``stat`` over ``trials`` (a :class:`Trials`, or a dict of
    them): its estimate and hierarchical bootstrap interval
    (:func:`~unravel.study.intervals.bootstrap`), decided against ``margin``.

    ``range`` is what the statistic can take (``[low, high]``, None at an open end, or None);
    ``check=True`` makes the record a check (holds by construction, or tests only a sign).
    While a run's pre-registered definitions are active (:func:`~unravel.study.prereg.definitions`),
    the definition of ``cid`` decides: its margin, direction, range, ``check`` and ``min_scale``
    (compared with ``scale``, the claim's measured scale such as ``{"units": 54}``) replace the
    arguments, and a claim without a definition is marked ``preregistered: false``. An amended
    definition also records the verdict under its original margin. ``paper_key`` (default
    ``cid``) names the :data:`PAPERS` entry shown beside the estimate. One training seed makes
    the claim inconclusive: the interval would not cover the variation between training runs.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.claims import judge
    >>> from unravel.study.stats import Trials, per_seed
    >>> t = Trials(pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "error": [0.1, 0.2, 0.1, 0.3, 0.2, 0.2]}))
    >>> c = judge("low-error", "The error is low", "here", per_seed(lambda g: g.error.mean()), t,
    ...           margin=0.5, direction="below", effect="mean error", n_boot=50, range=[0, 1])
    >>> c["verdict"], c["range"], c["ci"][0] <= c["estimate"] <= c["ci"][1]
    ('supported', [0, 1], True)
    """
    d = definition(cid)
    if d is not None:
        if d["direction"] != direction:
            raise ArgumentError(f"claim {cid!r} tests {direction} its margin, but its pre-registered definition "
                                f"says {d['direction']}: the code and the spec disagree")
        margin, range, check = d["margin"], d.get("range", range), d.get("check", check)
        extra = [*extra, *_scale_ok(d.get("min_scale"), scale)]
    r = bootstrap(stat, trials, n_boot=n_boot, seed=boot_seed, range=range)
    parts = list(trials.values() if isinstance(trials, Mapping) else [trials])
    seeds = _seeds(*parts)
    requires = [*requires, *extra,
                (len(seeds) >= 2, "one training seed: the interval covers the test examples and draws of one trained "
                                  "net, not the variation between training runs; run two or more seeds")]
    kw = dict(estimate=r.estimate, ci=r.ci, direction=direction, effect=effect, seeds=seeds,
              paper=paper_entry(paper_key or cid), measured={**(measured or {}), "per_seed": r.per_seed},
              requires=requires, undefined=r.undefined, range=range, check=check)
    claim = make_claim(cid, statement, source, margin=margin, p=p_values(r, margin, direction),
                       **kw)
    claim["preregistered"] = d is not None if active() else None
    if d is not None and d.get("amended"):
        a = d["amended"]
        om, od = a["original"].get("margin", margin), a["original"].get("direction", direction)
        original = make_claim(cid, statement, source, **{**kw, "direction": od}, margin=om)
        claim["amendment"] = {"date": a["date"], "reason": a["reason"], "original_margin": om,
                              "original_direction": od, "original_verdict": original["verdict"]}
    return claim


def check_columns(frame, columns, what) -> None:
    """Refuse a frame that lacks any of ``columns``, naming ``what`` needs them.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.claims import check_columns
    >>> check_columns(pd.DataFrame({"seed": [0]}), ["seed", "error"], "my claim")
    Traceback (most recent call last):
    ...
    unravel.errors.ArgumentError: my claim needs columns seed, error; missing: error.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArgumentError(f"{what} needs columns {', '.join(columns)}; missing: {', '.join(missing)}.")
