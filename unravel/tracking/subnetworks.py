"""The errors of random subnetworks over training, each with its BatchNorm statistics
recalibrated: :class:`SubnetworkTracker`. It does not check that the calibration data are the
training data.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable

import numpy as np
import torch

from .._utils import check_int, model_device, saved_modes
from ..errors import ArgumentError, ArgumentTypeError
from ..train import Callback
from ..units import find_units
from .schedule import _schedule

__all__ = ["SubnetworkTracker"]


class SubnetworkTracker(Callback):
    """The errors of random subnetworks of the network being trained, each with its BatchNorm
    statistics recalibrated on training data (:func:`unravel.lesion.recalibrated_bn`), at chosen
    steps of :func:`unravel.train.fit`.

    A subnetwork keeping k of the n units is the network with the other units deleted
    (:func:`unravel.lesion.delete`). Evaluated with the running statistics the whole network
    kept, it is out of distribution, and small subnetworks sit at chance whatever they learned;
    recalibrated, it is the best that subnetwork's weights can do without training. The draws
    are fixed when training begins, so each one's error is a curve over training.

    Parameters
    ----------
    evaluation : (inputs, targets) or DataSplit
        Where errors are measured (a DataSplit: its test split).
    calibration : DataSplit, Dataset, DataLoader or (inputs, targets)
        What the statistics are recalibrated on (a DataSplit: its train split).
    sizes : iterable of int
        Units kept; ``n`` (all units) is the whole network, recalibrated alike.
    samples : int
        Random draws of each size (all subsets where there are fewer).
    steps : iterable of int, optional
        Record at these steps (0: before training; see :func:`log_spaced_steps`); default: before
        training and after every epoch.
    seed : int
        Seeds the draws (a generator of its own: training's randomness is untouched).
    calibration_examples : int, optional
        Recalibrate on the first so many examples (default: all).
    batch_size : int
        Examples per forward pass when recalibrating and evaluating.

    Attributes
    ----------
    seconds : float
        Time spent in the records so far.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(200, num_classes=2)
    >>> tracker = unravel.tracking.SubnetworkTracker(data, data, sizes=[1, 3], samples=2)
    >>> _ = unravel.train.fit(unravel.models.resmlp(16, 2, width=8, depth=3), data, epochs=1,
    ...                       callbacks=[tracker], progress=False)
    >>> f = tracker.to_frame()
    >>> sorted(f.subnetwork_units.unique().tolist()), sorted(f.step.unique().tolist()), tracker.items().shape
    ([1, 3], [0, 2], (6, 40))
    >>> f.columns.tolist()
    ['epoch', 'step', 'subnetwork_units', 'draw', 'units', 'error', 'loss']
    """

    def __init__(self, evaluation, calibration, sizes: Iterable[int], *, samples: int = 3,
                 steps: Iterable[int] | None = None, seed: int = 0, calibration_examples: int | None = None,
                 batch_size: int = 256):
        from ..data import DataSplit

        if isinstance(evaluation, DataSplit):
            evaluation = evaluation.test.tensors
        if not (isinstance(evaluation, (tuple, list)) and len(evaluation) == 2 and all(map(torch.is_tensor,
                                                                                               evaluation))):
            raise ArgumentTypeError("evaluation must be (inputs, targets) tensors or a DataSplit.")
        self.inputs, self.targets = evaluation
        self.calibration = calibration
        try:
            self.sizes = sorted({check_int("sizes", k, 1) for k in sizes})
        except TypeError:
            raise ArgumentTypeError(f"sizes must be an iterable of unit counts; got {sizes!r}.") from None
        if not self.sizes:
            raise ArgumentError("sizes is empty: give the numbers of units the subnetworks keep.")
        self.samples = check_int("samples", samples, 1)
        self.steps = _schedule(steps)
        self.seed = seed
        self.calibration_examples = check_int("calibration_examples", calibration_examples, 1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.rows: list = []
        self._items: list = []
        self.draws: list = []
        self.seconds = 0.0
        self._step = 0

    def _draw(self, n):
        if self.sizes[-1] > n:
            raise ArgumentError(f"sizes {self.sizes} ask for more units than the model's {n}.")
        rng = np.random.default_rng(self.seed)
        draws = []
        for k in self.sizes:
            if k == n:
                draws.append((k, 0, tuple(range(n))))
                continue
            if math.comb(n, k) <= self.samples:
                kept = list(itertools.combinations(range(n), k))
            else:
                kept = []
                while len(kept) < self.samples:
                    s = tuple(sorted(rng.choice(n, size=k, replace=False).tolist()))
                    if s not in kept:
                        kept.append(s)
            draws += [(k, j, s) for j, s in enumerate(kept)]
        return draws

    @torch.no_grad()
    def _wrong(self, model, device):
        wrong, loss = [], 0.0
        for start in range(0, len(self.targets), self.batch_size):
            x = self.inputs[start:start + self.batch_size].to(device)
            y = self.targets[start:start + self.batch_size].to(device)
            out = model(x)
            loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            wrong.append((out.argmax(1) != y).cpu())
        return torch.cat(wrong).numpy(), loss / len(self.targets)

    def _measure(self, model, epoch, step):
        from ..lesion import delete, recalibrated_bn

        start = time.perf_counter()
        device = model_device(model)
        n = len(find_units(model))
        with saved_modes(model):
            for k, j, kept in self.draws:
                deleted = [i for i in range(n) if i not in kept]
                with delete(model, deleted), recalibrated_bn(model, self.calibration, batch_size=self.batch_size,
                                                             max_examples=self.calibration_examples):
                    model.eval()
                    wrong, loss = self._wrong(model, device)
                self.rows.append({"epoch": epoch, "step": step, "subnetwork_units": k, "draw": j,
                                  "units": ",".join(map(str, kept)), "error": float(wrong.mean()), "loss": loss})
                self._items.append(wrong)
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, model):
        self.draws, self._step = self._draw(len(find_units(model))), 0
        if self.steps is None or 0 in self.steps:
            self._measure(model, 0, 0)

    def on_step_end(self, model, step, metrics):
        self._step = step
        if self.steps is not None and step in self.steps:
            self._measure(model, metrics["epoch"], step)

    def on_epoch_end(self, model, metrics):
        if self.steps is None:
            self._measure(model, metrics["epoch"], self._step)

    def to_frame(self):
        """One row per record and subnetwork: epoch, step, subnetwork_units, draw, units (kept),
        error, loss."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def items(self) -> np.ndarray:
        """Per-example wrong flags, ``[rows of to_frame(), evaluation examples]``."""
        return np.array(self._items, dtype=bool).reshape(len(self._items), len(self.targets))
