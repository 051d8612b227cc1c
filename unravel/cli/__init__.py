"""The ``unravel`` command line.

``unravel study run NAME|FILE|FOLDER``, ``unravel study list``, ``unravel data``, ``unravel lm train``,
``unravel demo``, and the commands on a model, one grammar for all: ``unravel COMMAND MODEL
[options]`` for ``units``, ``train``, ``lesion``, ``paths``, ``spectra`` and ``prune`` (MODEL a
reference model or ``torchvision:NAME``, ``timm:NAME``, ``hf:CONFIG_OR_DIR``,
``package.module:factory``). Every option is checked before data is loaded or a model trained. A
user's mistake (an :class:`~unravel.errors.UnravelError`, or a file the system refuses, an
``OSError``) is one line on stderr and exit status 2; anything else is a bug and keeps its
traceback. One module per command; :mod:`~unravel.cli.options` holds what they share.
"""

from __future__ import annotations

import sys

from ..errors import UnravelError
from . import data, lesion, lm, paths, prune, spectra, study, train, units
from .options import _Parser

__all__ = ["main"]


def _parser():
    from .. import __version__

    p = _Parser(prog="unravel", description="The unraveled-ensemble analysis of residual networks.")
    p.add_argument("--version", action="version", version=f"unravel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    study.add_demo(sub)
    for command in (units, train, lesion, paths, spectra, prune, data, lm, study):
        command.add(sub)
    return p


def main(argv=None) -> int:
    """Run the ``unravel`` command line; returns the exit status.

    Examples
    --------
    >>> from unravel.cli import main
    >>> main(["study", "list"])  # doctest: +ELLIPSIS
    lm-ensemble          Language models as ensembles of paths: ...
    lm-ensemble-gpu      Language models as ensembles of paths, GPU size: ...
    norm-preservation    Norm preservation: Jacobian spectra of identity and transition units over training (TPAMI 2021)
    ...
    0
    >>> main(["lesion", "--ks", "1,x"])
    2
    """
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except (UnravelError, OSError) as e:  # a user's mistake, or a file the system refused: one line
        message = str(e).strip()
        print(f"unravel: error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2
