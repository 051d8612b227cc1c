"""Results journals of lesion sweeps: one CSV line per finished variant, appended in one write,
and a fingerprint of the sweep beside the file, so that a resumed sweep never mixes rows of
sweeps with other settings. Private: :mod:`unravel.sweeps` uses it.

The fingerprint (``<file>.sweep.json``) holds the sweep's kind, settings, seed, unit names and data
size; resuming with any of them changed is a :class:`~unravel.errors.ResultsMismatchError` that
names the setting. Only one process (rank 0) ever rewrites the file (to drop a line cut short by a
kill); the others only read it, after a barrier.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import ResultsMismatchError

#: The columns of a results file, in order: a study's frame has these and ``kendall_tau``, which is
#: derived from ``order`` (see :data:`unravel.sweeps.COLUMNS`), so files of every version resume alike.
COLUMNS = ["study", "variant", "k", "units", "names", "error", "loss", "samples", "per", "seed", "draw", "projection",
           "order"]


def fingerprint_path(path: Path) -> Path:
    return path.with_name(path.name + ".sweep.json")


def prepare(path: Path, fingerprint: dict) -> None:
    """Rank 0, before the barrier: check or write the fingerprint, write the header of a new file,
    and drop a last line cut short by a kill (it is redone)."""
    fp = fingerprint_path(path)
    if fp.exists():
        check(path, json.loads(fp.read_text()), fingerprint)
    elif path.exists() and path.stat().st_size > 0:
        raise ResultsMismatchError(
            f"results file {str(path)!r} has no fingerprint ({fp.name}): it was not written by this version of "
            "unravel's sweeps, so it cannot be told whether its rows belong to this sweep. Use another file.")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    if not path.exists() or path.stat().st_size == 0:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writeheader()
        path.write_text(buf.getvalue())
        return
    text = path.read_text()
    if not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1])


def check(path: Path, stored: dict, current: dict) -> None:
    """Raise a ResultsMismatchError naming the first setting that differs."""
    first = ["study", "seed", "units", "data_size"]  # the likeliest mix-ups, named first
    for key in first + sorted((set(stored) | set(current)) - set(first)):
        if stored.get(key) != current.get(key):
            was, now = stored.get(key), current.get(key)
            if isinstance(was, list) and isinstance(now, list) and len(str(was)) > 80:
                was, now = f"{len(was)} entries", f"{len(now)} entries" if len(was) != len(now) else "other entries"
            raise ResultsMismatchError(
                f"results file {str(path)!r} was written by a sweep with {key}={was!r}; this call has "
                f"{key}={now!r}. Resuming would mix rows of two sweeps: use another file, or the same settings.")


def read(path: Path) -> list[dict]:
    """The complete rows of a results file (a last line cut short is ignored, not repaired)."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if None not in r and all(v is not None for v in r.values())]


def append(path: Path, row: dict) -> None:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow(row)
    data = buf.getvalue().encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write of one line: a kill leaves it whole or cut, never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)
