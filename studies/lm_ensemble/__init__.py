"""The lm-ensemble study: is a language model trained here an ensemble of shallow paths? Claims
from Lad et al. 2024, Gromov et al. 2024 and Veit et al. 2016, tested on a GPT-2.

Kind ``lm-ensemble``; specs ``lm-ensemble`` (CPU) and ``lm-ensemble-gpu``. Loading the study
registers the kind and the papers' entries (and the Veit study's, whose claims it shares).
"""

from unravel.study import register_kind, register_paper

from .claims import PAPERS
from .measure import LmEnsembleAnalysis, layer_groups, run_lm_ensemble

__all__ = ["LmEnsembleAnalysis", "layer_groups", "run_lm_ensemble"]

for _cid, _entry in PAPERS.items():
    register_paper(_cid, **_entry)
register_kind("lm-ensemble", roles=("lm",), analysis=LmEnsembleAnalysis)(run_lm_ensemble)
