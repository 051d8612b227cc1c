"""What every command shares: the parser whose usage errors are one line, the option types that
check one value as argparse reads it, and how a frame is written. The model and data options are
:mod:`~unravel.cli.loading`'s.
"""

from __future__ import annotations

import argparse
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


def _count(minimum: int):
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give an integer >= {minimum}")
        return value
    return count


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number > 0")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number >= 0")
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
    """A file to write: its folder must exist (checked now, not after the work is done)."""
    if not Path(text).resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: its folder does not exist")
    return text


def _write(frame, out):
    if out:
        frame.to_csv(out, index=False)
        print(f"wrote {out}")
    else:
        print(frame.to_string(index=False))
