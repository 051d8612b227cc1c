"""Study folders: where studies are found, and loading a study's code on first use.

A study is a folder holding its YAML spec(s) and, when it defines its own kind, a Python package
(``__init__.py``) that registers the kind (:func:`~unravel.study.register_kind`) and its papers
(:func:`~unravel.study.register_paper`) when imported. The studies shipped with unravel live in
the package ``unravel.studies`` (the repository's ``studies/``); a user's folder plugs in the
same way. This module knows no study by name and does not check what a study's code does.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib import resources
from pathlib import Path

__all__ = ["STUDY_DIRS", "list_studies", "study_folders", "load_study", "load_all_studies"]

#: Folders of studies, searched in this order: each holds one folder per study (a loose YAML
#: spec directly inside counts too). The studies shipped with unravel come first (found through
#: :mod:`importlib.resources`, so also in a wheel); append a folder to add your own.
STUDY_DIRS: list = [resources.files("unravel.studies")]

_LOADED: dict[str, object] = {}


def _as_path(folder):
    return folder if hasattr(folder, "iterdir") else Path(folder)


def study_folders() -> list:
    """The study folders in :data:`STUDY_DIRS`, in search order (each sorted by name).

    Examples
    --------
    >>> from unravel.study import study_folders
    >>> [f.name for f in study_folders()][:2]
    ['lm_ensemble', 'norm_preservation']
    """
    out = []
    for root in STUDY_DIRS:
        root = _as_path(root)
        if root.is_dir():
            out += [p for p in sorted(root.iterdir(), key=lambda p: p.name)
                    if p.is_dir() and not p.name.startswith(("_", "."))]
    return out


def list_studies() -> dict:
    """The named studies: name -> spec file, for every YAML spec in a study folder (or loose in
    a folder of :data:`STUDY_DIRS`); the first of a name wins.

    Examples
    --------
    >>> from unravel.study import list_studies
    >>> sorted(list_studies())
    ['lm-ensemble', 'lm-ensemble-gpu', 'norm-preservation', 'quickstart', 'ssf-dynamics', 'veit-lesion', 'veit-lesion-mnist', 'veit-paths']
    """
    found: dict = {}
    folders = [_as_path(r) for r in STUDY_DIRS] + study_folders()
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.iterdir(), key=lambda p: p.name):
                if p.name.endswith(".yaml") and p.is_file():
                    found.setdefault(p.name[:-len(".yaml")], p)
    return found


def load_study(folder):
    """Import the code of the study folder ``folder`` once, registering its kinds and papers;
    None if the folder holds no package (its specs use kinds registered elsewhere).

    A folder of the shipped studies is imported as ``unravel.studies.<folder>``; any other as a
    package of its own, named after its path, so that its modules may import each other
    relatively.

    Examples
    --------
    >>> from unravel.study import KINDS, load_study, study_folders
    >>> veit = [f for f in study_folders() if f.name == "veit"][0]
    >>> load_study(veit).__name__, "veit-paths" in KINDS
    ('unravel.studies.veit', True)
    """
    folder = _as_path(folder)
    init = folder / "__init__.py"
    if not init.is_file():
        return None
    key = str(folder)
    if key in _LOADED:
        return _LOADED[key]
    shipped = _as_path(STUDY_DIRS[0]) if STUDY_DIRS else None
    if shipped is not None and str(folder.parent) == str(shipped):
        module = importlib.import_module(f"unravel.studies.{folder.name}")
    else:
        name = f"unravel_study_{folder.name}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, str(init), submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    _LOADED[key] = module
    return module


def load_all_studies() -> None:
    """Load the code of every study folder (what a lookup of an unknown kind does).

    Examples
    --------
    >>> from unravel.study import kind_names, load_all_studies
    >>> load_all_studies()
    >>> "lm-ensemble" in kind_names()
    True
    """
    for folder in study_folders():
        load_study(folder)
