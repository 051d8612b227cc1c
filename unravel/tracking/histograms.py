"""Path-length histograms over training: :class:`PathLengthTracker` and the parameter groups
(:func:`parameter_groups`) its histograms can be split by. It does not check that the probe is
representative of the training data.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from .._utils import check_choice, check_int, eval_mode, model_device
from ..attribution import path_length_gradients
from ..attribution.recording import MODES, WRT
from ..errors import ArgumentError, ArgumentTypeError
from ..train import Callback
from ..units import find_units
from .schedule import _schedule

__all__ = ["PathLengthTracker", "parameter_groups", "GROUPS"]

#: Where a parameter sits: inside a residual unit, before the first unit, between units (a
#: DenseNet's transitions), after the last unit (pooling and classifier), or never run.
GROUPS = ("units", "stem", "between", "head", "unused")


def parameter_groups(model, inputs) -> dict:
    """Each trainable parameter's place: ``"units"`` (inside a residual unit), ``"stem"`` (run
    before the first unit), ``"between"`` (after one unit and before another, such as a
    DenseNet's transitions), ``"head"`` (after the last unit) or ``"unused"``.

    One forward pass of ``inputs`` in eval mode without gradients (modes restored) tells which
    modules run where. In the exact decomposition (:func:`unravel.attribution.path_length_gradients`
    with ``wrt="units"``) a unit's parameters carry the lengths of the paths through its own
    residual branch (length 1 and more), the head's carry length 0 only and the stem's every
    length of the paths above it: a histogram over all parameters mixes the three.

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1, in_channels=1)
    >>> groups = parameter_groups(net, torch.randn(2, 1, 12))
    >>> groups["stem.0.weight"], groups["stage2.0.residual.0.weight"], groups["fc.bias"]
    ('stem', 'units', 'head')
    """
    units = find_units(model)
    names = {mod: name for name, mod in model.named_modules()}
    prefixes = {names[u.module] for u in units}
    params = [k for k, p in model.named_parameters() if p.requires_grad]

    def in_unit(name):
        return any(not p or name.startswith(p + ".") for p in prefixes)

    owners = {}  # module -> its own trainable parameters outside units
    for mname, mod in model.named_modules():
        own = [f"{mname}.{k}" if mname else k for k, p in mod.named_parameters(recurse=False) if p.requires_grad]
        own = [k for k in own if not in_unit(k)]
        if own:
            owners[mod] = own
    unit_modules = list(dict.fromkeys(u.module for u in units))
    state = {"started": 0, "finished": 0}
    place = {}

    def unit_pre(mod, args):
        state["started"] += 1

    def unit_post(mod, args, out):
        state["finished"] += 1

    def owner_pre(mod, args):
        if mod in place:
            return
        if state["started"] == 0:
            place[mod] = "stem"
        elif state["finished"] >= len(unit_modules):
            place[mod] = "head"
        else:
            place[mod] = "between"

    hooks = [m.register_forward_pre_hook(unit_pre) for m in unit_modules]
    hooks += [m.register_forward_hook(unit_post) for m in unit_modules]
    hooks += [m.register_forward_pre_hook(owner_pre) for m in owners]
    try:
        with eval_mode(model), torch.no_grad():
            x = inputs if isinstance(inputs, tuple) else (inputs,)
            model(*[t.to(model_device(model)) for t in x])
    finally:
        for h in hooks:
            h.remove()
    out = {k: "units" for k in params if in_unit(k)}
    for mod, own in owners.items():
        out.update({k: place.get(mod, "unused") for k in own})
    return {k: out[k] for k in params}


def _group_rows(res, groups, lengths, counts):
    """Per parameter group, the norm of each length's part over the group's parameters."""
    import pandas as pd

    rows = []
    for g in GROUPS[:-1]:
        names = [k for k, v in groups.items() if v == g and k in res.param_by_length]
        if not names:
            continue
        norms = sum(res.param_by_length[k].flatten(1).double().pow(2).sum(1) for k in names).sqrt().cpu()
        total = float(norms.sum())
        share = norms / total if total > 0 else torch.zeros_like(norms)
        rows.append(pd.DataFrame({"length": lengths, "count": pd.Series(counts, dtype=object),
                                  "norm": norms.tolist(), "per_path_norm": (norms / torch.tensor(counts,
                                                                                                 dtype=norms.dtype)).tolist(),
                                  "share": share.tolist(), "group": g, "parameters": len(names),
                                  "mean_length": float((share * torch.tensor(lengths, dtype=share.dtype)).sum())}))
    return rows


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
        via :func:`unravel.sweeps.delete_random`, with the trained BatchNorm statistics),
        ``subnetwork_samples`` draws each, on the probe. :class:`SubnetworkTracker` recalibrates
        the statistics first.
    probe_size : int
        A record costs about n(n+1)/2 single-unit VJPs with weight gradients on the probe, mostly
        per-call overhead at these sizes (a 15-unit MNIST-1D ResNet: 0.16 s on two CPU cores,
        0.06 s on an H100, about 13% of a 4,000-example epoch). ``every=2`` records half as often.
    seed : int
        Seeds the subnetworks' draws.
    steps : iterable of int, optional
        Record at exactly these steps (0: before training; see :func:`log_spaced_steps`) instead
        of ``every``/``every_steps``.
    mode : {"eval", "train"}
        The forward pass of each record: ``"train"`` uses the probe's batch statistics, the
        network training sees (BatchNorm's running statistics are put back afterwards);
        ``"eval"`` the running statistics.
    by_group : bool
        For ``wrt="units"``, also one histogram per parameter group (:func:`parameter_groups`:
        the units' parameters, the stem's, the head's, ...): rows with a ``group`` column, the
        histogram over all parameters marked ``"all"``.

    Attributes
    ----------
    seconds : float
        Time spent in the records so far (what tracking adds to training).

    Examples
    --------
    >>> import unravel
    >>> data = unravel.data.synthetic(200, num_classes=2)
    >>> tracker = unravel.tracking.PathLengthTracker(data, probe_size=32)
    >>> _ = unravel.train.fit(unravel.models.resmlp(16, 2, width=8, depth=3), data, epochs=2,
    ...                       callbacks=[tracker], progress=False)
    >>> sorted(tracker.to_frame().epoch.unique().tolist())
    [0, 1, 2]
    >>> tracker = unravel.tracking.PathLengthTracker(data, probe_size=32, steps=[0, 1, 3], mode="train",
    ...                                              by_group=True)
    >>> _ = unravel.train.fit(unravel.models.resmlp(16, 2, width=8, depth=3), data, epochs=2, batch_size=64,
    ...                       callbacks=[tracker], progress=False)
    >>> f = tracker.to_frame()
    >>> sorted(f.step.unique().tolist()), sorted(f.group.unique())
    ([0, 1, 3], ['all', 'head', 'stem', 'units'])
    >>> float(f[(f.group == "units") & (f.step == 0)].share.iloc[0])  # no unit parameter is on a path of length 0
    0.0
    """

    def __init__(self, probe, every: int = 1, every_steps: int | None = None, wrt: Iterable[str] = ("units",),
                 subnetwork_units: Iterable[int] | None = None, subnetwork_samples: int = 3, probe_size: int = 64,
                 seed: int = 0, *, steps: Iterable[int] | None = None, mode: str = "eval", by_group: bool = False):
        from ..data import DataSplit

        if isinstance(probe, DataSplit):
            probe = probe.batch(probe_size)
        if not (isinstance(probe, (tuple, list)) and len(probe) == 2):
            raise ArgumentTypeError("probe must be (inputs, targets) or a DataSplit.")
        self.inputs, self.targets = probe
        self.every = check_int("every", every, 1)
        self.every_steps = check_int("every_steps", every_steps, 1, allow_none=True)
        self.steps = _schedule(steps)
        self.mode = check_choice("mode", mode, MODES)
        self.by_group = bool(by_group)
        self.wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        for w in self.wrt:
            if w not in WRT:
                raise ArgumentError(f"wrt entry {w!r} is not allowed; choose among {', '.join(map(repr, WRT))}.")
        self.subnetwork_units = list(subnetwork_units) if subnetwork_units is not None else []
        self.subnetwork_samples, self.seed = subnetwork_samples, seed
        self.frames: list = []
        self.subnetwork_frames: list = []
        self.seconds = 0.0
        self._epoch = 0
        self._groups = None

    def _measure(self, model, epoch, step):
        start = time.perf_counter()
        device = model_device(model)
        x, y = self.inputs.to(device), self.targets.to(device)
        for w in self.wrt:
            res = path_length_gradients(model, x, y, wrt=w, mode=self.mode)
            frame = res.to_frame().assign(epoch=epoch, step=step, loss=res.loss, mean_length=res.mean_length)
            if self.by_group and w == "units":
                if self._groups is None:
                    self._groups = parameter_groups(model, x[:2])
                import pandas as pd

                parts = _group_rows(res, self._groups, res.lengths.tolist(), res.counts)
                frame = pd.concat([frame.assign(group="all", parameters=len(self._groups)),
                                   *[p.assign(method=res.method, wrt=w, epoch=epoch, step=step, loss=res.loss)
                                     for p in parts]], ignore_index=True)
            self.frames.append(frame)
        if self.subnetwork_units:
            self._subnetworks(model, x, y, epoch, step)
        self.seconds += time.perf_counter() - start

    def _subnetworks(self, model, x, y, epoch, step):
        import pandas as pd

        from ..sweeps import delete_random

        n = len(find_units(model))
        ks = [n - k for k in self.subnetwork_units if 0 <= n - k <= n]
        deleting = [k for k in ks if k >= 1]
        if deleting:
            df = delete_random(model, (x, y), ks=deleting, samples_per_k=self.subnetwork_samples,
                               seed=self.seed, progress=False)
            df = df[df.variant >= 0]
        else:
            df = pd.DataFrame(columns=["k", "error", "loss"])
        if n in self.subnetwork_units:  # the whole network
            from ..train import evaluate

            m = evaluate(model, (x, y))
            df = pd.concat([df, pd.DataFrame([{"k": 0, "error": m["error"], "loss": m["loss"]}])])
        self.subnetwork_frames.append(df.assign(subnetwork_units=n - df.k, epoch=epoch, step=step))

    def on_train_begin(self, model):
        self._epoch = 0
        if self.steps is None or 0 in self.steps:
            self._measure(model, 0, 0)

    def on_step_end(self, model, step, metrics):
        if self.steps is not None:
            if step in self.steps:
                self._measure(model, metrics["epoch"], step)
        elif self.every_steps and step % self.every_steps == 0:
            self._measure(model, metrics["epoch"], step)

    def on_epoch_end(self, model, metrics):
        self._epoch = metrics["epoch"]
        if self.steps is None and not self.every_steps and metrics["epoch"] % self.every == 0:
            self._measure(model, metrics["epoch"], None)

    def to_frame(self):
        """All recorded histograms, one row per (epoch or step, wrt, length; with ``by_group``,
        group)."""
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def subnetworks_frame(self):
        """Errors of random k-unit subnetworks over training."""
        import pandas as pd

        return pd.concat(self.subnetwork_frames, ignore_index=True) if self.subnetwork_frames else pd.DataFrame()
