"""The quickstart: small versions of the Veit, norm-preservation and shallow-subnetworks-first
studies in one run, each with the quickstart's data and training unless its sub-spec says
otherwise; their files prefixed with the study's name. It checks no claim of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from unravel.study import get_kind, parse_spec, register_kind
from unravel.study.schema import join, keys
from unravel.study.spec import merge

__all__ = ["QuickstartAnalysis", "QUICKSTART_STUDIES", "run_quickstart"]

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
                sub = merge(inherited, keys(value[kind], join(path, kind), SUBSTUDY_KEYS))
                studies[kind] = parse_spec({**sub, "name": kind, "kind": kind}, join(path, kind))
        return cls(studies)



def run_quickstart(ctx) -> list:
    """Small versions of the other studies in one run, their files prefixed with the study's name."""
    claims = []
    for kind, spec in ctx.analysis.studies.items():
        got = get_kind(kind).run(ctx.sub(spec, prefix=kind))
        for c in got:
            c["study"] = kind
        claims += got
    return claims


register_kind("quickstart", analysis=QuickstartAnalysis)(run_quickstart)
