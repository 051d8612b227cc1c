"""Packaging: setup.cfg names every package, and a wheel holds every study."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _packages():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return set(cfg["options"]["packages"].split())


def test_setup_cfg_names_every_package():
    found = set()
    for top, prefix in (("unravel", "unravel"), ("studies", "unravel.studies")):
        for folder, _, files in os.walk(ROOT / top):
            if "__init__.py" in files and "__pycache__" not in folder:
                rel = Path(folder).relative_to(ROOT / top)
                found.add(".".join([prefix, *rel.parts]))
    assert _packages() == found


@pytest.mark.slow
def test_a_wheel_lists_every_study(tmp_path):
    """Built into a wheel and installed (not editable), ``unravel study list`` lists every study."""
    from unravel.study import list_studies

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "whl"), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "whl").glob("unravel-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", "import unravel, sys; from unravel.cli import main; "
                          "print(unravel.__file__); sys.exit(main(['study', 'list']))"],
                         check=True, cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert out.splitlines()[0].startswith(str(tmp_path / "site"))
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == sorted(list_studies())
