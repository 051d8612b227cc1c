"""Measured trials: the rows a claim's statistic is computed from, and what varies in them.

A :class:`Trials` holds one row per measurement with its training ``seed``, optionally the
per-item outcomes behind each row's value (test examples) and the groups of exchangeable random
draws; :mod:`~unravel.study.intervals` resamples them (seeds, then examples and draws) and
:mod:`~unravel.study.verdicts` decides a claim from the resulting interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["VERDICTS", "Trials", "trials_from", "subset", "per_seed", "clusters"]

#: The three verdicts a claim can get.
VERDICTS = ("supported", "contradicted", "inconclusive")


@dataclass
class Trials:
    """Measured rows and, optionally, the per-item outcomes behind each row's value.

    Parameters
    ----------
    frame : DataFrame
        One row per measurement, with a ``seed`` column (the training run it comes from).
    items : ndarray, optional
        ``[len(frame), n_items]``: the per-item outcomes (for example wrong-prediction flags per
        test example) whose mean is the row's ``value``. Every row of one seed must have the same
        items (the same test examples), so that resampling them keeps comparisons paired.
    value : str
        The column that ``items`` averages to (replaced in each bootstrap resample).
    draws : sequence of str, optional
        Columns whose groups (within a seed) hold exchangeable draws: rows are resampled with
        replacement inside each group. None: rows are fixed.
    cluster : str, optional
        With ``draws``: a column naming which rows belong together (one random subnetwork measured
        at every epoch, say); whole clusters are resampled instead of rows.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import Trials
    >>> t = Trials(pd.DataFrame({"seed": [0, 0], "error": [0.5, 0.0]}),
    ...            np.array([[1, 0], [0, 0]], bool))
    >>> t.frame.error.tolist()
    [0.5, 0.0]
    """

    frame: pd.DataFrame
    items: np.ndarray | None = None
    value: str = "error"
    draws: Sequence[str] | None = None
    cluster: str | None = None
    _by_seed: dict = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.frame, pd.DataFrame) or "seed" not in self.frame.columns:
            raise ArgumentError("Trials needs a DataFrame with a 'seed' column.")
        self.frame = self.frame.reset_index(drop=True)
        if self.items is not None:
            items = np.asarray(self.items)
            if items.ndim != 2 or items.shape[0] != len(self.frame):
                raise ArgumentError(f"Trials.items must have shape [rows={len(self.frame)}, items]; got "
                                    f"{items.shape}.")
            if self.value not in self.frame.columns:
                raise ArgumentError(f"Trials.value {self.value!r} is not a column of the frame.")
            self.items = items.astype(np.float32)
        if self.cluster is not None and not self.draws:
            raise ArgumentError("Trials.cluster needs draws (the groups its clusters are drawn within).")
        needed = [*(self.draws or ()), *([self.cluster] if self.cluster else [])]
        missing = [c for c in needed if c not in self.frame.columns]
        if missing:
            raise ArgumentError(f"Trials.draws names columns the frame lacks: {missing}.")
        self._by_seed = {s: np.flatnonzero(self.frame.seed.to_numpy() == s) for s in self.frame.seed.unique()}

    @property
    def seeds(self) -> list:
        """The seeds of the rows, in order of appearance."""
        return list(self._by_seed)


def trials_from(parts, **kw) -> Trials:
    """Trials from a list of ``(frame, items or None)``: the frames concatenated, their items
    stacked when every part has them; ``kw`` as for :class:`Trials`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import trials_from
    >>> t = trials_from([(pd.DataFrame({"seed": [0], "error": [0.5]}), np.array([[1, 0]])),
    ...                  (pd.DataFrame({"seed": [1], "error": [0.0]}), np.array([[0, 0]]))])
    >>> len(t.frame), t.items.shape
    (2, (2, 2))
    """
    frame = pd.concat([f for f, _ in parts], ignore_index=True)
    items = np.concatenate([w for _, w in parts]) if all(w is not None for _, w in parts) else None
    return Trials(frame, items, **kw)


def subset(trials: Trials, mask, **kw) -> Trials:
    """The rows of ``trials`` where ``mask`` holds, with their items; ``value`` and ``draws``
    kept unless ``kw`` gives others.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.stats import Trials, subset
    >>> t = Trials(pd.DataFrame({"seed": [0, 1], "error": [0.5, 0.1]}))
    >>> subset(t, [False, True]).frame.error.tolist()
    [0.1]
    """
    mask = np.asarray(mask, bool)
    return Trials(trials.frame[mask], None if trials.items is None else trials.items[mask],
                  value=kw.pop("value", trials.value), draws=kw.pop("draws", trials.draws))


def per_seed(fn: Callable) -> Callable:
    """``fn(frame of one seed) -> float`` made into a statistic over all seeds: the mean of its
    value per seed (NaN if any seed's is undefined).

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study.stats import per_seed
    >>> per_seed(lambda f: f.error.max())(pd.DataFrame({"seed": [0, 0, 1], "error": [0.1, 0.3, 0.5]}))
    0.4
    """
    def stat(frame):
        vals = [float(fn(g)) for _, g in frame.groupby("seed", sort=False)]
        return float(np.mean(vals)) if vals and all(math.isfinite(v) for v in vals) else math.nan
    return stat




def clusters(t: Trials, rows: np.ndarray) -> list:
    """The resampling groups of one seed's rows: per group of ``draws``, a list of clusters (row
    positions within ``rows``) that are drawn with replacement.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from unravel.study.stats import Trials, clusters
    >>> t = Trials(pd.DataFrame({"seed": 0, "k": [1, 1, 2]}), draws=["k"])
    >>> [[c.tolist() for c in g] for g in clusters(t, np.arange(3))]
    [[[0], [1]], [[2]]]
    """
    sub = t.frame.iloc[rows]
    out = []
    for ix in sub.groupby(list(t.draws), sort=False).indices.values():
        ix = np.asarray(ix)
        if t.cluster is None:
            out.append([np.array([i]) for i in ix])
        else:
            ids = sub[t.cluster].to_numpy()[ix]
            out.append([ix[ids == c] for c in dict.fromkeys(ids)])
    return out
