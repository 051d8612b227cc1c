"""The norm-preservation study: "Norm-Preservation: Why Residual Networks Can Become Extremely
Deep?" (Zaeemzadeh, Rahnavard & Shah, IEEE TPAMI 43(11), 2021), measured on nets trained here.

Kind and spec ``norm-preservation``: the singular values of each unit's Jacobian, for residual,
plain and Procrustes nets (ours and the authors' bottleneck ProcResNet with their recipe) of
several depths, and the gradient-norm ratios across units. Loading the study registers the kind and the
paper's entries.
"""

from unravel.study import register_kind, register_paper

from .claims import PAPERS
from .measure import NormPreservationAnalysis, run_norm_preservation

__all__ = ["NormPreservationAnalysis", "run_norm_preservation"]

for _cid, _entry in PAPERS.items():
    register_paper(_cid, **_entry)
register_kind("norm-preservation", roles=("residual", "plain"), optional_roles=("procrustes", "procrustes_authors"),
              analysis=NormPreservationAnalysis)(run_norm_preservation)
