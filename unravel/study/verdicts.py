"""Three-valued verdicts from an interval, the claim record, and Holm's correction per study.

A claim says its effect lies above (or below, or within) a stated margin. It is *supported* when
the whole interval lies on the claimed side, *contradicted* when the whole interval lies on the
other side, and *inconclusive* otherwise: when the interval contains the margin, the effect is
undefined on the data, a precondition fails (a net that did not train, too small a scale, one
seed), or the interval has zero width (no variation measured: an interval that cannot move
cannot decide anything).

A **check** is a record of the same form for what holds by construction or tests only a sign:
it is reported and must pass, but it is not evidence for a paper; reports list it apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ArgumentError

__all__ = ["VERDICTS", "decide", "make_claim", "zero_width", "holm", "p_values", "clean"]

#: The three verdicts a claim can get.
VERDICTS = ("supported", "contradicted", "inconclusive")


def zero_width(ci, estimate: float | None = None) -> bool:
    """Whether ``ci`` is a single point (to rounding): no variation was measured.

    Examples
    --------
    >>> from unravel.study.verdicts import zero_width
    >>> zero_width([1.0, 1.0]), zero_width([1.19e-7, 1.19e-7]), zero_width([0.1, 0.2])
    (True, True, False)
    """
    lo, hi = (float(v) for v in ci)
    if math.isnan(lo) or math.isnan(hi):
        return False
    scale = max(abs(lo), abs(hi), abs(estimate or 0.0), 1e-12)
    return hi - lo <= 1e-9 * scale


def decide(estimate: float, ci, margin: float, direction: str) -> str:
    """The verdict on "the effect lies ``direction`` ``margin``" from its interval
    (``"within"``: the effect lies between ``-margin`` and ``margin``, an equivalence claim).
    A zero-width interval decides nothing.

    Examples
    --------
    >>> from unravel.study.verdicts import decide
    >>> decide(0.3, [0.2, 0.4], 0.1, "above"), decide(0.3, [0.2, 0.4], 0.5, "above")
    ('supported', 'contradicted')
    >>> decide(0.3, [0.05, 0.4], 0.1, "above"), decide(float("nan"), [0, 1], 0.1, "below")
    ('inconclusive', 'inconclusive')
    >>> decide(1.0, [1.0, 1.0], 0.5, "above")
    'inconclusive'
    """
    if direction not in ("above", "below", "within"):
        raise ArgumentError(f"direction={direction!r}; allowed: above, below, within.")
    lo, hi = (float(v) for v in ci)
    if any(math.isnan(v) for v in (estimate, lo, hi)) or zero_width(ci, estimate):
        return "inconclusive"
    if direction == "within":  # equivalence: the effect lies in (-margin, margin)
        if -margin < lo and hi < margin:
            return "supported"
        return "contradicted" if lo > margin or hi < -margin else "inconclusive"
    above, below = lo > margin, hi < margin
    if direction == "above":
        return "supported" if above else "contradicted" if below else "inconclusive"
    return "supported" if below else "contradicted" if above else "inconclusive"


def clean(v):
    """``v`` with numpy numbers made plain and non-finite floats made None (JSON null).

    Examples
    --------
    >>> from unravel.study.verdicts import clean
    >>> clean({"a": float("nan"), "b": [1.5]})
    {'a': None, 'b': [1.5]}
    """
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return clean(v.item())
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def p_values(interval, margin: float, direction: str) -> tuple[float, float]:
    """``(p_supported, p_contradicted)``: one-sided p-values against the claim's side and the
    other side of ``margin``, from the interval's own t statistic (see
    :func:`~unravel.study.intervals.tail_p_value`); for ``"within"`` the larger of the two
    one-sided tests of each side (and the smaller for lying outside).

    Examples
    --------
    >>> import numpy as np
    >>> from unravel.study.intervals import Interval
    >>> from unravel.study.verdicts import p_values
    >>> r = Interval(0.3, [0.2, 0.4], 0.0, [0.25, 0.3, 0.35], np.zeros(1), 0.02, 2)
    >>> sup, con = p_values(r, 0.1, "above")
    >>> sup < 0.025 < con
    True
    """
    from .intervals import tail_p_value

    if direction == "within":
        inside = max(tail_p_value(interval, -margin, "above"), tail_p_value(interval, margin, "below"))
        outside = min(tail_p_value(interval, margin, "above"), tail_p_value(interval, -margin, "below"))
        return inside, outside
    other = "below" if direction == "above" else "above"
    return tail_p_value(interval, margin, direction), tail_p_value(interval, margin, other)


def make_claim(cid: str, statement: str, source: str, *, estimate: float, ci, margin: float, direction: str,
               effect: str, seeds, paper: dict | None = None, measured: dict | None = None,
               requires: Sequence[tuple[bool, str]] = (), undefined: float = 0.0, level: float = 0.95,
               range=None, p=(math.nan, math.nan), check: bool = False) -> dict:  # noqa: A002
    """A claim's record: its effect, range, interval, margin, rule, the paper's figure and the
    verdict; ``check=True`` makes it a check (``"kind": "check"``) rather than a claim.

    ``requires`` lists preconditions ``(ok, reason)``: if one fails, the verdict is inconclusive
    and ``why`` gives the reason. ``p`` holds the bootstrap p-values Holm's correction uses
    (:func:`holm`). Non-finite numbers are written as None (JSON null).

    Examples
    --------
    >>> from unravel.study.verdicts import make_claim
    >>> c = make_claim("x", "X is small", "a paper", estimate=0.01, ci=[0.0, 0.02], margin=0.05,
    ...                direction="below", effect="error increase", seeds=[0, 1], range=[0, 1])
    >>> c["verdict"], c["range"], c["kind"]
    ('supported', [0, 1], 'claim')
    >>> c["rule"]
    'supported if the 95% interval of error increase lies below 0.05, contradicted if it lies above'
    """
    verdict = decide(estimate, ci, margin, direction)
    if direction == "within":
        rule = (f"supported if the {level:.0%} interval of {effect} lies within (-{margin:g}, {margin:g}), "
                f"contradicted if it lies wholly outside")
        why = {"supported": "the whole interval lies within the margins",
               "contradicted": "the whole interval lies outside the margins",
               "inconclusive": "the interval crosses a margin"}[verdict]
    else:
        other = "above" if direction == "below" else "below"
        rule = (f"supported if the {level:.0%} interval of {effect} lies {direction} {margin:g}, contradicted if it "
                f"lies {other}")
        why = {"supported": f"the whole interval lies {direction} the margin",
               "contradicted": f"the whole interval lies {other} the margin",
               "inconclusive": "the interval contains the margin"}[verdict]
    if math.isnan(float(estimate)):
        why = f"{effect} is undefined on this data"
    elif any(math.isnan(float(v)) for v in ci):
        why = f"{effect} is undefined in {undefined:.0%} of the bootstrap resamples"
    elif zero_width(ci, estimate):
        why = "no variation measured: the interval has zero width, so it cannot decide the claim"
    failed = [reason for ok, reason in requires if not ok]
    if failed:
        verdict, why = "inconclusive", "; ".join(failed)
    p_sup, p_con = (1.0, 1.0) if verdict == "inconclusive" and (failed or zero_width(ci, estimate)) else p
    return clean({"id": cid, "kind": "check" if check else "claim", "statement": statement, "source": source,
                  "effect": effect, "range": None if range is None else list(range), "estimate": float(estimate),
                  "ci": [float(v) for v in ci], "level": level, "margin": margin, "direction": direction,
                  "paper": paper, "seeds": list(seeds), "rule": rule, "verdict": verdict, "why": why,
                  "p": {"supported": p_sup, "contradicted": p_con}, "measured": dict(measured or {})})


def _holm_adjust(ps):
    order = np.argsort(ps, kind="stable")
    m, out, running = len(ps), np.empty(len(ps)), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * ps[j]))
        out[j] = running
    return out


def holm(claims: list, level: float = 0.95) -> list:
    """Add ``verdict_holm`` to each claim (not to checks): the verdict when the bootstrap
    p-values of a study's claims are adjusted with Holm's step-down method, separately for
    "supported" and "contradicted", each at the one-sided ``(1 - level) / 2`` of the intervals.
    A claim inconclusive before is inconclusive after. Returns ``claims``.

    Examples
    --------
    >>> from unravel.study.verdicts import holm
    >>> cs = [{"kind": "claim", "verdict": "supported", "p": {"supported": p, "contradicted": 1.0}}
    ...       for p in (0.001, 0.015, 0.02)]
    >>> [c["verdict_holm"] for c in holm(cs)]
    ['supported', 'inconclusive', 'inconclusive']
    """
    alpha = (1 - level) / 2
    real = [c for c in claims if c.get("kind", "claim") == "claim"]
    if not real:
        return claims

    def pv(c, key):
        v = (c.get("p") or {}).get(key)
        return 1.0 if v is None or c["verdict"] == "inconclusive" else float(v)

    sup = _holm_adjust(np.array([pv(c, "supported") for c in real]))
    con = _holm_adjust(np.array([pv(c, "contradicted") for c in real]))
    for c, ps, pc in zip(real, sup, con):
        c["verdict_holm"] = ("supported" if c["verdict"] == "supported" and ps < alpha else
                             "contradicted" if c["verdict"] == "contradicted" and pc < alpha else "inconclusive")
        c["p_holm"] = {"supported": float(ps), "contradicted": float(pc)}
    return claims
