"""The Python standard library's own source as a byte-level text corpus: real text that every
machine holds, for training and probing small language models offline.

Files are split into train, validation and test by a hash of their path (so a file never feeds
two splits, and the split of a file does not depend on which other files exist), read as bytes
(the vocabulary is the 256 byte values; byte 0, which Python source does not contain, separates
files) and cut into windows of a fixed context length. The standard library differs between
Python versions and installations: :meth:`Corpus.fingerprint` says which one was read. Nothing
here checks that the files are Python source or that a corpus is large enough for a model.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..errors import ArgumentError
from .split import DataSplit

__all__ = ["Corpus", "TextSplit", "stdlib_corpus", "stdlib", "split_of", "SPLITS", "EXCLUDED", "SEPARATOR"]

#: The splits of a corpus, in order.
SPLITS = ("train", "validation", "test")
#: Folders left out: third-party packages, the standard library's own test suites (large
#: generated data files and deliberately malformed code, not representative source), and files
#: generated for one machine's build (``config-*`` folders, ``_sysconfigdata*`` modules).
EXCLUDED = ("site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "config-*",
            "_sysconfigdata*")
#: The byte that separates one file from the next in a split's stream.
SEPARATOR = 0


def split_of(relpath: str, fractions=(0.9, 0.05, 0.05)) -> str:
    """The split of a file, from the SHA-256 of its relative path (POSIX separators) mapped to
    [0, 1): train below ``fractions[0]``, validation below ``fractions[0] + fractions[1]``, else
    test. It depends on the path alone.

    Examples
    --------
    >>> from unravel.data import split_of
    >>> split_of("json/decoder.py"), split_of("json/decoder.py", (0.0, 0.0, 1.0))
    ('train', 'test')
    """
    h = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big") / 2.0 ** 64
    return "train" if h < fractions[0] else "validation" if h < fractions[0] + fractions[1] else "test"


@functools.lru_cache(maxsize=8)
def _stream(root: str, files: tuple) -> torch.Tensor:
    parts = []
    for rel in files:
        parts.append((Path(root) / rel).read_bytes())
    data = bytes([SEPARATOR]).join(parts)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A byte-level corpus of source files split into train, validation and test.

    Attributes
    ----------
    root : str
        The folder the relative paths start from.
    files : mapping of str to tuple of str
        Split -> the relative paths of its files (POSIX separators, sorted).
    """

    root: str
    files: Mapping[str, tuple]

    def __repr__(self):
        return f"Corpus({self.root!r}, " + ", ".join(f"{s}={len(self.files[s])} files" for s in SPLITS) + ")"

    def tokens(self, split: str = "train") -> torch.Tensor:
        """The split as one stream of bytes (``uint8``, files joined by :data:`SEPARATOR`); read
        once per process and kept."""
        return _stream(self.root, self.files[_check_split(split)])

    def num_bytes(self, split: str) -> int:
        """The length of a split's stream (its files' bytes and the separators)."""
        return int(self.tokens(split).numel())

    def windows(self, split: str, context: int, n: int | None = None, seed: int = 0) -> torch.Tensor:
        """Non-overlapping windows of ``context`` bytes, ``[n, context]`` (``int64``): all the
        windows a split's stream holds, or ``n`` of them drawn without replacement by ``seed`` (in
        stream order). Fixed windows for evaluation.

        Examples
        --------
        >>> from unravel.data import stdlib_corpus
        >>> c = stdlib_corpus()
        >>> w = c.windows("test", 64, n=8)
        >>> w.shape, w.dtype, bool((w == c.windows("test", 64, n=8)).all())
        (torch.Size([8, 64]), torch.int64, True)
        """
        context = _check_context(context)
        stream = self.tokens(split)
        total = stream.numel() // context
        if total == 0 or (n is not None and not (isinstance(n, int) and 1 <= n <= total)):
            raise ArgumentError(f"n={n!r} windows of {context} bytes: the {split} split ({stream.numel():,} bytes) "
                                f"holds {total} non-overlapping windows; ask for 1 to {total}.")
        chunks = stream[: total * context].view(total, context)
        if n is not None:
            g = torch.Generator().manual_seed(int(seed))
            chunks = chunks[torch.randperm(total, generator=g)[:n].sort().values]
        return chunks.long()

    def batches(self, context: int, batch_size: int, seed: int = 0, split: str = "train") -> Iterator[torch.Tensor]:
        """An endless stream of training batches ``[batch_size, context]`` (``int64``): windows
        starting at offsets drawn uniformly by ``seed`` (the same seed, the same batches).

        Examples
        --------
        >>> from unravel.data import stdlib_corpus
        >>> batch = next(stdlib_corpus().batches(32, 4))
        >>> batch.shape
        torch.Size([4, 32])
        """
        context = _check_context(context)
        stream = self.tokens(split)
        if stream.numel() <= context:
            raise ArgumentError(f"the {split} split ({stream.numel()} bytes) is shorter than one window of {context}.")
        g = torch.Generator().manual_seed(int(seed))
        offsets = torch.arange(context)
        while True:
            starts = torch.randint(0, stream.numel() - context + 1, (batch_size, 1), generator=g)
            yield stream[starts + offsets].long()

    def fingerprint(self) -> dict:
        """What identifies this corpus: Python's version (None when the corpus is another folder
        than this Python's standard library, such as a copy of another Python's), the number of files and bytes per split,
        and a SHA-256 over every file's path and content (in split and path order). Record it
        with results: the standard library differs between Python versions and installations.

        Examples
        --------
        >>> from unravel.data import stdlib_corpus
        >>> fp = stdlib_corpus().fingerprint()
        >>> sorted(fp), fp["files"]["train"] > fp["files"]["test"]
        (['bytes', 'files', 'python', 'sha256'], True)
        """
        h = hashlib.sha256()
        for split in SPLITS:
            for rel in self.files[split]:
                content = (Path(self.root) / rel).read_bytes()
                h.update(f"{split}\0{rel}\0{len(content)}\0".encode())
                h.update(content)
        own = Path(self.root).resolve() == Path(sysconfig.get_paths()["stdlib"]).resolve()
        return {"python": sys.version.split()[0] if own else None, "files": {s: len(self.files[s]) for s in SPLITS},
                "bytes": {s: self.num_bytes(s) for s in SPLITS}, "sha256": h.hexdigest()[:16]}


def _check_split(split):
    if split not in SPLITS:
        raise ArgumentError(f"split={split!r}; a corpus has the splits {', '.join(SPLITS)}.")
    return split


def _check_context(context):
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise ArgumentError(f"context={context!r} must be an integer >= 2 (bytes per window).")
    return context


@functools.lru_cache(maxsize=4)
def _corpus(root: str, fractions: tuple) -> Corpus:
    base = Path(root)
    if not base.is_dir():
        raise ArgumentError(f"no folder at {root!r}: give the standard library's folder (the default, "
                            "sysconfig.get_paths()['stdlib']) or another folder of .py files.")
    files: dict = {s: [] for s in SPLITS}
    for p in base.rglob("*.py"):
        rel = p.relative_to(base)
        if any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in EXCLUDED) or not p.is_file():
            continue
        files[split_of(rel.as_posix(), fractions)].append(rel.as_posix())
    empty = [s for s in SPLITS if not files[s]]
    if empty:
        n = sum(len(v) for v in files.values())
        raise ArgumentError(f"{root!r} holds {n} .py files (outside {', '.join(EXCLUDED)}): too few to fill the "
                            f"{', '.join(empty)} split(s) with fractions {fractions}.")
    return Corpus(str(base), {s: tuple(sorted(files[s])) for s in SPLITS})


def stdlib_corpus(root=None, fractions=(0.9, 0.05, 0.05)) -> Corpus:
    """The ``.py`` files under ``root`` (default: this Python's standard library, from
    ``sysconfig.get_paths()["stdlib"]``), outside :data:`EXCLUDED` folders, split by
    :func:`split_of`.

    With CPython 3.11.7 (Linux) the default corpus holds 732 files, 12.1 MB: 663 files (10.9 MB)
    train, 38 (0.39 MB) validation, 31 (0.79 MB) test; :meth:`Corpus.fingerprint` gives the
    counts of the library at hand.

    Parameters
    ----------
    root : str or Path, optional
    fractions : (float, float, float)
        Train, validation and test shares of the files (by hash, so only roughly).

    Raises
    ------
    ArgumentError
        If ``root`` is not a folder, the fractions are not three non-negative numbers summing to
        1, or a split gets no file.

    Examples
    --------
    >>> from unravel.data import stdlib_corpus
    >>> c = stdlib_corpus()
    >>> sorted(c.files), c.num_bytes("train") > 10 * c.num_bytes("test")
    (['test', 'train', 'validation'], True)
    """
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ArgumentError(f"fractions={fractions!r} must be three non-negative numbers (train, validation, test) "
                            "that sum to 1.")
    root = sysconfig.get_paths()["stdlib"] if root is None else str(Path(root).expanduser().resolve())
    return _corpus(str(root), fractions)


@dataclasses.dataclass(repr=False)
class TextSplit(DataSplit):
    """A :class:`DataSplit` of token windows for next-token prediction: inputs and targets are
    the same ids (the sweeps' ``next_token=True`` scores position t against token t + 1).

    Attributes
    ----------
    validation : TensorDataset
        Held-out windows for model selection and training curves.
    corpus : Corpus
        Where the windows come from (training batches: ``corpus.batches``).
    """

    validation: TensorDataset | None = None
    corpus: Corpus | None = None

    def batch(self, n: int = 256, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        ds = {"train": self.train, "validation": self.validation, "test": self.test}[split]
        x, y = ds.tensors
        return x[:n], y[:n]


def _windows_dataset(corpus, split, context, n, seed):
    w = corpus.windows(split, context, n, seed)
    return TensorDataset(w, w.clone())


def stdlib(context: int = 128, train_windows: int | None = 4096, validation_windows: int | None = 256,
           test_windows: int | None = 256, seed: int = 0, root=None) -> TextSplit:
    """The standard library's source (:func:`stdlib_corpus`) as windows of ``context`` bytes.

    Each split holds that many non-overlapping windows drawn without replacement by ``seed``
    (None: all of them). Training a language model takes fresh random windows from
    ``corpus.batches`` instead; the ``train`` windows serve fine-tuning and selection.

    Examples
    --------
    >>> import unravel
    >>> d = unravel.data.stdlib(context=64, train_windows=16, validation_windows=8, test_windows=8)
    >>> d.num_classes, d.input_shape, len(d.train), len(d.validation), len(d.test)
    (256, (64,), 16, 8, 8)
    """
    corpus = stdlib_corpus(root)
    sets = {s: _windows_dataset(corpus, s, context, n, seed)
            for s, n in (("train", train_windows), ("validation", validation_windows), ("test", test_windows))}
    return TextSplit("stdlib", sets["train"], sets["test"], 256, (context,), validation=sets["validation"],
                     corpus=corpus)
