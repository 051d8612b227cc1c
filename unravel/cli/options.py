"""What every command shares: the parser whose usage errors are one line, the option types that
check one value as argparse reads it, and the model, data and output options.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import ArgumentError

__all__: list = []


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are :class:`ArgumentError`, so that they read like
    every other mistake: one line, exit status 2."""

    def error(self, message):
        raise ArgumentError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------------------------------
# Option types: each checks one value as argparse reads it

#: The largest integer an option takes (seeds and sizes must fit a 64-bit integer).
MAX_COUNT = 2**63 - 1


def _count(minimum: int):
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not minimum <= value <= MAX_COUNT:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give an integer >= {minimum} (and < 2**63)")
        return value
    return count


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a finite number > 0")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a finite number >= 0")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number strictly between 0 and 1")
    return value


def _ks(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers "
                                         "(such as 1,2,4,8)")
    return ks


def _model_name(text: str) -> str:
    """A registered model name or a model string (checked when the model is built)."""
    from ..models.registry import model_names

    if text not in model_names() and ":" not in text:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; available: {', '.join(model_names())}, or "
                                         "torchvision:NAME, timm:NAME, hf:CONFIG_OR_DIR, package.module:factory")
    return text


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file at {text!r}")
    return text


def _new_file(text: str) -> str:
    """A file to write: its folder must exist and be writable, and it must not be a folder
    (checked now, not after the work is done)."""
    from .._io import check_file

    if not Path(text).resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: its folder does not exist")
    try:
        check_file(text)
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# ------------------------------------------------------------------------------------------
# Data and models from the options


def _model_options(args) -> dict:
    """The model's keyword arguments from ``--depth`` and ``--width``, checked against the
    registry before anything is built."""
    from ..models import registry

    entry = registry.model_entry(args.model)
    options = {}
    depth = args.depth if args.depth is not None else entry.depth
    if depth is not None:
        options["depth"] = depth
    if args.width is not None:
        if entry.width is None:
            raise ArgumentError(f"--width: model {args.model!r} has no width to set")
        options[entry.width] = args.width
    registry.check_model_arguments(args.model, options, complete=False)
    return options


def _check_data(args) -> None:
    from .. import data

    if args.data in data.ROOTED and not args.data_root:
        raise ArgumentError(f"dataset {args.data!r} needs --data-root, the folder of its local files")


def _data(args):
    from .. import study

    return study.load_data({"data": args.data, "data_root": args.data_root})


def _model(args, d, options):
    import torch

    from ..models import build_model

    torch.manual_seed(args.seed)
    return build_model(args.model, d, **options)


def _prepare(args, model, d) -> None:
    """Load the weights of ``--checkpoint``, or train for ``--epochs``."""
    from .. import train

    if args.checkpoint:
        train.load(args.checkpoint, model)
    elif args.epochs:
        print(f"training {args.model} on {d.name} for {args.epochs} epochs", file=sys.stderr)
        train.fit(model, d, epochs=args.epochs, optimizer="adam", lr=3e-3, seed=args.seed,
                  progress=not args.no_progress)


def _setup(args):
    """Check the model and data options, then load the data and build the model (untrained)."""
    options = _model_options(args)
    _check_data(args)
    d = _data(args)
    return d, _model(args, d, options)


def _write(frame, out):
    from .._io import write_atomic

    if out:  # a temporary file, then moved: a failing write saves the frame elsewhere and says where
        write_atomic(out, lambda tmp: frame.to_csv(tmp, index=False), "frame")
        print(f"wrote {out}")
    else:
        print(frame.to_string(index=False))


# ------------------------------------------------------------------------------------------
# Commands


def _model_args(q, epochs: int | None) -> None:
    from ..data import DATASETS
    from ..models.registry import model_names

    names = model_names()
    q.add_argument("--model", default="resnet_cifar", type=_model_name, metavar="NAME",
                   help=f"{', '.join(names)} (default resnet_cifar), or a model of yours: torchvision:NAME, "
                        "timm:NAME, hf:CONFIG_OR_DIR, package.module:factory")
    q.add_argument("--depth", type=_count(1), default=None,
                   help="depth (default: the model's; 20 for the CIFAR nets, 22 for densenet_bc)")
    q.add_argument("--width", type=_count(1), default=None, help="width (growth rate for densenet_bc)")
    q.add_argument("--data", default="mnist1d", choices=list(DATASETS), metavar="NAME",
                   help=f"{', '.join(DATASETS)} (default mnist1d)")
    q.add_argument("--data-root", default=None, help="folder of local data files (mnist, cifar10)")
    q.add_argument("--seed", type=_count(0), default=0)
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    if epochs is not None:
        q.add_argument("--epochs", type=_count(0), default=epochs, help=f"training epochs first (default {epochs})")
        q.add_argument("--checkpoint", type=_existing_file, default=None,
                       help="load weights from this checkpoint (written by `unravel train --save`) instead of training")
