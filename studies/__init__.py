"""The studies shipped with unravel, one folder per study: its YAML spec(s), its measurements,
its claims. Installed as ``unravel.studies``; :mod:`unravel.study` finds them through
:data:`unravel.study.STUDY_DIRS` and loads a study's code the first time its kind is asked for.

A user's own study folder plugs in the same way (``unravel study run path/to/folder``).
"""

__all__: list = []
