"""How many examples the exact decomposition takes at a time: the memory one example needs,
measured on a one-example recording, against a budget (by default half the memory available).

The estimate counts what the recording keeps (every tensor the units' local graphs save, and the
records' own tensors), the length channels of the widest unit and the rows of the result; it is an
estimate, not a bound the allocator enforces. It does not check that the loss splits over examples
(the caller does).
"""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import ArgumentError

#: The budget, by default, as a share of the memory available when the call starts.
DEFAULT_SHARE = 0.5
#: What the estimate leaves out (allocator slack, masks kept outside autograd's saved tensors).
SLACK = 1.25


def check_budget(memory_budget):
    """``memory_budget`` as an int of bytes, or None."""
    if memory_budget is None:
        return None
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Real) or \
            not math.isfinite(memory_budget) or memory_budget < 2**20:
        raise ArgumentError(
            f"memory_budget={memory_budget!r} is not allowed: give a number of bytes of at least 1 MiB "
            f"(2**20; for example 4 * 2**30 for 4 GiB), or None to use half the memory available.")
    return int(memory_budget)


def available_bytes(device) -> int | None:
    """Memory free for this process on ``device``: on a GPU what the driver reports free plus
    what torch's allocator holds unused; on a CPU ``MemAvailable`` (Linux). None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class SavedBytes:
    """Counts the bytes autograd saves while it is active (each storage once; parameters and
    buffers, which do not grow with the batch, left out)."""

    def __init__(self, model):
        self.fixed = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
        self.seen: set[int] = set()
        self.bytes = 0

    def add(self, t):
        if torch.is_tensor(t) and t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr and ptr not in self.fixed and ptr not in self.seen:
                self.seen.add(ptr)
                self.bytes += t.untyped_storage().nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.add, lambda t: t)


def bytes_per_example(records, saved: SavedBytes, M, wrt) -> int:
    """The estimate for one example from a one-example recording: what its graphs saved, the
    records' tensors, the channels of the widest unit (up to min(n - l + 1, M + 2) channels of
    its input, and as many again while they pass it) and, for ``wrt="input"``, the M + 2 rows of
    the result."""
    for rec in records:
        for t in (rec.x, rec.s, rec.r, rec.z, rec.y):
            saved.add(t)
    n = len(records)
    widest = 0
    for l, rec in enumerate(records):
        c = min(n - l + 1, M + 2)
        widest = max(widest, (c + 2) * rec.x.numel() * rec.x.element_size())
    out = (M + 2) * records[0].x.numel() * records[0].x.element_size() if wrt == "input" else 0
    return int(SLACK * (saved.bytes + widest + out))


def examples_per_step(per_example: int, budget: int, B: int) -> int:
    """The batch size that fits ``budget`` (at least one example, at most the batch)."""
    return max(1, min(B, budget // max(1, per_example)))
