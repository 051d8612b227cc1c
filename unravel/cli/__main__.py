"""``python -m unravel.cli``: the command line (what the ``unravel`` console script runs)."""

import sys

from . import main

sys.exit(main())
