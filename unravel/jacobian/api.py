"""Jacobian spectra of residual units: :func:`jacobian_spectra`, the singular values of each
unit's input-output Jacobian.

A unit maps its input ``x_l`` to its output ``x_{l+1} = post(shortcut(x_l) + residual(x_l))``.
Its Jacobian at one example, ``J = d x_{l+1} / d x_l`` (the input and output flattened, the batch
dimension dropped), says how the unit stretches perturbations: singular values near 1 preserve
the norm of the signal forward and of the gradient backward (Zaeemzadeh et al. [1]_), values
above 1 amplify, values below 1 damp. :func:`jacobian_spectra` measures them per unit and per
example, either exactly (the full Jacobian from batched vector-Jacobian products, then its
singular values) or the ``top`` largest (and ``bottom`` smallest) from Jacobian-vector and
vector-Jacobian products only, by block Golub-Kahan-Lanczos bidiagonalisation with full
reorthogonalisation.

The measurement runs in eval mode (BatchNorm uses its running statistics, so a unit acts on each
example separately); every module's ``training`` flag is restored afterwards and nothing else of
the model is touched. Inside an active lesion (:func:`unravel.lesion.delete`,
:func:`unravel.lesion.reorder`) it measures the units of the lesioned network: a deleted unit is
its bypass ``post(shortcut(x))``.

References
----------
.. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can Become
   Extremely Deep?" IEEE TPAMI 43(11), 2021.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import as_tuple, check_choice, check_int, eval_mode
from ..errors import ArgumentError, ArgumentTypeError
from ..units import ResidualUnit, find_units
from .lanczos import _exact, _lanczos
from .operator import _Linearised, _unit_map
from .record import _Recorded, _record

__all__ = ["jacobian_spectra", "METHODS", "COLUMNS", "MEMORY_BUDGET"]

METHODS = ("auto", "exact", "lanczos")
COLUMNS = ["unit", "name", "kind", "projection", "example", "rank", "singular_value"]
#: Memory (bytes) that one group of examples may take for its Jacobians or Lanczos bases.
MEMORY_BUDGET = 512 * 2**20


def _draws(generator):
    """``draw(shape, dtype, device)``: standard normal tensors from one CPU ``torch.Generator``
    (deterministic given the seed)."""
    if isinstance(generator, torch.Generator):
        gen = generator
    elif generator is None:
        gen = torch.Generator()
        gen.seed()
    elif isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        gen = torch.Generator().manual_seed(int(generator))
    else:
        raise ArgumentTypeError(f"generator must be None, an int seed or a torch.Generator; got "
                                f"{type(generator).__name__}.")

    def make(dtype, device):
        def draw(shape):
            return torch.randn(shape, generator=gen, dtype=torch.float64, device=gen.device).to(device, dtype)
        return draw

    return make


@contextlib.contextmanager
def _math_attention():
    """Scaled dot-product attention by its composite ("math") kernel: the fused kernels have no
    forward-mode derivatives and no double backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _groups(batch, size):
    return [torch.arange(s, min(s + size, batch)) for s in range(0, batch, size)]


def jacobian_spectra(model: nn.Module, inputs, *, units=None, top: int | None = None, bottom: int | None = None,
                     method: str = "auto", exact_max: int = 4096, tol: float | None = None,
                     max_iter: int | None = None, block_size: int | None = None, batch_size: int | None = None,
                     chunk_size: int | None = None, generator: Any = 0, progress: bool = False):
    """Singular values of each unit's input-output Jacobian, per example.

    For unit ``l`` and example ``i``, the Jacobian ``J = d unit_l(x_l)_i / d (x_l)_i`` of the
    unit's output with respect to its own input at that example, both flattened (the input shape
    without its batch dimension: a unit on ``[B, C, H, W]`` has ``C*H*W`` input coordinates). Its
    singular values say how the unit scales perturbations of its input: near 1 it preserves
    their norm (and the gradient's on the way back), as Zaeemzadeh et al. argue identity
    shortcuts do.

    Parameters
    ----------
    model : nn.Module
        Any model :func:`unravel.find_units` supports. Measured in eval mode; every module's
        ``training`` flag is restored afterwards, nothing else is touched.
    inputs : tensor, tuple of tensors, or dict of keyword inputs
        One batch; the first dimension of each unit's input is its batch (example) dimension.
    units : int, str, ResidualUnit or iterable of them, optional
        The units to measure (indices, names or units, as in :func:`unravel.lesion.delete`);
        default all.
    top : int, optional
        Only the ``top`` largest singular values (``rank`` 0..top-1).
    bottom : int, optional
        Also (or only) the ``bottom`` smallest singular values (ranks counted from the largest,
        so the smallest has rank ``min(d_in, d_out) - 1``). Exact on units small enough for
        ``method="exact"``; by Lanczos the smallest values converge slowly (often only once the
        basis nearly spans the space, where the result is exact): a warning says when they did
        not within ``max_iter``.
    method : {"auto", "exact", "lanczos"}
        ``"exact"``: the full Jacobian of each example from ``d_out`` vector-Jacobian products
        (all examples of a group at once), then ``torch.linalg.svdvals``; it costs ``d_out``
        backward passes through the unit and ``d_out * d_in`` numbers per example.
        ``"lanczos"``: block Golub-Kahan-Lanczos bidiagonalisation with full
        reorthogonalisation, from Jacobian-vector and vector-Jacobian products only, until the
        wanted values' residuals fall below ``tol``; it needs ``top`` or ``bottom``.
        ``"auto"``: exact when ``top`` is not given and both dimensions are at most
        ``exact_max``; otherwise Lanczos.
    exact_max : int
        The largest input or output dimension for which ``"auto"`` builds full Jacobians.
    tol : float, optional
        Lanczos stopping rule: every wanted Ritz value's residual at most ``tol`` times the
        largest singular value. Default the square root of the dtype's machine epsilon (about
        1.5e-8 in float64, 3.5e-4 in float32); the values themselves are usually more accurate
        (a Ritz value is never above the singular value it approximates).
    max_iter : int, optional
        Most Lanczos vectors per example (each costs one Jacobian-vector and one vector-Jacobian
        product); default ``max(40 * (top + bottom), 300)``, never more than
        ``min(d_in, d_out)``, where the result is exact. A warning names the units with examples
        that did not converge.
    block_size : int, optional
        Lanczos vectors added per step. A block of ``b`` vectors finds up to ``b`` copies of a
        repeated singular value (one vector finds one: a unit whose residual branch is zero has
        the singular value 1 many times over). Default ``max(top, bottom)``, safe for any
        multiplicity; ``block_size=1`` needed two to five times fewer products and less time on
        ResNet units whose largest values are distinct.
    batch_size : int, optional
        Examples measured together (one product serves all of them). Default: as many as keep
        the Jacobians (exact) or Lanczos bases under 512 MiB.
    chunk_size : int, optional
        Products batched per backward call (``is_grads_batched``; 1 is a loop of single
        products). Default 128 on a GPU; on a CPU 16 for the exact method and 1 for Lanczos
        (measured fastest there).
    generator : int, torch.Generator or None
        Seed of the Lanczos start vectors (default 0: the same values every call); None draws a
        fresh seed.
    progress : bool
        A tqdm bar over units.

    Returns
    -------
    pandas.DataFrame
        One row per unit, example and singular value, with columns ``unit`` (its position, as
        :func:`unravel.find_units` numbers it), ``name``, ``kind``, ``projection``, ``example``
        (index in the batch), ``rank`` (0 = largest) and ``singular_value``. ``frame.attrs["units"]``
        lists per unit its dimensions, the method used and (Lanczos) the block size, the
        vectors used and how many examples did not converge.

    Raises
    ------
    ArgumentError
        For an unknown method, ``top`` or ``bottom`` below 1 or above a unit's number of singular
        values ``min(d_in, d_out)``, an unknown unit, units that did not run, a unit too large for
        ``"auto"`` without ``top``, or ``"lanczos"`` without ``top`` or ``bottom``.

    Notes
    -----
    Products with a group of examples give every example its own Jacobian product, which holds
    when the unit acts on each example separately, as in eval mode (BatchNorm with running
    statistics, convolutions, attention within a sequence). Each group's output is compared with
    the unit's recorded output, and one vector-Jacobian product checks that the first example's
    output does not depend on the others' inputs; where either fails (keyword tensors that could
    not be cut to the group, a unit that mixes examples), the unit is measured one example at a
    time inside the whole recorded batch, the others held fixed: ``d unit(x)_i / d x_i``.
    Jacobian-vector products come from double backward (the transpose of the vector-Jacobian
    product) where it passes an adjoint test on the unit, else from forward-mode AD; scaled
    dot-product attention runs on its composite kernel while measuring (the fused kernels have
    neither).

    Examples
    --------
    >>> import torch, unravel
    >>> _ = torch.manual_seed(0)
    >>> net = unravel.models.resnet_cifar(8, width=4, in_channels=1, dims=1)
    >>> spectra = unravel.jacobian_spectra(net, torch.randn(2, 1, 16))
    >>> spectra.columns.tolist()
    ['unit', 'name', 'kind', 'projection', 'example', 'rank', 'singular_value']
    >>> spectra.groupby("name").size().to_dict()  # 3 units x 2 examples x 64 singular values
    {'stage1.0': 128, 'stage2.0': 128, 'stage3.0': 128}
    >>> top = unravel.jacobian_spectra(net, torch.randn(2, 1, 16), units="stage1.0", top=3)
    >>> top["rank"].tolist()
    [0, 1, 2, 0, 1, 2]
    """
    import pandas as pd

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"jacobian_spectra expects a torch.nn.Module, got {type(model).__name__}.")
    check_choice("method", method, METHODS)
    top = check_int("top", top, minimum=1, allow_none=True)
    bottom = check_int("bottom", bottom, minimum=1, allow_none=True)
    exact_max = check_int("exact_max", exact_max, minimum=1)
    max_iter = check_int("max_iter", max_iter, minimum=1, allow_none=True)
    block_size = check_int("block_size", block_size, minimum=1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1):
        raise ArgumentError(f"tol={tol!r} must be a number in (0, 1) or None.")
    if method == "lanczos" and top is None and bottom is None:
        raise ArgumentError("method='lanczos' finds the top (or bottom) singular values only: give top=k "
                            "(or bottom=k), or use method='exact' for the whole spectrum.")
    make_draw = _draws(generator)
    if not isinstance(inputs, dict):
        inputs = as_tuple(inputs)
        if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].dim() == 0 or inputs[0].shape[0] == 0:
            raise ArgumentError("inputs must be a non-empty batch (a tensor, a tuple of tensors, or a dict of "
                                "keyword inputs).")
    all_units = find_units(model)
    if units is None:
        chosen = list(all_units)
    else:
        from ..units import resolve_units

        chosen = sorted(resolve_units(all_units, units), key=lambda u: u.index)

    with eval_mode(model), _math_attention():
        recorded = _record(model, chosen, inputs)
        plans = [_plan(u, recorded[u.index], top, bottom, method, exact_max) for u in chosen]

        from tqdm.auto import tqdm

        columns = {c: [] for c in COLUMNS}
        info, unconverged = [], []
        for u, (how, d_in, d_out) in tqdm(list(zip(chosen, plans)), desc="jacobian", unit="unit",
                                          disable=not progress, leave=False):
            rec = recorded[u.index]
            values, ranks, meta = _measure(rec, how, d_in, d_out, top, bottom, tol, max_iter, block_size,
                                           batch_size, chunk_size, make_draw)
            if meta.get("unconverged"):
                unconverged.append(f"{u.index} ({u.name}): {meta['unconverged']} of {values.shape[0]} examples")
            info.append({"unit": u.index, "name": u.name, "input_dim": d_in, "output_dim": d_out, **meta})
            B, k = values.shape
            columns["unit"].append(np.full(B * k, u.index, dtype=np.int64))
            columns["name"].extend([u.name] * (B * k))
            columns["kind"].extend([u.kind] * (B * k))
            columns["projection"].append(np.full(B * k, u.projection, dtype=bool))
            columns["example"].append(np.repeat(np.arange(B, dtype=np.int64), k))
            columns["rank"].append(np.tile(np.asarray(ranks, dtype=np.int64), B))
            columns["singular_value"].append(values.reshape(-1))
    if unconverged:
        warnings.warn("jacobian_spectra: Lanczos did not reach tol within max_iter for units "
                      + "; ".join(unconverged) + ". Raise max_iter (or tol), or use method='exact'.",
                      RuntimeWarning, stacklevel=2)
    frame = pd.DataFrame({
        "unit": np.concatenate(columns["unit"]) if columns["unit"] else np.zeros(0, np.int64),
        "name": pd.Series(columns["name"], dtype=object),
        "kind": pd.Series(columns["kind"], dtype=object),
        "projection": np.concatenate(columns["projection"]) if columns["projection"] else np.zeros(0, bool),
        "example": np.concatenate(columns["example"]) if columns["example"] else np.zeros(0, np.int64),
        "rank": np.concatenate(columns["rank"]) if columns["rank"] else np.zeros(0, np.int64),
        "singular_value": (np.concatenate(columns["singular_value"]) if columns["singular_value"]
                           else np.zeros(0, np.float64)),
    }, columns=COLUMNS)
    frame.attrs["units"] = info
    return frame


def _plan(unit: ResidualUnit, rec: _Recorded, top, bottom, method, exact_max) -> tuple[str, int, int]:
    """The method for one unit, and its dimensions; checks ``top`` and ``bottom`` against them."""
    if not rec.x.is_floating_point() or not rec.out_dtype.is_floating_point:
        raise ArgumentError(f"unit {unit.index} ({unit.name}) maps {rec.x.dtype} to {rec.out_dtype}; Jacobians need "
                            "floating-point inputs and outputs.")
    d_in, d_out = math.prod(rec.x.shape[1:]), math.prod(rec.out_shape[1:])
    full = min(d_in, d_out)
    for name, k in (("top", top), ("bottom", bottom)):
        if k is not None and k > full:
            raise ArgumentError(f"{name}={k} is larger than the number of singular values of unit {unit.index} "
                                f"({unit.name}), min(d_in, d_out) = min({d_in}, {d_out}) = {full}; give "
                                f"{name} <= {full} (or choose units=...).")
    if method == "auto":
        small = max(d_in, d_out) <= exact_max
        if top is None and bottom is None and not small:
            raise ArgumentError(f"unit {unit.index} ({unit.name}) has {d_in} input and {d_out} output coordinates, "
                                f"more than exact_max={exact_max}: give top=k for its k largest singular values "
                                "(Lanczos), or method='exact' (or a larger exact_max) for its full spectrum.")
        method = "exact" if top is None and small else "lanczos"
    return method, d_in, d_out


def _measure(rec: _Recorded, how, d_in, d_out, top, bottom, tol, max_iter, block_size, batch_size, chunk_size,
             make_draw):
    """Singular values ``[B, k]`` (numpy, float64), their ranks, and what was done."""
    x = rec.x
    B = x.shape[0]
    dtype, device = x.dtype, x.device
    elem = torch.finfo(dtype).bits // 8
    full = min(d_in, d_out)
    top_k, bottom_k = (top or 0), (bottom or 0)
    # measured on a CPU: batched products help the exact method a little and slow Lanczos's
    # blocks (double backward under vmap) by about 2x
    cpu_chunk = 16 if how == "exact" else 1
    chunk = chunk_size if chunk_size is not None else (cpu_chunk if device.type == "cpu" else 128)
    if how == "exact":
        per_example = (2 * d_out * d_in + d_in + d_out) * elem
    else:
        block = block_size if block_size is not None else max(top_k, bottom_k)
        if max_iter is None:
            max_iter = max(40 * (top_k + bottom_k), 300)
        tol = tol if tol is not None else math.sqrt(torch.finfo(dtype).eps)
        vectors = min(full, max(max_iter, top_k + bottom_k))
        per_example = ((2 * vectors + block) * (d_in + d_out) + 2 * vectors * vectors) * elem
    size = batch_size or max(1, min(B, MEMORY_BUDGET // max(per_example, 1)))
    draw = make_draw(dtype, device)

    ranks = list(range(full)) if top is None and bottom is None else sorted(
        set(range(top_k)) | set(range(full - bottom_k, full)))

    def columns(n):
        # n <= full values, descending: the largest stand for the largest of J, and (Lanczos,
        # n < full) the i-th smallest Ritz value for the i-th smallest singular value
        return [r if n == full or r < top_k else n - (full - r) for r in ranks]

    embed, y_full = False, None
    pieces, meta = [], {"method": how}
    total_steps, unconverged = 0, 0
    groups = _groups(B, size)
    g_index = 0
    while g_index < len(groups):
        rows = groups[g_index].to(device)
        try:
            op = _Linearised(_unit_map(rec, rows, embed), x.index_select(0, rows))
        except Exception:
            if embed:
                raise
            op = None  # keyword tensors that do not fit the group (a mask cut where it should not be)
        if not embed and y_full is None:
            y_full = rec.output()
        if not embed and (op is None or not _reproduces(op.y, y_full.index_select(0, rows)) or _mixes(op)):
            # the group alone does not compute what the unit computed in the batch, or its
            # examples interact: this and the later groups one example at a time, inside the
            # recorded batch
            embed = True
            groups = [r for grp in groups[g_index:] for r in grp.split(1)]
            g_index = 0
            continue
        if how == "exact":
            s = _exact(op, d_in, d_out, chunk)
        else:
            s, steps_taken, conv = _lanczos(op, d_in, d_out, top_k, bottom_k, tol, max_iter, block, chunk, draw)
            total_steps = max(total_steps, steps_taken)
            unconverged += int((~conv).sum())
        s = s.detach().to("cpu", torch.float64)
        pieces.append(s[:, columns(s.shape[1])])
        del op
        g_index += 1
    values = torch.cat(pieces).numpy()
    if how == "lanczos":
        meta.update(block=block, vectors=total_steps, unconverged=unconverged)
    if embed:
        meta["one_example_at_a_time"] = True
    return values, ranks, meta


def _mixes(op: _Linearised) -> bool:
    """Whether the output of the group's first example reaches the inputs of the others (one
    vector-Jacobian product: exact zeros where the unit acts on each example separately)."""
    if op.shape_in[0] < 2 or op.constant:
        return False
    u = torch.zeros((op.shape_out[0], math.prod(op.shape_out[1:])), dtype=op.y.dtype, device=op.y.device)
    u[0] = 1.0
    return bool((op.vjp(u)[1:] != 0).any())


def _reproduces(y: torch.Tensor, recorded: torch.Tensor) -> bool:
    """Whether a group's output equals the rows the unit computed in the whole batch (up to the
    rounding of another batch size)."""
    if y.shape != recorded.shape:
        return False
    if y.is_floating_point():
        scale = float(recorded.abs().max()) if recorded.numel() else 0.0
        # loose in low precision: TF32 convolutions round differently at another batch size
        tol = (1e-8 if y.dtype == torch.float64 else 1e-3) * max(scale, 1.0)
        return bool(torch.allclose(y.detach(), recorded, rtol=0.0, atol=tol))
    return bool(torch.equal(y.detach(), recorded))
