"""``unravel units``: print the residual units of a model."""

from __future__ import annotations

from .options import _model_name, _setup, _model_args

__all__: list = []


def _cmd_units(args):
    from .. import units

    if args.model_arg is not None:
        args.model = args.model_arg
    d, model = _setup(args)
    print(units.unit_table(model).to_string(index=False))
    return 0


def add(sub) -> None:
    """The ``units`` command's parser."""
    q = sub.add_parser("units", help="print the residual units of a model (a reference model or one of yours)")
    q.add_argument("model_arg", nargs="?", type=_model_name, metavar="MODEL",
                   help="the model (same as --model): a reference model, torchvision:NAME, timm:NAME, "
                        "hf:CONFIG_OR_DIR or package.module:factory")
    _model_args(q, None)
    q.set_defaults(func=_cmd_units)
