"""Tracking path lengths over training: a :class:`~unravel.train.Callback` that records the exact
path-length histogram (and optionally the errors of random subnetworks) on a fixed probe batch.

Each record is :func:`unravel.attribution.path_length_gradients` on the probe; it does not check
that the probe is representative of the training data.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._utils import check_int, model_device
from .attribution import path_length_gradients
from .attribution._record import WRT
from .errors import ArgumentError, ArgumentTypeError
from .train import Callback
from .units import find_units

__all__ = ["PathLengthTracker"]


class PathLengthTracker(Callback):
    """Records path-length histograms (and optionally k-unit subnetwork errors) during
    :func:`unravel.train.fit`, on a fixed probe batch.

    Parameters
    ----------
    probe : (inputs, targets) or DataSplit
        The probe batch (a DataSplit gives the first ``probe_size`` test examples).
    every : int
        Record every ``every`` epochs (and before training, as epoch 0).
    every_steps : int, optional
        Record every so many optimisation steps instead.
    wrt : iterable of {"input", "units"}
        Default: the parameter gradient (what the shallow-subnetwork-first claim is about).
    subnetwork_units : iterable of int, optional
        Also measure the error of random subnetworks that keep k units (the others deleted,
        via :func:`unravel.lesion.delete_random`), ``subnetwork_samples`` draws each, on the probe.
    probe_size : int
        A record costs about n(n+1)/2 single-unit VJPs with weight gradients on the probe, mostly
        per-call overhead at these sizes (a 15-unit MNIST-1D ResNet: 0.16 s on two CPU cores,
        0.06 s on an H100, about 13% of a 4,000-example epoch). ``every=2`` records half as often.

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(200, num_classes=2)
    >>> tracker = unravel.tracking.PathLengthTracker(data, probe_size=32)
    >>> _ = unravel.train.fit(unravel.models.resmlp(16, 2, width=8, depth=3), data, epochs=2,
    ...                       callbacks=[tracker], progress=False)
    >>> sorted(tracker.to_frame().epoch.unique().tolist())
    [0, 1, 2]
    """

    def __init__(self, probe, every: int = 1, every_steps: int | None = None, wrt: Iterable[str] = ("units",),
                 subnetwork_units: Iterable[int] | None = None, subnetwork_samples: int = 3, probe_size: int = 64,
                 seed: int = 0):
        from .data import DataSplit

        if isinstance(probe, DataSplit):
            probe = probe.batch(probe_size)
        if not (isinstance(probe, (tuple, list)) and len(probe) == 2):
            raise ArgumentTypeError("probe must be (inputs, targets) or a DataSplit.")
        self.inputs, self.targets = probe
        self.every = check_int("every", every, 1)
        self.every_steps = check_int("every_steps", every_steps, 1, allow_none=True)
        self.wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        for w in self.wrt:
            if w not in WRT:
                raise ArgumentError(f"wrt entry {w!r} is not allowed; choose among {', '.join(map(repr, WRT))}.")
        self.subnetwork_units = list(subnetwork_units) if subnetwork_units is not None else []
        self.subnetwork_samples, self.seed = subnetwork_samples, seed
        self.frames: list = []
        self.subnetwork_frames: list = []
        self._epoch = 0

    def _measure(self, model, epoch, step):
        device = model_device(model)
        x, y = self.inputs.to(device), self.targets.to(device)
        for w in self.wrt:
            res = path_length_gradients(model, x, y, wrt=w)
            self.frames.append(res.to_frame().assign(epoch=epoch, step=step, loss=res.loss,
                                                     mean_length=res.mean_length))
        if self.subnetwork_units:
            from .lesion import delete_random

            n = len(find_units(model))
            ks = [n - k for k in self.subnetwork_units if 0 <= n - k <= n]
            deleting = [k for k in ks if k >= 1]
            if deleting:
                df = delete_random(model, (x, y), ks=deleting, samples_per_k=self.subnetwork_samples,
                                   seed=self.seed, progress=False)
                df = df[df.variant >= 0]
            else:
                import pandas as pd

                df = pd.DataFrame(columns=["k", "error", "loss"])
            if n in self.subnetwork_units:  # the whole network
                from .train import evaluate

                m = evaluate(model, (x, y))
                import pandas as pd

                df = pd.concat([df, pd.DataFrame([{"k": 0, "error": m["error"], "loss": m["loss"]}])])
            self.subnetwork_frames.append(df.assign(subnetwork_units=n - df.k, epoch=epoch, step=step))

    def on_train_begin(self, model):
        self._epoch = 0
        self._measure(model, 0, 0)

    def on_step_end(self, model, step, metrics):
        if self.every_steps and step % self.every_steps == 0:
            self._measure(model, metrics["epoch"], step)

    def on_epoch_end(self, model, metrics):
        self._epoch = metrics["epoch"]
        if not self.every_steps and metrics["epoch"] % self.every == 0:
            self._measure(model, metrics["epoch"], None)

    def to_frame(self):
        """All recorded histograms, one row per (epoch or step, wrt, length)."""
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def subnetworks_frame(self):
        """Errors of random k-unit subnetworks over training."""
        import pandas as pd

        return pd.concat(self.subnetwork_frames, ignore_index=True) if self.subnetwork_frames else pd.DataFrame()


