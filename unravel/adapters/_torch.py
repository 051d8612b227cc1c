"""Built-in adapters for unravel's own blocks and ``torch.nn.TransformerEncoderLayer``; loaded on
first use through :mod:`unravel.adapters`.

Each adapter mirrors its block's forward exactly; ``tests/test_units.py`` checks that routing a
block through its units reproduces the block's output.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..units.parts import UnitParts
from . import Adapter, FunctionAdapter


def _project_block(m):
    # unravel.models blocks describe themselves
    return m.unit_parts()


class _TransformerEncoderLayerAdapter(Adapter):
    """Two units per ``nn.TransformerEncoderLayer``: self-attention, then feed-forward.

    ``norm_first=True`` (pre-LN): the LayerNorm sits inside the residual branch, post is the
    identity. ``norm_first=False`` (post-LN): post is the LayerNorm after the sum.
    """

    def parts(self, m):
        def attend(x, **kw):
            return m._sa_block(m.norm1(x) if m.norm_first else x, kw.get("attn_mask"),
                               kw.get("key_padding_mask"), kw.get("is_causal", False))

        # **_ : a feed-forward unit moved to an attention position ignores the masks
        def feed(x, **_):
            return m._ff_block(m.norm2(x) if m.norm_first else x)

        post1, post2 = (None, None) if m.norm_first else (m.norm1, m.norm2)
        return [UnitParts(residual=attend, post=post1, label="attention"),
                UnitParts(residual=feed, post=post2, label="feedforward")]

    def route(self, m, call_unit, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        # The same mask canonicalisation as TransformerEncoderLayer.forward; the fused fast path is
        # not taken, so routed outputs equal the layer's slow-path forward.
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(src_mask), other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None,
                                     other_name="", target_type=src.dtype, check_other=False)
        x = call_unit(0, src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return call_unit(1, x)


CLASSES = {
    "unravel.models._blocks.ResidualBlock": FunctionAdapter(_project_block),
    "torch.nn.modules.transformer.TransformerEncoderLayer": _TransformerEncoderLayerAdapter(),
}
