"""The recording every path-length analysis is built on, for the packages built on it (the
gradient-share pruning strategy, the path-length tracker): one forward pass recorded as per-unit
local graphs, inside :func:`unravel.intervene`, so that it sees the network active lesions
produced.

Its implementation is private to :mod:`unravel.attribution`; these names are its interface. It
does not check that the units form a chain (the decompositions do).
"""

from ._record import METHODS, MODES, WRT, Record, analysis_mode, record

__all__ = ["record", "Record", "analysis_mode", "METHODS", "MODES", "WRT"]
