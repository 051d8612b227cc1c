"""Results journals of lesion sweeps: one CSV line per finished variant, appended in one write,
and a fingerprint of the sweep beside the file, so that a resumed sweep never mixes rows of
sweeps with other settings. Private: :mod:`unravel.sweeps` uses it.

What a journal guarantees (``docs/howto/resume.md`` says it for users):

- The fingerprint (``<file>.sweep.json``) holds the sweep's kind, settings, seed, unit names, data
  size, and hashes of the model's weights (its ``state_dict``) and of the evaluation data;
  resuming with any of them changed is a :class:`~unravel.errors.ResultsMismatchError` that names
  the setting.
- One sweep at a time: the process that prepares the file (rank 0) holds an advisory ``fcntl``
  lock on it until the sweep ends; a second sweep on the same file is refused at once.
- Each line is checked when the file is read: the header must be the journal's, every row must
  have its columns and numbers. A damaged *last* line (cut by a kill, or edited) is dropped and
  redone, with a warning naming the file and line; a damaged line before it is a
  :class:`~unravel.errors.JournalError` naming the file and line (the rows after it cannot be trusted).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from pathlib import Path

from ..errors import JournalError, ResultsMismatchError

#: The columns of a results file, in order: a study's frame has these and ``kendall_tau``, which is
#: derived from ``order`` (see :data:`unravel.sweeps.COLUMNS`), so files of every version resume alike.
COLUMNS = ["study", "variant", "k", "units", "names", "error", "loss", "samples", "per", "seed", "draw", "projection",
           "order"]
_INTS = ("variant", "k", "samples", "seed", "draw")
_FLOATS = ("error", "loss")


def fingerprint_path(path: Path) -> Path:
    return path.with_name(path.name + ".sweep.json")


@contextlib.contextmanager
def lock(path: Path):
    """Hold an advisory exclusive lock on the results file for the duration of the sweep; a file
    locked by another process is a JournalError (not a wait: that sweep would redo nothing)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"results file {str(path)!r} is in use by another sweep (it holds the file's lock); "
                               "wait for it to finish, or use another file.") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _stored(path: Path) -> dict:
    fp = fingerprint_path(path)
    try:
        stored = json.loads(fp.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise JournalError(f"the fingerprint {str(fp)!r} of results file {str(path)!r} cannot be read "
                           f"({type(e).__name__}): it is damaged. Use another file, or delete both.") from None
    if not isinstance(stored, dict):
        raise JournalError(f"the fingerprint {str(fp)!r} of results file {str(path)!r} is not a JSON object: it is "
                           "damaged. Use another file, or delete both.")
    return stored


def prepare(path: Path, fingerprint: dict) -> None:
    """Rank 0, before the barrier: check or write the fingerprint, write the header of a new file,
    and drop a damaged last line (it is redone)."""
    fp = fingerprint_path(path)
    if fp.exists():
        check(path, _stored(path), fingerprint)
    elif path.exists() and path.stat().st_size > 0:
        raise ResultsMismatchError(
            f"results file {str(path)!r} has no fingerprint ({fp.name}): it was not written by this version of "
            "unravel's sweeps, so it cannot be told whether its rows belong to this sweep. Use another file.")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = fp.with_name(fp.name + ".tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        os.replace(tmp, fp)
    if path.exists() and path.stat().st_size > 0:
        _, keep, bad = _parse(path)
        if bad is not None:
            warnings.warn(f"results file {str(path)!r}: line {bad[0]} is damaged ({bad[1]}); it is dropped and "
                          "redone.", stacklevel=3)
            os.truncate(path, keep)  # in place: the lock stays on this file
    if not path.exists() or path.stat().st_size == 0:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writeheader()
        path.write_text(buf.getvalue())


def check(path: Path, stored: dict, current: dict) -> None:
    """Raise a ResultsMismatchError naming the first setting that differs."""
    first = ["study", "seed", "units", "data_size", "weights", "data"]  # the likeliest mix-ups, named first
    for key in first + sorted((set(stored) | set(current)) - set(first)):
        if stored.get(key) != current.get(key):
            was, now = stored.get(key), current.get(key)
            if isinstance(was, list) and isinstance(now, list) and len(str(was)) > 80:
                was, now = f"{len(was)} entries", f"{len(now)} entries" if len(was) != len(now) else "other entries"
            what = {"weights": " (a hash of the model's state_dict: other weights)",
                    "data": " (a hash of the evaluation data: other data)"}.get(key, "")
            raise ResultsMismatchError(
                f"results file {str(path)!r} was written by a sweep with {key}={was!r}; this call has "
                f"{key}={now!r}{what}. Resuming would mix rows of two sweeps: use another file, or the same settings.")


def check_stored(path: Path, current: dict) -> None:
    """Other ranks, after the barrier: compare with the fingerprint rank 0 checked or wrote."""
    check(path, _stored(path), current)


def _row_problem(fields: list) -> str | None:
    if len(fields) != len(COLUMNS):
        return f"{len(fields)} fields where the journal has {len(COLUMNS)}"
    row = dict(zip(COLUMNS, fields))
    for c in _INTS:
        try:
            int(row[c])
        except ValueError:
            return f"{c}={row[c]!r} is not an integer"
    for c in _FLOATS:
        try:
            if math.isinf(float(row[c])):
                return f"{c}={row[c]!r} is not finite"
        except ValueError:
            return f"{c}={row[c]!r} is not a number"
    return None


def _parse(path: Path):
    """``(rows, bytes to keep, (line, problem) of a damaged last line or None)``; a damaged line
    before the last is a JournalError."""
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    try:
        header = next(csv.reader([lines[0].decode()])) if lines else []
    except (UnicodeDecodeError, csv.Error):
        header = None
    if len(lines) == 1 and not lines[0].endswith(b"\n") and ",".join(COLUMNS).encode().startswith(lines[0]):
        return [], 0, (1, "cut short")  # the header itself cut by a kill: written again
    if header != COLUMNS:
        raise JournalError(f"results file {str(path)!r}, line 1: the header is not a sweep journal's "
                           f"({','.join(COLUMNS)}); it was changed. Use another file, or restore the header.")
    rows, offset, keep = [], len(lines[0]), len(lines[0])
    for number, raw in enumerate(lines[1:], start=2):
        problem = None
        if not raw.endswith(b"\n"):
            problem = "cut short"
        else:
            try:
                fields = next(csv.reader([raw.decode()], strict=True))
                problem = _row_problem(fields)
            except (UnicodeDecodeError, csv.Error, StopIteration) as e:
                problem = f"not one CSV row ({type(e).__name__})"
        if problem is not None:
            if number == len(lines):
                return rows, keep, (number, problem)
            raise JournalError(f"results file {str(path)!r}, line {number}: damaged ({problem}), and lines follow "
                               "it. Delete that line (it is redone), or use another file.")
        offset += len(raw)
        keep = offset
        rows.append(dict(zip(COLUMNS, fields)))
    return rows, keep, None


def read(path: Path) -> list[dict]:
    """The complete rows of a results file (a damaged last line is ignored here: rank 0 repairs it)."""
    if not path.exists():
        return []
    return _parse(path)[0]


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
