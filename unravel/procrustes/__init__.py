"""Procrustes ResNets: norm-preserving transition units through the singular values of convolutions.

Zaeemzadeh, Rahnavard & Shah [1]_ show that identity shortcuts make residual units nearly
norm-preserving, and that the *transition* (projection) units, where the resolution and the
width change, are where a ResNet loses norm-preservation. Their Procrustes ResNet constrains the
singular values of the convolution *operators* in those units after gradient steps (their code:
at a random half of the steps), with the projection of Sedghi, Gupta & Long [2]_.

**Two recipes** (:data:`RECIPES`, ``recipe=`` of :func:`procrustes_` and
:class:`ProcrustesCallback`). Ours clips the transition units' own (strided) operators to
singular values 1 by the SVD after every step. The authors' code also constrains the stem, clips
the stride-1 operator of each kernel to singular values ``sqrt(c_out / c_in)`` by 10 Newton-Schulz
iterations (:func:`newton_schulz_polar`) instead of the SVD, and does so after a random half of the
steps; their net is a bottleneck ProcResNet (:func:`unravel.models.procresnet`) whose transitions
are 1x1 convolutions of stride 2.

**The operator of a convolution.** A convolution with circular padding is a linear map of its
whole input, ``c_in x n`` (1-D) or ``c_in x n1 x n2`` (2-D) numbers, to its whole output. With
stride 1 the discrete Fourier transform block-diagonalises it: zero-pad each ``c_out x c_in``
slice of the kernel to ``n1 x n2`` and take its 2-D FFT; at each of the ``n1 n2`` frequencies
the ``c_out x c_in`` complex matrix of kernel coefficients has singular values that are singular
values of the operator, and together they are all of them [2]_ (1-D: ``n`` frequencies; 3-D
alike). A convolution of stride ``s`` (``s`` dividing ``n``) is a stride-1 convolution of the
*polyphase* components of its input: input position ``s*j + r`` becomes position ``j`` of channel
``(c, r)``. Its operator's singular values are therefore, exactly, those of the ``n/s``-point FFT
of a ``c_out x (c_in s^d)`` kernel; this module computes them that way (``stride=1`` gives the
stride-1 operator of the same kernel instead; see :func:`conv_singular_values`).

**What is exact and what is approximate.** :func:`conv_singular_values` is exact (to rounding)
for the circular-padding operator, with any stride dividing the input size, dilation and groups.
PyTorch's ``padding_mode="circular"`` computes that operator when ``2*padding ==
dilation*(kernel_size - 1)`` (the "same" convolutions of ResNets). For zero padding (PyTorch's
default, and unravel's models) the circular operator is the usual stand-in [1]_ [2]_: the two
differ only at the borders. Clipping the singular values of each frequency's matrix gives
exactly the nearest linear map (in Frobenius norm) with singular values in ``[low, high]``, but
its kernel fills the whole ``n x n`` input. Restricting it back to the layer's ``k x k``
support (what [1]_ and [2]_ do) leaves singular values only *near* ``[low, high]``; repeating
the two steps (``iterations``, alternating projections) shrinks the gap, and
:func:`clip_deviation` measures it.

References
----------
.. [1] A. Zaeemzadeh, N. Rahnavard, M. Shah. "Norm-Preservation: Why Residual Networks Can
   Become Extremely Deep?" IEEE TPAMI, 2021.
.. [2] H. Sedghi, V. Gupta, P. M. Long. "The Singular Values of Convolutional Layers." ICLR 2019.
"""

from .model import RECIPES, ProcrustesCallback, procrustes_, procrustes_units
from .operators import clip_deviation, conv_singular_values, project_conv_, project_kernel
from .polar import newton_schulz_polar

__all__ = [
    "newton_schulz_polar",
    "RECIPES",
    "conv_singular_values",
    "clip_deviation",
    "project_kernel",
    "project_conv_",
    "procrustes_units",
    "procrustes_",
    "ProcrustesCallback",
]
