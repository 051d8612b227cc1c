"""Sphinx configuration for unravel's documentation (built offline, warnings are errors)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import unravel  # noqa: E402

project = "unravel"
author = "the unravel developers"
copyright = "2026, the unravel developers"
release = version = unravel.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    # MathJax from the pip package, copied into _static: math renders with no network
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "public_api",  # docs/_ext: api.rst's sections, generated from unravel.__all__
]
# sphinx-mathjax-offline copies its MathJax 3 into _static/mathjax when the build ends
mathjax_path = "mathjax/tex-chtml.js"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath", "colon_fence"]
# sg_execution_times: pages left by earlier builds (see write_computation_times below)
exclude_patterns = ["_build", "_static/**", "publish_study.py", "Thumbs.db", ".DS_Store", "sg_execution_times.rst", "auto_examples/sg_execution_times.rst"]

html_theme = "furo"
html_title = f"unravel {release}"
html_static_path = ["_static"]

autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autosummary_generate = False
# numpydoc renames each docstring's numbered references ([1]_), so that the many functions
# citing Veit et al. on one API page do not collide
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    # its sg_execution_times pages load Bootstrap and DataTables from CDNs: the site stays offline
    "write_computation_times": False,
}
