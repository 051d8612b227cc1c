"""The errors unravel raises on bad input: one small hierarchy under :class:`UnravelError`.

Every error a user can cause (a wrong argument, an unsupported model, a bad spec, a results file
written by another sweep, a file that is not a checkpoint) is an :class:`UnravelError`; the CLI
prints those as one line. Anything else is a bug and keeps its traceback. Each class also derives
from the built-in exception it refines (``ValueError`` or ``TypeError``), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "UnravelError",
    "ArgumentError",
    "ArgumentTypeError",
    "UnsupportedModelError",
    "UnfaithfulAdapterError",
    "InterventionError",
    "ResultsMismatchError",
    "CheckpointError",
    "SpecError",
    "OutputError",
    "JournalError",
]


class UnravelError(Exception):
    """Base of every error unravel raises on bad input; its message says what was given, what
    is allowed and what to do.

    Examples
    --------
    >>> import unravel
    >>> try:
    ...     unravel.unravel(-1)
    ... except unravel.UnravelError as e:
    ...     print(type(e).__name__)
    ArgumentError
    """


class ArgumentError(UnravelError, ValueError):
    """An argument has a value that is not allowed (the message names it and what is)."""


class ArgumentTypeError(UnravelError, TypeError):
    """An argument has a type that is not allowed."""


class UnsupportedModelError(UnravelError, TypeError):
    """A model or block has no adapter that describes it exactly (see :func:`unravel.find_units`)."""


class UnfaithfulAdapterError(UnsupportedModelError):
    """Routing a block through its units does not reproduce the block's output (see
    :func:`unravel.verify_units`)."""


class InterventionError(ArgumentError):
    """Interventions that cannot compose: an inner computation cannot see what an outer one did."""


class ResultsMismatchError(ArgumentError):
    """A results file was written by a sweep with other settings; resuming would mix rows."""


class CheckpointError(ArgumentError):
    """A file is not a checkpoint unravel can load, or does not fit the model."""


class SpecError(ArgumentError):
    """A study spec names an unknown field or value; the message names it and what is allowed."""


class OutputError(ArgumentError):
    """A path to write results to cannot be written (checked before any work), or a late write
    failed (the message then says where the finished work was saved instead)."""


class JournalError(ResultsMismatchError):
    """A results file (a sweep's journal) is damaged, is in use by another process, or its
    fingerprint cannot be read; the message names the file and the line."""
