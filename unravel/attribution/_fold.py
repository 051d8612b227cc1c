"""Eval-mode batch norms and ReLU masks folded into the convolutions of the units' branches, for
the input VJPs of the exact decomposition (issue 29). It changes the recorded backward only: the
forward values are the modules' own.

In eval mode a batch norm is a per-channel affine map, ``bn(t) = a * t + b``, so the VJP of
``bn(conv(x))`` is ``conv^T(a * g)``: the convolution's input-gradient with its weight scaled by
``a`` on its output channels. A ``bn -> relu -> conv`` chain before a convolution (the
pre-activation order) likewise scales its input channels, and the ReLU's derivative is a mask
applied in place to the fresh input gradient. Forward hooks on the units' modules splice one
autograd node per such segment into the recording, in place of the convolution's, the batch
norms' and the ReLU's; the nodes they replace are never run. The folded VJP equals the unfolded
one up to floating-point rounding (``tests/test_attribution_fast.py``).

Only what the hooks can see is folded: ``nn.Conv1d/2d/3d`` with zero padding, ``nn.BatchNorm*``
modules that use their running statistics (never one in train mode: it normalises with the
batch's statistics, which depend on the input), and ``nn.ReLU`` modules that do not work in
place. Anything else keeps autograd's own backward. Parameter gradients are not folded (the
scaled weights are not the parameters): :func:`folding` is used for ``wrt="input"`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass
class _Segment:
    """``[bn ->] [relu ->] conv [-> bn]``: what the backward of one spliced node computes."""

    conv: nn.Module
    pre: torch.Tensor                    # what the segment's gradient flows to
    shape: tuple                         # the convolution's input shape
    in_scale: torch.Tensor | None = None   # a batch norm before the convolution (per input channel)
    relu: torch.Tensor | None = None       # the output of a ReLU before the convolution
    version: int = 0                       # its version then
    out_scale: torch.Tensor | None = None  # batch norms after the convolution (per output channel)
    value: torch.Tensor | None = None      # the forward value, until the node is made
    like: torch.Tensor | None = None       # an unfilled tensor of the input's shape (read for its shape only)

    def weight(self):
        w = self.conv.weight.detach()
        d = w.dim() - 2
        if self.out_scale is not None:
            w = w * self.out_scale.view((-1,) + (1,) * (d + 1))
        if self.in_scale is not None:
            w = w * self.in_scale.view((1, -1) + (1,) * d)
        return w


def _batched(t) -> bool:
    """Whether ``t`` is a slice of a batched VJP (``is_grads_batched`` runs backward under the
    legacy vmap; ``torch.func`` under functorch's)."""
    f = torch._C._functorch
    return any(getattr(f, name, lambda _: False)(t) for name in ("is_legacy_batchedtensor", "is_batchedtensor"))


class _Spliced(torch.autograd.Function):
    """One node in place of a segment's nodes: forward returns the value the modules computed;
    backward is one input-gradient convolution with the folded weight, and the ReLU's mask applied
    in place to its (fresh) result."""

    @staticmethod
    def forward(ctx, pre, weight, seg):
        # the value is handed over on ``seg`` rather than as an input: an input returned as-is
        # would come back as a view, which an in-place ReLU after it may not modify
        value, seg.value = seg.value, None
        ctx.seg, ctx.weight = seg, weight
        return value

    @staticmethod
    def backward(ctx, g):
        seg, c = ctx.seg, ctx.seg.conv
        d = len(seg.shape) - 2
        g = g.contiguous()
        # a dense stand-in for the input (an expanded one, as torch.nn.grad passes, is copied
        # to a dense one inside the CPU kernel: a full pass per call)
        gi = torch.ops.aten.convolution_backward(
            g, seg.like, ctx.weight, None, list(c.stride), list(c.padding),
            list(c.dilation), False, [0] * d, c.groups, (True, False, False))[0]
        if seg.relu is not None:  # threshold_backward's rule: zero where the ReLU's output is <= 0
            if seg.relu._version != seg.version:  # as autograd refuses a saved tensor changed in place
                raise RuntimeError("a ReLU output that the folded backward of a unit needs was modified by an "
                                   "in-place operation after the convolution read it")
            if _batched(gi):  # a batched VJP (is_grads_batched): vmap has no rule for out= kernels
                gi = torch.ops.aten.threshold_backward(gi, seg.relu, 0)
            else:  # in place, on the fresh gradient
                torch.ops.aten.threshold_backward.grad_input(gi, seg.relu, 0, grad_input=gi)
        return gi, None, None


def _bn_scale(bn):
    """The per-channel factor of an eval-mode batch norm, or None where it is not affine in its
    input (train mode, or no running statistics)."""
    if bn.training or bn.running_var is None or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        return None
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        return scale if bn.weight is None else scale * bn.weight.detach()


class _Folder:
    """Forward hooks that splice segments while the units run; :meth:`clear` after each unit (the
    maps hold tensors, keyed by ``id``)."""

    def __init__(self):
        # keyed by id: (tensor, its version when listed, ...)
        self.convs: dict[int, tuple] = {}   # conv (or spliced) output -> segment
        self.norms: dict[int, tuple] = {}   # eval-mode bn output -> input, scale
        self.relus: dict[int, tuple] = {}   # relu output -> input
        self.likes: dict[tuple, torch.Tensor] = {}  # one unfilled stand-in per input shape

    def clear(self):
        self.convs.clear(), self.norms.clear(), self.relus.clear()

    def close(self):
        self.clear()
        self.likes.clear()

    @staticmethod
    def _get(table, t):
        # the same tensor, unchanged since it was listed (an in-place op after a convolution,
        # such as a ReLU(inplace=True), returns the same object with new values)
        hit = table.get(id(t))
        return hit[2:] if hit is not None and hit[0] is t and hit[1] == t._version else None

    def _splice(self, seg, value):
        if not seg.pre.requires_grad or not torch.is_grad_enabled():
            return None
        seg.value = value.detach()
        key = (seg.shape, value.dtype, value.device)
        if key not in self.likes:
            self.likes[key] = value.new_empty(seg.shape)
        seg.like = self.likes[key]
        out = _Spliced.apply(seg.pre, seg.weight(), seg)
        self.convs[id(out)] = (out, out._version, seg)
        return out

    def conv_hook(self, conv, args, out):
        if len(args) != 1 or not torch.is_tensor(out):
            return None
        x = args[0]
        seg = _Segment(conv, x, tuple(x.shape))
        relu = self._get(self.relus, x)
        if relu is not None:
            seg.pre, seg.relu, seg.version = relu[0], x.detach(), x._version
        norm = self._get(self.norms, seg.pre)
        if norm is not None and conv.groups == 1:
            seg.pre, seg.in_scale = norm[0], norm[1]
        if seg.pre is x:  # nothing to fold yet: a batch norm after it may be
            self.convs[id(out)] = (out, out._version, seg)
            return None
        return self._splice(seg, out)

    def norm_hook(self, bn, args, out):
        if len(args) != 1 or not torch.is_tensor(out):
            return None
        scale = _bn_scale(bn)
        if scale is None:
            return None
        t = args[0]
        conv = self._get(self.convs, t)
        if conv is None:
            self.norms[id(out)] = (out, out._version, t, scale)
            return None
        seg = conv[0]
        s = scale if seg.out_scale is None else seg.out_scale * scale
        return self._splice(dataclasses.replace(seg, out_scale=s), out)

    def relu_hook(self, relu, args, out):
        if len(args) == 1 and torch.is_tensor(out) and out is not args[0]:
            self.relus[id(out)] = (out, out._version, args[0])
        return None


def _foldable_conv(m):
    return (isinstance(m, _CONVS) and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and type(m).forward in (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward))


def _foldable_norm(m):
    return (isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
            and type(m).forward is nn.modules.batchnorm._BatchNorm.forward)


@contextlib.contextmanager
def folding(units, enabled=True):
    """Hooks on the modules of ``units`` that fold eval-mode batch norms and ReLU masks into the
    convolutions' backward; yields the :class:`_Folder` (None when not enabled), whose ``clear``
    the recording calls after each unit. A module in train mode is never folded."""
    if not enabled:
        yield None
        return
    folder = _Folder()
    handles = []
    seen = set()
    try:
        for u in units:
            for m in u.module.modules():
                if id(m) in seen:
                    continue
                seen.add(id(m))
                if _foldable_conv(m):
                    handles.append(m.register_forward_hook(folder.conv_hook))
                elif _foldable_norm(m):
                    handles.append(m.register_forward_hook(folder.norm_hook))
                elif type(m) is nn.ReLU and not m.inplace:
                    handles.append(m.register_forward_hook(folder.relu_hook))
        yield folder
    finally:
        for h in handles:
            h.remove()
        folder.close()
