"""The locked install: the lock pins every requirement of setup.cfg at a version setup.cfg allows
(a lock that drifted from setup.cfg would install something the bounds exclude, or leave a
requirement free), and ``tools/lowest.py`` pins each direct requirement at its lower bound."""

import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock-py311.txt"


def _setup_requirements():
    """Every requirement of setup.cfg (install_requires and every extra), as tools/lowest.py reads them."""
    spec = importlib.util.spec_from_file_location("lowest", ROOT / "tools" / "lowest.py")
    lowest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lowest)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    return [Requirement(line) for line in lowest.requirements(list(cfg["options.extras_require"]))]


def _lock():
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = Version(m.group(2))
    return pins


def test_the_lock_pins_every_requirement_within_setup_cfg():
    pins = _lock()
    assert pins, f"{LOCK} pins nothing"
    for req in _setup_requirements():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} is in setup.cfg but not in the lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"the lock pins {req.name}=={pins[name]}, outside setup.cfg's {req}: run `make lock`"


def test_the_lock_holds_pytorch_at_the_pinned_release():
    pins = _lock()
    for line in (ROOT / "requirements" / "pins.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert req.specifier.contains(pins[req.name.lower()]), (req, pins[req.name.lower()])


def test_lowest_pins_each_direct_requirement_at_its_lower_bound():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "lowest.py"), "test"], capture_output=True,
                         text=True, check=True).stdout.split()
    pins = dict(line.split("==") for line in out)
    reqs = {r.name: r for r in _setup_requirements()}
    for name, low in pins.items():
        spec = reqs[name].specifier
        assert spec.contains(low, prereleases=True)
        assert any(s.operator == ">=" and Version(s.version) == Version(low) for s in spec)
    assert {"torch", "transformers", "timm", "torchvision"} <= set(pins)
