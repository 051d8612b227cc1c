"""Print pip constraints that pin every direct requirement of unravel (``install_requires`` and the
extras named on the command line) to the lowest version setup.cfg allows: the `make test-oldest`
install. Transitive requirements stay free (pip takes their newest), as ``uv pip install
--resolution lowest-direct`` would.

Usage: ``python tools/lowest.py test > constraints.txt``
"""

import configparser
import re
import sys
from pathlib import Path

SETUP = Path(__file__).resolve().parent.parent / "setup.cfg"


def requirements(extras):
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(SETUP)
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += cfg["options.extras_require"][extra].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("%(")]


def lowest(requirement):
    """``name==low`` for ``name>=low[,<high]``; None where no lower bound is given."""
    m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    name, spec = m.group(1), m.group(3)
    low = re.search(r">=\s*([^,;\s]+)", spec)
    return f"{name}=={low.group(1)}" if low else None


if __name__ == "__main__":
    pins = {}
    for req in requirements(sys.argv[1:]):
        pin = lowest(req)
        if pin:
            pins[pin.split("==")[0].lower()] = pin
    print("\n".join(sorted(pins.values())))
