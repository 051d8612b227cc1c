"""The orthogonal (polar) factor of a batch of matrices by Newton-Schulz iterations, as
Zaeemzadeh et al.'s code computes it for each frequency of a convolution (no SVD).
"""

from __future__ import annotations

import math

import torch

from .._utils import check_int
from ..errors import ArgumentError

__all__ = ["newton_schulz_polar", "METHODS"]

#: How a frequency's matrix is projected: its SVD (exact), or Newton-Schulz iterations.
METHODS = ("svd", "newton_schulz")


def newton_schulz_polar(a: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """The polar factor ``U V^H`` of each matrix ``a = U S V^H`` (``[..., m, n]``), approximated by
    ``steps`` coupled Newton-Schulz iterations for the inverse square root of its Gram matrix.

    With ``G = a^H a`` (or ``a a^H`` when ``m < n``: the iterates are polynomials in ``G``, so both
    give the same factor), scaled to ``Y_0 = G / c``, ``Z_0 = I``, each step sets ``T = (3I - Z Y) / 2``,
    ``Y = Y T``, ``Z = T Z``; ``Z`` tends to ``(G / c)^(-1/2)`` and ``a Z / sqrt(c)`` to ``U V^H``.
    ``c = max(1, sqrt(2) ||G||_F)``: the Frobenius norm of the real ``2n x 2n`` formulation
    ``[[Re, Im], [-Im, Re]]`` that Zaeemzadeh et al.'s code iterates on (it scales only when that
    norm exceeds 1), so the iterates are theirs. Singular values ``s`` of ``a`` converge where
    ``s^2 / c`` is not small: a value with ``s^2 / c = e`` grows about 1.5-fold a step until near 1,
    so 10 steps (their default) leave ill-conditioned matrices short of orthogonal.

    Parameters
    ----------
    a : tensor
        Real or complex, ``[..., m, n]``; computed in its own dtype.
    steps : int
        Iterations (>= 1).

    Returns
    -------
    tensor
        Like ``a``: each matrix's approximate polar factor (orthonormal columns if ``m >= n``,
        rows otherwise).

    Examples
    --------
    >>> import torch
    >>> from unravel.procrustes import newton_schulz_polar
    >>> a = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    >>> newton_schulz_polar(a, steps=30).diag().tolist()
    [1.0, 1.0]
    """
    if not torch.is_tensor(a) or a.dim() < 2 or not (a.is_floating_point() or a.is_complex()):
        raise ArgumentError("newton_schulz_polar expects a floating or complex tensor of matrices [..., m, n].")
    steps = check_int("steps", steps, 1)
    m, n = a.shape[-2:]
    tall = m >= n
    ah = a.transpose(-2, -1).conj()
    gram = ah @ a if tall else a @ ah
    k = gram.shape[-1]
    c = (math.sqrt(2.0) * torch.linalg.matrix_norm(gram)).clamp(min=1.0)
    y = gram / c[..., None, None].to(gram.dtype)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device).expand_as(gram)
    z = eye.clone()
    for _ in range(steps):
        t = 0.5 * (3.0 * eye - z @ y)
        y = y @ t
        z = t @ z
    scale = c.sqrt()[..., None, None].to(a.dtype)
    return (a @ z if tall else z @ a) / scale
