"""Studies: a YAML spec in, a results folder out, with a verdict per published claim computed
from the measured data.

A spec names a study ``kind`` (one of :data:`KINDS`), data, models, training and analysis
settings (:mod:`~unravel.study.spec` checks every field before anything runs); :func:`run_study`
trains, measures, writes tidy CSVs, figures (PNG and SVG), ``summary.json``, ``report.md``, the
resolved ``config.yaml`` and ``environment.json``. Each verdict is a plain function of tidy frames
(``claim_*``), so it can be checked on synthetic data. This package does not check that a study's
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
from . import experiments, lm_ensemble, norm, ssf  # noqa: F401  (register the built-in kinds)
from .claims import *  # noqa: F401,F403
from .claims import __all__ as _claims_all
from .lm_claims import *  # noqa: F401,F403
from .lm_claims import __all__ as _lm_claims_all
from .norm_claims import *  # noqa: F401,F403
from .norm_claims import __all__ as _norm_claims_all
from .ssf_claims import *  # noqa: F401,F403
from .ssf_claims import __all__ as _ssf_claims_all
from .stats import VERDICTS, Trials, bootstrap, decide
from .kinds import KINDS, Kind, kind_names, register_kind
from .runner import Context, build_model, environment, load_data, run_study
from .spec import (STUDY_DIRS, DataSpec, ModelSpec, StudySpec, TrainSpec, apply_quick, list_studies, load_spec,
                   parse_spec, validate_spec)

__all__ = ["run_study", "load_spec", "list_studies", "SpecError", "KINDS", "MODEL_BUILDERS", "STUDY_DIRS",
           "build_model", "load_data", "validate_spec", "parse_spec", "apply_quick", "environment",
           "register_kind", "kind_names", "Kind", "Context", "StudySpec", "DataSpec", "ModelSpec", "TrainSpec",
           "Trials", "bootstrap", "decide", "VERDICTS", *_claims_all, *_lm_claims_all, *_norm_claims_all,
           *_ssf_claims_all]
