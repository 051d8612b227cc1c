"""The environment of a run: versions, seed, device, git revision and a hash of the sources, what
a study's ``environment.json`` holds. It does not check that the sources are committed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["environment", "source_hash", "hash_sources"]

_PACKAGE = Path(__file__).resolve().parent.parent



def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=_PACKAGE, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_revision():
    return _git("rev-parse", "HEAD")


def _git_dirty():
    """Whether the package's own files differ from the revision (None outside a git checkout)."""
    if _git_revision() is None:
        return None
    package = str(_PACKAGE)
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", package))


def _studies_of(package: Path) -> Path:
    """The studies beside a package folder: ``unravel/studies`` when installed, else the
    checkout's top-level ``studies/``."""
    inside = package / "studies"
    return inside if inside.is_dir() else package.parent / "studies"


def source_hash(root=None) -> str:
    """A SHA-256 of the sources (every ``.py`` and ``.yaml`` file of the package ``root``,
    default ``unravel/``, and of its studies, by relative path; the studies as ``studies/...``,
    whether installed inside the package or at a checkout's top level): it identifies the code of
    a run made from a copy without git (a cluster node, a GPU machine), and
    ``docs/publish_study.py --revision`` checks it against a commit.

    Examples
    --------
    >>> from unravel.study.environment import source_hash
    >>> len(source_hash())
    64
    """
    root = Path(root) if root is not None else _PACKAGE
    studies = _studies_of(root)
    folders = [(root, ""), *([(studies, "studies/")] if studies.parent != root else [])]
    return hash_sources((prefix + str(p.relative_to(folder)).replace(os.sep, "/"), p.read_bytes())
                        for folder, prefix in folders
                        for p in folder.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()
                        and "__pycache__" not in p.parts)


def hash_sources(items) -> str:
    """SHA-256 of ``(relative path, bytes)`` pairs, in path order."""
    h = hashlib.sha256()
    for rel, data in sorted(items):
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def environment(seed, device) -> dict:
    """Versions, seed, device and git revision: what ``environment.json`` holds.

    Examples
    --------
    >>> from unravel.study import environment
    >>> env = environment(0, "cpu")
    >>> env["seed"], env["device"], env["versions"]["torch"] is not None
    (0, 'cpu', True)
    """
    versions = {}
    for pkg in ("unravel", "torch", "numpy", "pandas", "networkx", "scipy", "seaborn", "matplotlib", "mnist1d",
                "scikit-learn", "torchvision", "transformers", "timm"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "versions": versions,
            "seed": seed, "device": str(device),
            "cuda": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else None,
            "git_revision": _git_revision(), "git_dirty": _git_dirty(), "source_hash": source_hash(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
