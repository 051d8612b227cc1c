"""A Procrustes ResNet: the convolutions of a model's transition units (and stem)
(:func:`procrustes_units`) projected so that their singular values sit in a band
(:func:`procrustes_`), once or after training steps (:class:`ProcrustesCallback`), by one of two
recipes (:data:`RECIPES`): ours, or Zaeemzadeh et al.'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from torch import nn

from .._utils import check_choice, check_int
from ..errors import ArgumentError
from ..train import Callback
from .geometry import _bounds, _geometry
from .operators import _method, clip_deviation, project_conv_
from .plan import PARTS, STRIDED, TARGETS, Planned, _plan, procrustes_units

__all__ = ["procrustes_units", "procrustes_", "ProcrustesCallback", "RECIPES", "PARTS", "STRIDED", "TARGETS",
           "Planned"]

#: Named settings of :func:`procrustes_` and :class:`ProcrustesCallback`; keywords given override them.
#: ``"ours"``: the transition units' convolutions (residual branch and shortcut), their own (strided)
#: operators clipped to singular values 1 by the SVD after every step and when training begins.
#: ``"authors"``: Zaeemzadeh et al.'s code -- the stem too, the stride-1 operator of each kernel,
#: every singular value set to ``sqrt(c_out / c_in)`` by 10 Newton-Schulz iterations, after a
#: random half of the steps (none when training begins).
RECIPES = {
    "ours": dict(parts=("residual", "shortcut"), strided="exact", method="svd", steps=10, target="band",
                 low=1.0, high=1.0, iterations=1, every=1, probability=1.0, at_start=True),
    "authors": dict(parts=("residual", "shortcut", "stem"), strided="stride1", method="newton_schulz", steps=10,
                    target="sqrt_ratio", low=1.0, high=1.0, iterations=1, every=1, probability=0.5, at_start=False),
}


def _settings(recipe, **given) -> dict:
    """The recipe's settings with the keywords given (not None) in their place, checked."""
    check_choice("recipe", recipe, tuple(RECIPES))
    s = dict(RECIPES[recipe])
    s.update({k: v for k, v in given.items() if v is not None})
    parts = (s["parts"],) if isinstance(s["parts"], str) else tuple(s["parts"])
    s["parts"] = tuple(check_choice("parts", p, PARTS) for p in parts)
    check_choice("strided", s["strided"], STRIDED)
    check_choice("target", s["target"], TARGETS)
    s["low"], s["high"] = _bounds(s["low"], s["high"])
    s["iterations"] = check_int("iterations", s["iterations"], 1)
    s["every"] = check_int("every", s["every"], 1)
    p = s["probability"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ArgumentError(f"probability={p!r} must lie in (0, 1]: the chance of projecting after a step.")
    if not isinstance(s["at_start"], bool):
        raise ArgumentError(f"at_start={s['at_start']!r} must be True or False.")
    if s["target"] == "sqrt_ratio" and (given.get("low") is not None or given.get("high") is not None):
        raise ArgumentError("target='sqrt_ratio' sets each convolution's band to sqrt(c_out / c_in); low and high "
                            "would be ignored: give target='band' with low and high, or neither.")
    low, high = (1.0, 1.0) if s["target"] == "sqrt_ratio" else (s["low"], s["high"])
    s["method"], s["steps"] = _method(s["method"], s["steps"], low, high)
    return s


def _project(planned: Planned, s) -> None:
    project_conv_(planned.conv, planned.input_size, planned.low, planned.high, iterations=s["iterations"],
                  stride=planned.stride, method=s["method"], steps=s["steps"])


def _deviation(planned: Planned) -> float:
    return clip_deviation(planned.conv, planned.input_size, planned.low, planned.high, stride=planned.stride)


def procrustes_(model: nn.Module, example_input=None, *, input_sizes: Mapping | None = None, recipe: str = "ours",
                low: float | None = None, high: float | None = None, iterations: int | None = None,
                parts: Iterable[str] | None = None, strided: str | None = None, method: str | None = None,
                steps: int | None = None, target: str | None = None):
    """Project the convolutions of ``model``'s transition units (and stem) once, in place (see
    :func:`project_conv_`), and report how near their bands their singular values now are.

    Parameters
    ----------
    model : nn.Module
    example_input : tensor, tuple or dict
        A batch the model runs on once (eval mode, no gradients) so that forward hooks read each
        convolution's spatial input size. Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    recipe : {"ours", "authors"}
        The settings the other keywords default to (:data:`RECIPES`).
    low, high, iterations, method, steps : see :func:`project_conv_`
    parts : see :func:`procrustes_units`
    strided : {"exact", "stride1"}
        Which operator of a strided convolution to clip: its own (its stride must divide its
        input size), or the stride-1 operator of its kernel (see :func:`project_conv_`).
    target : {"band", "sqrt_ratio"}
        ``"band"``: ``[low, high]`` for every convolution; ``"sqrt_ratio"``: every singular value
        ``sqrt(c_out / c_in)`` of each convolution (Zaeemzadeh et al.).

    Returns
    -------
    pandas.DataFrame
        One row per convolution: ``unit`` (None for the stem), ``conv`` (its name),
        ``input_size``, ``stride`` (of the operator clipped), ``low`` and ``high`` (its band),
        ``deviation_before`` and ``deviation_after`` (:func:`clip_deviation` from that band,
        structural zeros left out) and ``structural_zeros`` (how many singular values are 0
        whatever the weights: non-zero for a 1x1 strided shortcut, which discards part of its input).

    Examples
    --------
    >>> import torch, unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> report = unravel.procrustes.procrustes_(net, torch.randn(2, 1, 32), iterations=5)
    >>> report.conv.tolist()
    ['stage2.0.residual.0', 'stage2.0.residual.3', 'stage3.0.residual.0', 'stage3.0.residual.3']
    >>> report.input_size.tolist(), report.stride.tolist()
    ([(32,), (16,), (16,), (8,)], [(2,), (1,), (2,), (1,)])
    >>> bool((report.deviation_after < report.deviation_before).all())
    True
    >>> net = unravel.models.procresnet(13, width=2, in_channels=1, dims=1)
    >>> report = unravel.procrustes.procrustes_(net, torch.randn(2, 1, 32), recipe="authors")
    >>> report[["conv", "high"]].round(3).values.tolist()
    [['stem', 2.828], ['stage2.0.residual', 1.414], ['stage3.0.residual', 1.414]]
    """
    import pandas as pd

    s = _settings(recipe, low=low, high=high, iterations=iterations, parts=parts, strided=strided, method=method,
                  steps=steps, target=target)
    rows = []
    for planned in _plan(model, example_input, input_sizes, s["parts"], s["strided"], s["target"], s["low"], s["high"]):
        g = _geometry(planned.conv, planned.input_size, planned.stride, None, None, None)
        before = _deviation(planned)
        _project(planned, s)
        rows.append(dict(unit=None if planned.unit is None else planned.unit.name, conv=planned.name,
                         input_size=g.n, stride=g.stride, low=planned.low, high=planned.high,
                         deviation_before=before, deviation_after=_deviation(planned),
                         structural_zeros=g.structural_zero_count()))
    return pd.DataFrame(rows, columns=["unit", "conv", "input_size", "stride", "low", "high", "deviation_before",
                                       "deviation_after", "structural_zeros"])


class ProcrustesCallback(Callback):
    """Train a Procrustes ResNet with :func:`unravel.train.fit`: after optimizer steps, project the
    operators of the transition units' convolutions (and, in the authors' recipe, the stem's)
    onto singular values in their band (:func:`project_conv_`).

    Parameters
    ----------
    example_input : tensor, tuple or dict, optional
        A batch the model runs on once when training begins, to read each convolution's spatial
        input size (forward hooks, eval mode, no gradients). Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    recipe : {"ours", "authors"}
        The settings every keyword below left at None takes (:data:`RECIPES`): ``"ours"`` clips the
        transition units' own operators to 1 by the SVD after every step; ``"authors"`` is
        Zaeemzadeh et al.'s code (stem too, stride-1 operators, ``sqrt(c_out/c_in)``, 10
        Newton-Schulz steps, a random half of the steps).
    every : int
        Consider projecting after steps ``every, 2*every, ...``.
    probability : float
        At each of those steps, project with this probability (drawn from a generator seeded with
        ``seed`` when training begins: the same steps every run). The authors' code: 0.5.
    seed : int
        Seed of those draws.
    low, high, iterations, parts, strided, method, steps, target
        As in :func:`procrustes_`.
    at_start : bool
        Also project when training begins, so that training starts from constrained weights.

    Attributes
    ----------
    projections : int
        How many times the convolutions were projected.
    projected_steps : list of int
        The steps after which they were (this training run).
    plan : list of :class:`~unravel.procrustes.plan.Planned`
        Each constrained convolution with its input size, operator stride and band, once training began.

    Notes
    -----
    After each epoch the largest :func:`clip_deviation` over the constrained convolutions (each
    from its own band) is added to the epoch's metrics as ``procrustes_deviation`` (measured after
    that epoch's test metrics, on the weights as they are then). Unprojected steps may follow the
    last projection; call :func:`procrustes_` after :func:`fit` for weights projected last.

    Examples
    --------
    >>> import torch, unravel
    >>> data = unravel.data.synthetic(80, input_shape=(1, 16), num_classes=2)  # 64 to train on
    >>> net = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1)
    >>> cb = unravel.procrustes.ProcrustesCallback(torch.zeros(1, 1, 16), every=2, iterations=3)
    >>> hist = unravel.train.fit(net, data, epochs=1, batch_size=16, callbacks=[cb], progress=False)
    >>> cb.projections, "procrustes_deviation" in hist[-1]
    (3, True)
    >>> cb = unravel.procrustes.ProcrustesCallback(torch.zeros(1, 1, 16), recipe="authors", seed=1)
    >>> hist = unravel.train.fit(net, data, epochs=2, batch_size=16, callbacks=[cb], progress=False)
    >>> cb.projected_steps  # a random half of the 8 steps, the same with seed 1 every time
    [3, 5, 6, 8]
    """

    def __init__(self, example_input=None, *, input_sizes: Mapping | None = None, recipe: str = "ours",
                 every: int | None = None, probability: float | None = None, seed: int = 0,
                 low: float | None = None, high: float | None = None, iterations: int | None = None,
                 parts: Iterable[str] | None = None, strided: str | None = None, method: str | None = None,
                 steps: int | None = None, target: str | None = None, at_start: bool | None = None):
        if (example_input is None) == (input_sizes is None):
            raise ArgumentError("ProcrustesCallback needs exactly one of example_input (a batch, to measure each "
                                "convolution's input size) and input_sizes (a dict: convolution name -> size).")
        self.example_input = example_input
        self.input_sizes = input_sizes
        self.recipe = recipe
        self.settings = _settings(recipe, every=every, probability=probability, low=low, high=high,
                                  iterations=iterations, parts=parts, strided=strided, method=method, steps=steps,
                                  target=target, at_start=at_start)
        self.seed = check_int("seed", seed, 0)
        for key in ("every", "probability", "low", "high", "iterations", "parts", "strided", "method", "steps",
                    "target", "at_start"):
            setattr(self, key, self.settings[key])
        self.projections = 0
        self.projected_steps: list[int] = []
        self.plan: list[Planned] = []
        self._rng = np.random.default_rng(self.seed)

    def project(self, model: nn.Module | None = None) -> None:
        """Project every planned convolution once."""
        for planned in self.plan:
            _project(planned, self.settings)
        self.projections += 1

    def draw(self, step: int) -> bool:
        """Whether to project after ``step``: a multiple of ``every``, and a draw below ``probability``."""
        if step % self.every:
            return False
        return self.probability >= 1 or bool(self._rng.random() < self.probability)

    def deviation(self) -> float:
        """The largest :func:`clip_deviation` over the planned convolutions (each from its own band), as they are now."""
        return max((_deviation(planned) for planned in self.plan), default=0.0)

    def on_train_begin(self, model):
        self.plan = _plan(model, self.example_input, self.input_sizes, self.parts, self.strided, self.target,
                          self.low, self.high)
        self._rng = np.random.default_rng(self.seed)
        self.projected_steps = []
        if self.at_start:
            self.project(model)

    def on_step_end(self, model, step, metrics):
        if self.draw(step):
            self.project(model)
            self.projected_steps.append(step)

    def on_epoch_end(self, model, metrics):
        metrics["procrustes_deviation"] = self.deviation()
