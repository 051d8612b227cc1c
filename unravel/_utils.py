"""Small helpers shared across unravel: inputs as tuples, a model's device, saving and restoring
modes, random generators, and argument checks with messages that name what is allowed.

Private: nothing here is public API.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import ArgumentError, ArgumentTypeError


def as_tuple(inputs: Any) -> tuple:
    """``inputs`` as a tuple of positional arguments (a lone tensor becomes a 1-tuple)."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model's output, by one rule: a tensor is the logits; otherwise the
    ``logits`` attribute or key (Hugging Face ``ModelOutput`` s, dicts); otherwise the first
    element of a tuple or list.

    Examples
    --------
    >>> import torch
    >>> logits_of({"logits": torch.ones(2, 3), "loss": torch.tensor(0.)}).shape
    torch.Size([2, 3])
    >>> logits_of((torch.zeros(4, 2), None)).shape
    torch.Size([4, 2])
    """
    if torch.is_tensor(out):
        return out
    found = getattr(out, "logits", None)
    if found is None and isinstance(out, dict):
        found = out.get("logits")
    if found is None and isinstance(out, (tuple, list)) and out:
        found = out[0]
    if not torch.is_tensor(found):
        raise ArgumentTypeError(f"cannot read logits from a {type(out).__name__}: a model's output must be a tensor, "
                                "have a 'logits' attribute or key, or be a tuple whose first element is the logits "
                                "(or give loss=... that reads it).")
    return found


def model_device(model: nn.Module, device=None) -> torch.device:
    """``device`` when given, else where the model's first parameter (or buffer) lives, else CPU;
    checked by :func:`check_device`."""
    if device is not None:
        return check_device(device)
    first = None
    for t in (*model.parameters(), *model.buffers()):
        if t.device.type != "meta":
            return check_device(t.device, "the model's device")
        first = t if first is None else first
    if first is None:
        return torch.device("cpu")
    # every weight on the meta device: offloaded by accelerate (its hooks bring the weights in on
    # the execution device), or a model without values, which check_device refuses
    return check_device(_execution_device(model) or first.device, "the model's device")


def _execution_device(model: nn.Module):
    """The execution device of accelerate's offload hooks on ``model`` (``cpu_offload``,
    ``dispatch_model``), or None."""
    for m in model.modules():
        hook = getattr(m, "_hf_hook", None)
        for h in (hook, *getattr(hook, "hooks", ())):
            device = getattr(h, "execution_device", None)
            if device is not None:
                return device
    return None


def check_device(device, name: str = "device") -> torch.device:
    """``device`` as a torch.device that can hold numbers here: a device torch knows, not ``meta``
    (it holds shapes, not values), and CUDA only where torch sees it.

    Examples
    --------
    >>> from unravel._utils import check_device
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("meta")
    Traceback (most recent call last):
    ...
    unravel.errors.ArgumentError: device 'meta' holds shapes, not numbers: ...
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ArgumentError(f"{name}={device!r} is not a torch device; give cpu, cuda or cuda:N.") from None
    if device.type == "meta":
        raise ArgumentError(f"device 'meta' holds shapes, not numbers: unravel measures values, so {name} must be a "
                            "real one (cpu, cuda). Load the model's weights onto it first "
                            "(model.to_empty(device=...) then load_state_dict).")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"{name} {str(device)!r} was asked for but torch sees no CUDA device here; give cpu.")
    return device


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
                 open_low: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite float within its bounds (``open_low``: strictly above ``minimum``);
    NaN, infinities, bools and strings are refused.

    Examples
    --------
    >>> from unravel._utils import check_number
    >>> check_number("lr", 1e-3, 0, open_low=True)
    0.001
    >>> check_number("lr", float("inf"), 0, open_low=True)
    Traceback (most recent call last):
    ...
    unravel.errors.ArgumentError: lr=inf must be a finite number > 0.
    """
    if value is None and allow_none:
        return None
    if torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    what = f"a finite number{' > ' if open_low else ' >= '}{minimum}" if minimum is not None else "a finite number"
    what += f" and <= {maximum}" if maximum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name}={value!r} must be {what}.")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and (value < minimum or open_low and value == minimum)) \
            or (maximum is not None and value > maximum):
        raise ArgumentError(f"{name}={value!r} must be {what}.")
    return value


@contextlib.contextmanager
def saved_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag on exit (a frozen BN inside a training model
    stays in eval mode), also through an exception."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, flag in modes:
            m.training = flag


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside; every submodule's flag restored on exit."""
    with saved_modes(model):
        model.eval()
        yield model


def rows_of(value, rows, batch: int):
    """``value`` with every tensor whose first dimension is ``batch`` long cut to ``rows`` (inside
    tuples, lists and dicts too); anything else unchanged: a unit's keyword tensors for a subset
    of the examples.

    Examples
    --------
    >>> import torch
    >>> from unravel._utils import rows_of
    >>> got = rows_of({"mask": torch.arange(4), "n": 3}, torch.tensor([1, 3]), 4)
    >>> got["mask"].tolist(), got["n"]
    ([1, 3], 3)
    """
    if torch.is_tensor(value):
        return value.index_select(0, rows) if value.dim() and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: rows_of(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(rows_of(v, rows, batch) for v in value)
    return value


def python_rng(generator) -> random.Random:
    """A ``random.Random`` from None, an int seed, a ``random.Random``, a ``torch.Generator`` or a
    ``numpy.random.Generator``."""
    if isinstance(generator, random.Random):
        return generator
    if generator is None:
        return random.Random()
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return random.Random(int(generator))
    if torch.is_tensor(generator) and generator.dim() == 0 and not generator.is_floating_point():
        return random.Random(int(generator))
    if isinstance(generator, torch.Generator):
        return random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    import numpy as np

    if isinstance(generator, np.random.Generator):
        return random.Random(int(generator.integers(0, 2**62)))
    raise ArgumentTypeError(f"generator must be None, an int seed, random.Random, torch.Generator or "
                            f"numpy.random.Generator; got {type(generator).__name__}.")


def check_choice(name: str, value: Any, allowed: Iterable) -> Any:
    """``value`` if it is one of ``allowed`` (compared with ``==`` but never ``True == 1``)."""
    allowed = tuple(allowed)
    if isinstance(value, bool) or value not in allowed or not any(type(value) is type(a) for a in allowed):
        raise ArgumentError(f"{name}={value!r} is not allowed; choose one of "
                            f"{', '.join(repr(a) for a in allowed)}.")
    return value


#: The largest integer a seed or a count may be (it must fit a 64-bit integer).
MAX_INT64 = 2**63 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as a seed: an int in ``0..2**63 - 1`` (see :func:`check_int`)."""
    return check_int(name, value, 0, MAX_INT64)


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an int within [minimum, maximum]; bools, floats and strings are refused."""
    if value is None and allow_none:
        return None
    if torch.is_tensor(value) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name}={value!r} must be an integer{_range_text(minimum, maximum)}"
                            f"{' or None' if allow_none else ''}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ArgumentError(f"{name}={value} must be an integer{_range_text(minimum, maximum)}.")
    return value


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def process_group_of(process_group=None) -> tuple[Any, int, int]:
    """``(group, rank, world size)`` of the processes that share a job: ``process_group`` if
    given; else, under ``torchrun`` (``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` set), the default group,
    joined here if need be (NCCL where CUDA is available, else gloo); else ``(None, 0, 1)``.

    Examples
    --------
    >>> process_group_of()
    (None, 0, 1)
    """
    import os

    import torch.distributed as dist

    if process_group is not None:
        return process_group, dist.get_rank(process_group), dist.get_world_size(process_group)
    if not dist.is_available():
        return None, 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        # launched under torchrun: join the job's group
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized() and dist.get_world_size() > 1:
        return None, dist.get_rank(), dist.get_world_size()
    return None, 0, 1
