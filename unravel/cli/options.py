"""What every command shares: the parser whose usage errors are one line, the option types that
check one value as argparse reads it, and how a frame is written. The model and data options are
:mod:`~unravel.cli.loading`'s.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .._utils import MAX_INT64
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
MAX_COUNT = MAX_INT64


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


def _write(frame, out):
    from .._io import write_atomic

    if out:  # a temporary file, then moved: a failing write saves the frame elsewhere and says where
        write_atomic(out, lambda tmp: frame.to_csv(tmp, index=False), "frame")
        print(f"wrote {out}")
    else:
        print(frame.to_string(index=False))
