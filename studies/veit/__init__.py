"""The Veit studies: "Residual Networks Behave Like Ensembles of Relatively Shallow Networks"
(Veit, Wilber & Belongie, NeurIPS 2016), measured on nets trained here.

Kinds ``veit-lesion`` (Sec. 4, Fig. 3 and 5: lesions) and ``veit-paths`` (Sec. 5, Fig. 6: path
lengths and the gradient per length); specs ``veit-lesion``, ``veit-lesion-mnist`` and
``veit-paths``. Loading the study registers both kinds and the paper's entries.

Examples
--------
>>> from unravel.study import get_kind
>>> get_kind("veit-lesion").roles, get_kind("veit-paths").analysis.__name__
(('residual', 'plain'), 'VeitPathsAnalysis')
"""

from unravel.study import register_kind, register_paper

from .lesion import run_lesion
from .papers import PAPERS
from .paths import run_paths
from .settings import VeitLesionAnalysis, VeitPathsAnalysis

__all__ = ["run_lesion", "run_paths", "VeitLesionAnalysis", "VeitPathsAnalysis"]

for _cid, _entry in PAPERS.items():
    register_paper(_cid, **_entry)
register_kind("veit-lesion", roles=("residual", "plain"), optional_roles=("residual_conv",),
              analysis=VeitLesionAnalysis)(run_lesion)
register_kind("veit-paths", roles=("residual",), analysis=VeitPathsAnalysis)(run_paths)
