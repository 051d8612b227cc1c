"""Claims: the verdict on each published claim, as a plain function of measured trials.

The framework side of every study's claims: a registry of what each paper reports
(:func:`register_paper`), and :func:`judge`, which turns a statistic over
:class:`~unravel.study.stats.Trials` into a claim dict. A study's own ``claim_*`` functions live
in its folder (``studies/<name>/claims.py``); this module knows no study by name.

Each claim is a dict: ``id``, ``statement``, ``source``, ``effect`` (what is estimated),
``estimate``, ``ci`` (95%, bootstrap over seeds, test examples and draws), ``margin`` and
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
from .stats import bootstrap, make_claim

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


def judge(cid, statement, source, stat, trials, *, margin, direction, effect, measured=None, requires=(),
          n_boot=1000, boot_seed=0, paper_key=None, extra=(), scale="linear") -> dict:
    """The claim dict for statistic ``stat`` over ``trials`` (a :class:`Trials`, or a dict of
    them), bootstrapped (:func:`~unravel.study.stats.bootstrap`) and decided against ``margin``.

    ``paper_key`` (default ``cid``) names the :data:`PAPERS` entry shown beside the estimate.
    One training seed makes the claim inconclusive: the interval would not cover the variation
    between training runs.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.claims import judge
    >>> from unravel.study.stats import Trials, per_seed
    >>> t = Trials(pd.DataFrame({"seed": [0, 0, 1, 1], "error": [0.1, 0.2, 0.1, 0.3]}))
    >>> c = judge("low-error", "The error is low", "here", per_seed(lambda g: g.error.mean()), t,
    ...           margin=0.5, direction="below", effect="mean error", n_boot=50)
    >>> c["verdict"]
    'supported'
    """
    est, ci, undefined = bootstrap(stat, trials, n_boot=n_boot, seed=boot_seed, scale=scale)
    parts = list(trials.values() if isinstance(trials, Mapping) else [trials])
    seeds = _seeds(*parts)
    requires = [*requires, *extra,
                (len(seeds) >= 2, "one training seed: the interval covers the test examples and draws of one trained "
                                  "net, not the variation between training runs; run two or more seeds")]
    return make_claim(cid, statement, source, estimate=est, ci=ci, margin=margin, direction=direction, effect=effect,
                      seeds=seeds, paper=paper_entry(paper_key or cid), measured=measured, requires=requires,
                      undefined=undefined)


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
