"""``unravel units MODEL``: print the residual units of a model."""

from __future__ import annotations

from .loading import add_model_args, check

__all__: list = []


def _cmd_units(args):
    from .. import units
    from .loading import load_data
    from .weights import build_with_weights

    options = check(args)
    d = load_data(args)
    model, _ = build_with_weights(args, d, options)
    print(units.unit_table(model).to_string(index=False))
    return 0


def add(sub) -> None:
    """The ``units`` command's parser."""
    q = sub.add_parser("units", help="print the residual units of a model (a reference model or one of yours)")
    add_model_args(q, analyses=False)
    q.set_defaults(func=_cmd_units)
