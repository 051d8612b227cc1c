"""The shallow-subnetwork-first study: "Shallow subnetwork first" (Neural Networks 148, 2022),
measured over the training of nets trained here.

Kind and spec ``ssf-dynamics``: random subnetworks' errors, shallow nets trained alone, and the
gradient's path-length histograms over training, for a ResNet against a DenseNet and an
SE-ResNet. Loading the study registers the kind and the paper's entries.
"""

from unravel.study import register_kind, register_paper

from .claims import PAPERS
from .measure import SsfDynamicsAnalysis, run_ssf_dynamics

__all__ = ["SsfDynamicsAnalysis", "run_ssf_dynamics"]

for _cid, _entry in PAPERS.items():
    register_paper(_cid, **_entry)
register_kind("ssf-dynamics", roles=("resnet",), optional_roles=("densenet", "se_resnet"),
              analysis=SsfDynamicsAnalysis)(run_ssf_dynamics)
