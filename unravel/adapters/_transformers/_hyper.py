"""Adapters for ``transformers`` layers with hyper-connections (DeepSeek-V4's manifold-constrained
mHC, HY-V4's independent HC): the residual stream is ``hc_mult`` copies, a hyper-connection
module reads them into one input for the attention or MLP, and writes its output back to every
copy. Private: :mod:`unravel.adapters._transformers` names them.

How such a layer maps to units: each sublayer is one unit, ``y = shortcut(x) + residual(x)``.
DeepSeek-V4 mixes the copies on the shortcut, ``shortcut(x) = comb(x)^T x`` with a doubly
stochastic ``comb`` computed from ``x`` (a projection shortcut: ``projection=True``), and
``residual(x) = post(x) * attn(norm(collapse(x)))``. HY-V4 keeps the copies on an identity
shortcut (in float32, cast back after the sum). Both are written out statement for statement
from the layers' forwards, and checked against them by :func:`unravel.verify_units`.
"""

from __future__ import annotations

import torch

from ...units.parts import UnitParts
from .. import Adapter
from ._read import _bind, _call, _check_signature, _known_args, _route_frame


class _DeepseekV4Adapter(Adapter):
    """``DeepseekV4DecoderLayer``: ``post * f(norm(collapsed)) + comb^T x`` around attention,
    then the MLP (which takes ``input_ids`` for hash routing)."""

    KNOWN = ("input_ids",)
    REQUIRED = ("hidden_states", "input_ids")

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)

        def unit(hc, norm, core, label, first):
            def branch(x, post, collapsed, kw):
                out = _call(core, norm(collapsed), **kw)
                out = out[0] if first else out
                return post.to(x.dtype).unsqueeze(-1) * out.unsqueeze(-2)

            def residual(x, **kw):
                post, _, collapsed = hc(x)
                return branch(x, post, collapsed, kw)

            def shortcut(x):
                return torch.matmul(hc(x)[1].to(x.dtype).transpose(-1, -2), x)

            def forward(x, **kw):  # the layer's own order: one call of the hyper-connection
                post, comb, collapsed = hc(x)
                return branch(x, post, collapsed, kw) + torch.matmul(comb.to(x.dtype).transpose(-1, -2), x)

            return UnitParts(residual=residual, shortcut=shortcut, projection=True, forward=forward, label=label)

        return [unit(m.attn_hc, m.input_layernorm, m.self_attn, "attention", True),
                unit(m.ffn_hc, m.post_attention_layernorm, m.mlp, "mlp", False)]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        return _route_frame(m, call_unit, [v["hidden_states"], (0, dict(v.get("kwargs", {}))),
                                           (1, {"input_ids": v["input_ids"]})], lambda x, _: x)


class _HYV4Adapter(Adapter):
    """``HYV4DecoderLayer``: ``(post * f(norm(collapsed)) + x).to(dtype)`` in float32 around
    attention (which also returns the top-k indices the layer passes on) and the MLP."""

    KNOWN = ("attention_mask", "position_ids", "cache", "use_cache", "position_embeddings", "prev_topk_indices")
    REQUIRED = ("hidden_states",)

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)

        def cast_back(z):  # the layer casts back to its input's dtype, the dtype of its weights
            return z.to(m.input_layernorm.weight.dtype)

        def attend(x, **kw):
            post, collapsed = m.attn_hc(x)
            h = _call(m.self_attn, hidden_states=m.input_layernorm(collapsed), _side="attn", **kw)[0]
            return post.float().unsqueeze(-1) * h.float().unsqueeze(-2)

        def feed(x, **_):
            post, collapsed = m.ffn_hc(x)
            h = m.mlp(m.post_attention_layernorm(collapsed))
            return post.float().unsqueeze(-1) * h.float().unsqueeze(-2)

        def to_float(x):
            return x.float()

        return [UnitParts(residual=attend, shortcut=to_float, projection=False, post=cast_back, label="attention"),
                UnitParts(residual=feed, shortcut=to_float, projection=False, post=cast_back, label="mlp")]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        kw = _known_args(v, self.KNOWN)
        return _route_frame(m, call_unit, [v["hidden_states"], (0, {**kw, **v.get("kwargs", {})}), (1, {})],
                            lambda x, frame: (x, frame["attn"][2] if "attn" in frame else None))


class _Qwen4ExpAdapter(Adapter):
    """``Qwen4ExpTextDecoderLayer``: an optional per-layer-embedding unit ``x + ple(x, ids)``, then
    ``x + flatten(f(mixed) * inject)`` around the token mixer (attention or linear attention) and
    the MLP, where the gated residual returns ``mixed``, ``x`` itself and ``inject`` (an identity
    shortcut: the layer adds the very tensor it was given)."""

    KNOWN = ("position_embeddings", "attention_mask", "conv_mask", "cache", "ple_input_ids")
    REQUIRED = ("hidden_states", "position_embeddings", "attention_mask", "conv_mask", "cache")

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)

        def unit(hc, core, label, first):
            def residual(x, **kw):
                mixed, _, inject = hc(x)
                out = _call(core, mixed, **kw)
                out = out[0] if first and isinstance(out, tuple) else out
                return (out.unsqueeze(-2) * inject.unsqueeze(-1)).flatten(-2)

            return UnitParts(residual=residual, label=label)

        def ple(x, ple_input_ids=None, cache=None, conv_mask=None):
            return _call(m.ple, x, ple_input_ids, cache, conv_mask=conv_mask)

        linear = m.layer_type == "linear_attention"
        out = [UnitParts(residual=ple, label="ple")] if m.ple is not None else []
        return out + [unit(m.attn_hyper_connection, m.linear_attn if linear else m.self_attn, "attention", not linear),
                      unit(m.mlp_hyper_connection, m.mlp, "mlp", False)]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        if m.layer_type == "linear_attention":
            mixer = {"cache": v["cache"], "attention_mask": v["conv_mask"], **v.get("kwargs", {})}
        else:
            mixer = {"position_embeddings": v["position_embeddings"], "attention_mask": v["attention_mask"],
                     "cache": v["cache"], **v.get("kwargs", {})}
        calls = [v["hidden_states"]]
        if m.ple is not None:
            calls.append((0, {"ple_input_ids": v["ple_input_ids"], "cache": v["cache"], "conv_mask": v["conv_mask"]}))
        n = len(calls) - 1
        calls += [(n, mixer), (n + 1, {})]
        return _route_frame(m, call_unit, calls, lambda x, _: x)
