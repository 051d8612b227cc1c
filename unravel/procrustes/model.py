"""A Procrustes ResNet: the convolutions of a model's transition units (:func:`procrustes_units`)
projected so that their singular values sit in a band (:func:`procrustes_`), once or after every
training step (:class:`ProcrustesCallback`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._utils import as_tuple, check_choice, check_int, eval_mode, model_device
from ..errors import ArgumentError, ArgumentTypeError
from ..train import Callback
from .geometry import _bounds, _geometry, _is_conv
from .operators import clip_deviation, project_conv_

__all__ = ["procrustes_units", "procrustes_", "ProcrustesCallback", "PARTS", "STRIDED"]

PARTS = ("residual", "shortcut")
STRIDED = ("exact", "stride1")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def procrustes_units(model: nn.Module, *, parts: Iterable[str] = PARTS, units=None) -> list[tuple[Any, nn.Module]]:
    """The convolutions that a Procrustes ResNet constrains: those of its transition units.

    A transition (projection) unit is one whose shortcut is not the identity (``unit.projection``,
    see :func:`unravel.find_units`): where the resolution or the width changes.

    Parameters
    ----------
    model : nn.Module
    parts : iterable of {"residual", "shortcut"}
        Which branches' convolutions: the residual branch (where it is not a module, as in the
        torchvision adapters, every convolution of the block outside the shortcut) and the
        shortcut (a 1x1 convolution in option-B nets; option A's zero-padding shortcut has none).
    units : list of ResidualUnit, optional
        ``find_units(model)`` by default.

    Returns
    -------
    list of (ResidualUnit, nn.Module)
        In unit order, each convolution once (``nn.Conv1d/2d/3d``; transposed ones are left out).

    Examples
    --------
    >>> import unravel
    >>> net = unravel.models.resnet_cifar(8, width=4, dims=1)
    >>> [(u.name, type(c).__name__) for u, c in unravel.procrustes.procrustes_units(net)]
    [('stage2.0', 'Conv1d'), ('stage2.0', 'Conv1d'), ('stage3.0', 'Conv1d'), ('stage3.0', 'Conv1d')]
    >>> net = unravel.models.resnet_cifar(8, width=4, shortcut="conv")
    >>> len(unravel.procrustes.procrustes_units(net, parts=["shortcut"]))
    2
    """
    from ..units import find_units

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"procrustes_units expects a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(parts, str):
        parts = (parts,)
    parts = tuple(check_choice("parts", p, PARTS) for p in parts)
    if not parts:
        raise ArgumentError(f"parts is empty; give some of {PARTS}.")
    units = find_units(model) if units is None else list(units)
    found, seen = [], set()
    for unit in units:
        if not unit.projection:
            continue
        shortcut = unit.parts.shortcut
        in_shortcut = [m for m in shortcut.modules() if _is_conv(m)] if isinstance(shortcut, nn.Module) else []
        convs = []
        if "residual" in parts:
            residual = unit.parts.residual
            if isinstance(residual, nn.Module):
                convs += [m for m in residual.modules() if _is_conv(m)]
            else:  # a function of the block's modules: every conv of the block outside the shortcut
                ids = {id(m) for m in in_shortcut}
                convs += [m for m in unit.module.modules() if _is_conv(m) and id(m) not in ids]
        if "shortcut" in parts:
            convs += in_shortcut
        for conv in convs:
            if id(conv) not in seen:
                seen.add(id(conv))
                found.append((unit, conv))
    return found


def _input_sizes(model: nn.Module, convs, example_input) -> dict[int, tuple[int, ...]]:
    """Spatial input size of each conv (by id), from forward pre-hooks on one eval-mode pass."""
    sizes: dict[int, tuple[int, ...]] = {}
    handles = []
    for conv in convs:
        def hook(module, args, d=conv.weight.dim() - 2):
            if args and torch.is_tensor(args[0]):
                sizes.setdefault(id(module), tuple(args[0].shape[-d:]))
        handles.append(conv.register_forward_pre_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            else:
                model(*as_tuple(example_input))
    finally:
        for h in handles:
            h.remove()
    return sizes


def _names(model):
    return {id(m): name for name, m in model.named_modules()}


def _plan(model, example_input, input_sizes, parts, strided):
    """``[(unit, conv, name, size, stride)]`` for the convolutions to constrain."""
    check_choice("strided", strided, STRIDED)
    pairs = procrustes_units(model, parts=parts)
    if not pairs:
        raise ArgumentError(f"{type(model).__name__} has no convolution in its transition units' {' or '.join(parts)} "
                            "(option A's zero-padding shortcuts hold none): nothing to constrain.")
    names = _names(model)
    if (example_input is None) == (input_sizes is None):
        raise ArgumentError("give exactly one of example_input (a batch the model runs on, to measure each "
                            "convolution's input size) and input_sizes (a dict: convolution name -> size).")
    if example_input is not None:
        if torch.is_tensor(example_input):
            example_input = example_input.to(model_device(model))
        measured = _input_sizes(model, [c for _, c in pairs], example_input)
        missing = [names.get(id(c), "?") for _, c in pairs if id(c) not in measured]
        if missing:
            raise ArgumentError(f"the example input never reached {', '.join(missing)}: cannot tell their input sizes.")
        sizes = {id(c): measured[id(c)] for _, c in pairs}
    else:
        if not isinstance(input_sizes, Mapping):
            raise ArgumentTypeError(f"input_sizes must be a dict (convolution name -> spatial size), got "
                                    f"{type(input_sizes).__name__}.")
        sizes = {}
        missing = []
        for _, c in pairs:
            name = names.get(id(c))
            keys = [k for k in (name, c) if k in input_sizes]  # by name, or by the module itself
            if keys:
                sizes[id(c)] = input_sizes[keys[0]]
            else:
                missing.append(name)
        if missing:
            raise ArgumentError(f"input_sizes lacks {', '.join(missing)}; it needs every convolution of "
                                f"procrustes_units(model) by name.")
    plan = []
    for unit, conv in pairs:
        stride = 1 if strided == "stride1" else None
        size, name = sizes[id(conv)], names.get(id(conv), "?")
        try:  # check every size now, naming the convolution
            g = _geometry(conv, size, stride, None, None, None)
            g.check_support()
        except ArgumentError as e:
            hint = " (strided='stride1' clips the stride-1 operator instead)" if "divisible" in str(e) else ""
            raise ArgumentError(f"{name}: {e}{hint}") from None
        plan.append((unit, conv, name, size, stride))
    return plan


def procrustes_(model: nn.Module, example_input=None, *, input_sizes: Mapping | None = None, low: float = 1.0,
                high: float = 1.0, iterations: int = 1, parts: Iterable[str] = PARTS, strided: str = "exact"):
    """Project the convolutions of ``model``'s transition units once, in place (see
    :func:`project_conv_`), and report how near ``[low, high]`` their singular values now are.

    Parameters
    ----------
    model : nn.Module
    example_input : tensor, tuple or dict
        A batch the model runs on once (eval mode, no gradients) so that forward hooks read each
        convolution's spatial input size. Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    low, high, iterations : see :func:`project_conv_`
    parts : see :func:`procrustes_units`
    strided : {"exact", "stride1"}
        Which operator of a strided convolution to clip: its own (its stride must divide its
        input size), or the stride-1 operator of its kernel (see :func:`project_conv_`).

    Returns
    -------
    pandas.DataFrame
        One row per convolution: ``unit``, ``conv`` (its name), ``input_size``, ``stride`` (of the
        operator clipped), ``deviation_before`` and ``deviation_after`` (:func:`clip_deviation`,
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
    """
    import pandas as pd

    low, high = _bounds(low, high)
    iterations = check_int("iterations", iterations, 1)
    rows = []
    for unit, conv, name, size, stride in _plan(model, example_input, input_sizes, parts, strided):
        g = _geometry(conv, size, stride, None, None, None)
        before = clip_deviation(conv, size, low, high, stride=stride)
        project_conv_(conv, size, low, high, iterations=iterations, stride=stride)
        rows.append(dict(unit=unit.name, conv=name, input_size=g.n, stride=g.stride, deviation_before=before,
                         deviation_after=clip_deviation(conv, size, low, high, stride=stride),
                         structural_zeros=g.structural_zero_count()))
    return pd.DataFrame(rows, columns=["unit", "conv", "input_size", "stride", "deviation_before", "deviation_after",
                                       "structural_zeros"])


class ProcrustesCallback(Callback):
    """Train a Procrustes ResNet with :func:`unravel.train.fit`: after every ``every`` optimizer
    steps, clip the operator singular values of the transition units' convolutions into
    ``[low, high]`` (:func:`project_conv_`).

    Parameters
    ----------
    example_input : tensor, tuple or dict, optional
        A batch the model runs on once when training begins, to read each convolution's spatial
        input size (forward hooks, eval mode, no gradients). Or give ``input_sizes``.
    input_sizes : dict, optional
        Convolution name (as in ``model.named_modules()``) or the module itself -> spatial input size.
    every : int
        Project after steps ``every, 2*every, ...`` (Zaeemzadeh et al. project after the gradient
        update; their code does so at random half of the steps).
    low, high, iterations, parts, strided
        As in :func:`procrustes_`.
    at_start : bool
        Also project when training begins, so that training starts from constrained weights.

    Attributes
    ----------
    projections : int
        How many times the convolutions were projected.
    plan : list
        ``(unit, conv, name, input_size, stride)`` for each constrained convolution, once training began.

    Notes
    -----
    After each epoch the largest :func:`clip_deviation` over the constrained convolutions is
    added to the epoch's metrics as ``procrustes_deviation`` (measured after that epoch's test
    metrics, on the weights as they are then). With ``every > 1`` up to ``every - 1`` unprojected
    steps may follow the last projection; call :func:`procrustes_` after :func:`fit` for weights
    projected last.

    Examples
    --------
    >>> import torch, unravel
    >>> data = unravel.data.synthetic(80, input_shape=(1, 16), num_classes=2)  # 64 to train on
    >>> net = unravel.models.resnet_cifar(8, width=4, num_classes=2, in_channels=1, dims=1)
    >>> cb = unravel.procrustes.ProcrustesCallback(torch.zeros(1, 1, 16), every=2, iterations=3)
    >>> hist = unravel.train.fit(net, data, epochs=1, batch_size=16, callbacks=[cb], progress=False)
    >>> cb.projections, "procrustes_deviation" in hist[-1]
    (3, True)
    """

    def __init__(self, example_input=None, *, input_sizes: Mapping | None = None, every: int = 1,
                 low: float = 1.0, high: float = 1.0, iterations: int = 1, parts: Iterable[str] = PARTS,
                 strided: str = "exact", at_start: bool = True):
        if (example_input is None) == (input_sizes is None):
            raise ArgumentError("ProcrustesCallback needs exactly one of example_input (a batch, to measure each "
                                "convolution's input size) and input_sizes (a dict: convolution name -> size).")
        self.example_input = example_input
        self.input_sizes = input_sizes
        self.every = check_int("every", every, 1)
        self.low, self.high = _bounds(low, high)
        self.iterations = check_int("iterations", iterations, 1)
        self.parts = tuple(check_choice("parts", p, PARTS) for p in ((parts,) if isinstance(parts, str) else parts))
        self.strided = check_choice("strided", strided, STRIDED)
        if not isinstance(at_start, bool):
            raise ArgumentError(f"at_start={at_start!r} must be True or False.")
        self.at_start = at_start
        self.projections = 0
        self.plan: list = []

    def project(self, model: nn.Module | None = None) -> None:
        """Project every planned convolution once."""
        for _, conv, _, size, stride in self.plan:
            project_conv_(conv, size, self.low, self.high, iterations=self.iterations, stride=stride)
        self.projections += 1

    def deviation(self) -> float:
        """The largest :func:`clip_deviation` over the planned convolutions, as they are now."""
        return max((clip_deviation(conv, size, self.low, self.high, stride=stride)
                    for _, conv, _, size, stride in self.plan), default=0.0)

    def on_train_begin(self, model):
        self.plan = _plan(model, self.example_input, self.input_sizes, self.parts, self.strided)
        if self.at_start:
            self.project(model)

    def on_step_end(self, model, step, metrics):
        if step % self.every == 0:
            self.project(model)

    def on_epoch_end(self, model, metrics):
        metrics["procrustes_deviation"] = self.deviation()
