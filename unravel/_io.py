"""Writing results safely: every output path is checked writable before any work starts, and
finished work is written to a temporary file beside its destination, then moved into place, so a
reader never sees half a file; when the move (or the write) fails late, the work is saved in a
rescue folder and the error says where. Also the content hashes that fingerprints and caches
hold (weights, data). Private: the CLI, the sweeps, training and the study runner use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import ArgumentTypeError, OutputError

__all__: list = []


# ------------------------------------------------------------------------------------------
# Outputs: checked first, written atomically


def _probe_folder(folder: Path, path, what: str) -> None:
    """Raise an OutputError unless a file can be created in ``folder`` (or in the nearest folder
    above it that exists, which the write would create it in)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {what} {str(path)!r}: {str(existing)!r} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".unravel-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write {what} {str(path)!r}: the folder {str(existing)!r} is not writable "
                          f"({e.strerror or type(e).__name__}). Give a path you can write to.") from None


def check_file(path, what: str = "output file") -> Path:
    """``path`` as a Path, if a file can be written there (checked now, before any work): not a
    folder, its folder writable or creatable, an existing file writable.

    Examples
    --------
    >>> import tempfile
    >>> from unravel._io import check_file
    >>> check_file(tempfile.mkdtemp() + "/out.csv").name
    'out.csv'
    """
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise OutputError(f"cannot write {what} {str(path)!r}: it is a folder; give a file name.")
    _probe_folder(p.parent, path, what)
    if p.exists():
        try:
            with open(p, "ab"):
                pass
        except OSError as e:
            raise OutputError(f"cannot write {what} {str(path)!r}: {e.strerror or type(e).__name__}.") from None
    return p


def check_folder(path, what: str = "output folder") -> Path:
    """``path`` as a Path, if files can be written in it (it may not exist yet; its nearest existing
    parent must then be a writable folder).

    Examples
    --------
    >>> import tempfile
    >>> from unravel._io import check_folder
    >>> check_folder(tempfile.mkdtemp() + "/new/run").name
    'run'
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"cannot write {what} {str(path)!r}: it is a file; give a folder.")
    _probe_folder(p, path, what)
    return p


def write_atomic(path, write: Callable[[Path], object], what: str = "output") -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it onto ``path`` (one
    ``os.replace``): the destination holds the old file or the whole new one, never a part.
    When the write or the move fails, the work is written into a fresh rescue folder under the
    system's temporary folder instead, and an OutputError names both.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unravel._io import write_atomic
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_atomic(p, lambda tmp: tmp.write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
        return path
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        rescue = Path(tempfile.mkdtemp(prefix="unravel-rescue-")) / path.name
        write(rescue)
        raise OutputError(f"could not write {what} {str(path)!r} ({e.strerror or type(e).__name__}); the finished "
                          f"work is saved at {str(rescue)!r}.") from None


def write_text(path, text: str, what: str = "output") -> Path:
    """``text`` written to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text), what)


# ------------------------------------------------------------------------------------------
# Content hashes


def _update(h, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.device.type == "meta":
        return
    if t.numel():
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def state_hash(state) -> str:
    """A hash of a model's ``state_dict`` (or a dict of tensors): names, dtypes, shapes and bytes.

    Examples
    --------
    >>> import torch
    >>> from unravel._io import state_hash
    >>> a = torch.nn.Linear(2, 2)
    >>> state_hash(a) == state_hash(a.state_dict()), len(state_hash(a))
    (True, 16)
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        if torch.is_tensor(state[name]):
            _update(h, state[name])
    return h.hexdigest()[:16]


def _hash_value(h, value) -> None:
    if torch.is_tensor(value):
        _update(h, value)
    elif isinstance(value, (tuple, list)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _hash_value(h, v)
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _hash_value(h, value[k])
    else:
        h.update(repr(value).encode())


def data_hash(data) -> str:
    """A hash of a dataset's content: a DataSplit's splits (train, validation, test), a TensorDataset's
    tensors, a DataLoader's dataset (its items in index order, so shuffling does not change it), a
    sized dataset's items, or an ``(inputs, targets)`` pair.

    Examples
    --------
    >>> import torch
    >>> from unravel._io import data_hash
    >>> x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    >>> data_hash((x, y)) == data_hash((x, y.flip(0)))
    False
    """
    h = hashlib.sha256()
    if hasattr(data, "train") and hasattr(data, "test"):  # a DataSplit: each of its splits
        for split in ("train", "validation", "test"):
            part = getattr(data, split, None)
            h.update(f"{split}:{'-' if part is None else data_hash(part)}".encode())
    elif isinstance(data, torch.utils.data.DataLoader):
        return data_hash(data.dataset)
    elif hasattr(data, "tensors"):
        _hash_value(h, list(data.tensors))
    elif isinstance(data, (tuple, list)):
        _hash_value(h, list(data))
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        for i in range(len(data)):
            _hash_value(h, data[i])
    elif hasattr(data, "__iter__"):  # an iterable dataset: its items in the order it gives them
        for item in data:
            _hash_value(h, item)
    else:
        raise ArgumentTypeError(f"cannot read the content of data of type {type(data).__name__}: give a DataSplit, "
                                "a Dataset, a DataLoader or (inputs, targets).")
    return h.hexdigest()[:16]
