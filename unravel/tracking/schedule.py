"""Which optimisation steps a tracker records at: log-spaced at the start, then every epoch. It
does not check the schedule against the training's length (steps past the end never come).
"""

from __future__ import annotations

from .._utils import check_int
from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["log_spaced_steps"]


def log_spaced_steps(steps_per_epoch: int, epochs: int, base: float = 2.0) -> list[int]:
    """Steps to record at: 0 (before training), then ``1, base, base**2, ...`` (rounded) within the
    first epoch, then the last step of every epoch.

    The start of training changes fastest, so it is sampled on a log scale; after the first epoch
    once per epoch is enough. Step ``s`` is the network after ``s`` optimisation steps (what
    :func:`unravel.train.fit` passes to ``on_step_end``).

    Examples
    --------
    >>> from unravel.tracking import log_spaced_steps
    >>> log_spaced_steps(40, 3)
    [0, 1, 2, 4, 8, 16, 32, 40, 80, 120]
    >>> log_spaced_steps(10, 2, base=3)
    [0, 1, 3, 9, 10, 20]
    """
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
    epochs = check_int("epochs", epochs, 1)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
        raise ArgumentError(f"base={base!r}: must be a number > 1 (the ratio of one record's step to the last's).")
    steps, i = {0}, 0
    while round(base ** i) < steps_per_epoch:
        steps.add(int(round(base ** i)))
        i += 1
    steps.update(e * steps_per_epoch for e in range(1, epochs + 1))
    return sorted(steps)


def _schedule(steps):
    if steps is None:
        return None
    try:
        return frozenset(check_int("steps", s, 0) for s in steps)
    except TypeError:
        raise ArgumentTypeError(f"steps must be an iterable of step numbers (0: before training); got {steps!r}.") \
            from None
