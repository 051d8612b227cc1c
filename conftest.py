"""pytest: ``studies/`` is the package ``unravel.studies``. pytest's doctest collection would
import its files a second time as ``studies.*`` (registering every kind twice); each is aliased
to the module that ``unravel.studies`` loads, so a study's code runs once."""

import importlib
import pkgutil
import sys

import unravel.studies

sys.modules.setdefault("studies", unravel.studies)
for _info in pkgutil.walk_packages(unravel.studies.__path__, "unravel.studies."):
    sys.modules.setdefault("studies" + _info.name[len("unravel.studies"):], importlib.import_module(_info.name))
