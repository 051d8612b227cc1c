"""A frozen copy of the exact path-length decomposition as it was at revision 8db84b8 (before
issue 29), kept so that ``benchmarks/run.py`` times the old and the new code side by side in one
run. Not part of the package; not to be edited.
"""

from .exact import path_length_gradients

REVISION = "8db84b8"

__all__ = ["path_length_gradients", "REVISION"]
