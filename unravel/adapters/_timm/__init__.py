"""Built-in adapters for timm's residual blocks, matched by qualified class name without importing
timm; loaded on first use through :mod:`unravel.adapters`.

One module per kind of block: :mod:`~unravel.adapters._timm._base` (ResNet, ViT, Swin, ConvNeXt
and the other first families; see its docstring), :mod:`~unravel.adapters._timm._spec` (specs of
a block's attributes that the others build on), :mod:`~unravel.adapters._timm._vit`
(transformer blocks), :mod:`~unravel.adapters._timm._conv` (convolutional blocks),
:mod:`~unravel.adapters._timm._mixed` (hybrid and multi-output blocks) and
:mod:`~unravel.adapters._timm._stages` (whole stages). Private to :mod:`unravel.adapters`.
"""

from . import _base, _conv, _mixed, _stages, _vit

#: Qualified class name -> Adapter, every module's (in the order above).
CLASSES = {k: v for m in (_base, _vit, _conv, _mixed, _stages) for k, v in m.CLASSES.items()}
#: Layouts of timm blocks.
LAYOUTS = [layout for m in (_base, _vit, _conv, _mixed, _stages) for layout in getattr(m, "LAYOUTS", [])]
