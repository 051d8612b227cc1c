"""Studies: a YAML spec in, a results folder out, with a verdict per published claim computed
from the measured data.

This package is the framework; it knows no study by name. The studies themselves live in
``studies/`` (installed as ``unravel.studies``), one folder per study with its spec(s), its
measurements and its claims; a study's code is loaded the first time its kind is asked for
(:mod:`~unravel.study.folders`), and a user's own study folder plugs in the same way.

A spec names a study ``kind`` (one of :data:`KINDS`), data, models, training and analysis
settings (:mod:`~unravel.study.spec` checks every field before anything runs); :func:`run_study`
trains, measures, writes tidy CSVs, figures (PNG and SVG), ``summary.json``, ``report.md``, the
resolved ``config.yaml`` and ``environment.json``. Each verdict is a plain function of tidy frames
(a study's ``claim_*``, built on :func:`judge`), so it can be checked on synthetic data. This package does not check that a study's
models are large or trained long enough for a claim to be meaningful; the report states the
settings next to every verdict.

Examples
--------
>>> from unravel import study
>>> spec = study.load_spec("veit-lesion", quick=True)
>>> spec["kind"], sorted(spec["models"])
('veit-lesion', ['plain', 'residual', 'residual_conv'])
"""

from ..errors import SpecError
from ..models.registry import BUILDERS as MODEL_BUILDERS
from .claims import PAPERS, check_columns, judge, register_paper
from .environment import environment, source_hash
from .folders import STUDY_DIRS, list_studies, load_all_studies, load_study, study_folders
from .kinds import KINDS, Kind, get_kind, kind_names, register_kind
from .runner import Context, build_model, load_data, run_study
from .spec import DataSpec, ModelSpec, StudySpec, TrainSpec, apply_quick, load_spec, parse_spec, validate_spec
from .intervals import Interval, bootstrap
from .prereg import parse_claims, preregistration_hash, preregistration_record, write_preregistration
from .stats import Trials, per_seed, subset, trials_from
from .verdicts import VERDICTS, decide, holm, make_claim

__all__ = ["run_study", "load_spec", "list_studies", "SpecError", "KINDS", "MODEL_BUILDERS", "STUDY_DIRS",
           "build_model", "load_data", "validate_spec", "parse_spec", "apply_quick", "environment", "source_hash",
           "register_kind", "get_kind", "kind_names", "Kind", "Context", "StudySpec", "DataSpec", "ModelSpec",
           "TrainSpec", "study_folders", "load_study", "load_all_studies",
           "Trials", "trials_from", "subset", "bootstrap", "Interval", "per_seed", "decide", "VERDICTS", "holm",
           "make_claim", "parse_claims", "preregistration_hash", "preregistration_record", "write_preregistration",
           "register_paper", "judge", "check_columns", "PAPERS"]
