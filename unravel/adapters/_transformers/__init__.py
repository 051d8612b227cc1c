"""Built-in adapters for Hugging Face ``transformers`` layers; loaded on first use through
:mod:`unravel.adapters`, without importing ``transformers``.

Most layers are *read*: their ``forward`` source is interpreted symbolically (module calls,
sums, scalings, dropout, conditions on the layer's own settings) into residual units, and the
units replay exactly those statements, so a layer is matched only when every statement is
understood. BERT-style, OPT, BLOOM and Falcon layers have hand-written adapters. A parallel layer
(``x + attn(ln(x)) + mlp(ln(x))``: GPT-J, GPT-NeoX/Pythia, Falcon, Phi, Cohere) is ONE unit with
label ``"attention+mlp"``: every path through it takes at most one of the two branches, so one
unit gives the path lengths exactly (docs/howto/huggingface.md says why).

A cache that already holds this layer's tokens is refused (``ArgumentError``): keys cached by one
network must not be read by another. This module does not check an adapter's faithfulness;
:func:`unravel.verify_units` does.
"""

from __future__ import annotations

import ast
import functools

import torch
import torch.nn.functional as F

from ...errors import ArgumentError, UnsupportedModelError
from ...units.parts import UnitParts
from .. import Adapter, Layout, original_class
from ._hyper import _DeepseekV4Adapter, _HYV4Adapter, _Qwen4ExpAdapter
from ._program import _readable, _readable_layer, _ReadAdapter
from ._read import _bind, _call, _check_signature, _known_args, _renames, _route_frame, _source

# ------------------------------------------------------------------------------------------
# Hand-written adapters: post-LN BERT, OPT, BLOOM, Falcon


class _BertLayerAdapter(Adapter):
    """``LayerNorm(x + dropout(dense(self_attention(x))))`` then the same around the MLP; post-LN,
    so post is each LayerNorm. Decoder layers called with encoder states are refused."""

    KNOWN = ("attention_mask", "encoder_hidden_states", "encoder_attention_mask", "cache")
    REQUIRED = ("hidden_states", "attention_mask")

    def parts(self, m):
        from transformers.pytorch_utils import apply_chunking_to_forward

        _check_signature(m, self.KNOWN, self.REQUIRED)
        if not _bert_like(m):
            cls = original_class(m)
            raise UnsupportedModelError(f"{cls.__module__}.{cls.__qualname__} does not run BERT's code (its forward or "
                                        f"its attention's differ); register an adapter: "
                                        f"unravel.register_adapter({cls.__name__}, ...)")
        att, out = m.attention, m.output

        def attend(x, attention_mask=None, cache=None, **kw):
            ctx = _call(att.self, x, encoder_hidden_states=None, attention_mask=attention_mask, cache=cache, **kw)
            return att.output.dropout(att.output.dense(ctx[0]))

        def branch(h):
            return out.dropout(out.dense(m.intermediate(h)))

        def feed(x, **_):
            return apply_chunking_to_forward(branch, m.chunk_size_feed_forward, m.seq_len_dim, x)

        return [UnitParts(residual=attend, post=att.output.LayerNorm, label="attention"),
                UnitParts(residual=feed, post=out.LayerNorm, label="mlp")]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        if v.get("encoder_hidden_states") is not None and m.is_decoder:
            raise ArgumentError(f"{type(m).__name__} with encoder_hidden_states (cross-attention) is not routed; "
                                "unravel reads its self-attention and MLP units only.")
        given = _known_args(v, self.KNOWN)
        kw = {"attention_mask": given["attention_mask"], "cache": given.get("cache"), **v.get("kwargs", {})}
        return _route_frame(m, call_unit, [v["hidden_states"], (0, kw), (1, {})], lambda x, _: x)


class _OPTAdapter(Adapter):
    """Pre-LN (``do_layer_norm_before``) or post-LN (OPT-350m: post is the LayerNorm)."""

    KNOWN = ("attention_mask", "cache", "use_cache", "position_ids")
    REQUIRED = ("hidden_states", "attention_mask")

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)
        before = m.do_layer_norm_before

        def attend(x, attention_mask=None, cache=None, position_ids=None, **kw):
            h = _call(m.self_attn, hidden_states=m.self_attn_layer_norm(x) if before else x, cache=cache,
                      position_ids=position_ids, attention_mask=attention_mask, **kw)[0]
            return F.dropout(h, p=m.dropout, training=m.training)

        def feed(x, **_):
            h = m.fc2(m.activation_fn(m.fc1(m.final_layer_norm(x) if before else x)))
            return F.dropout(h, p=m.dropout, training=m.training)

        return [UnitParts(residual=attend, post=None if before else m.self_attn_layer_norm, label="attention"),
                UnitParts(residual=feed, post=None if before else m.final_layer_norm, label="mlp")]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        given = _known_args(v, self.KNOWN)
        kw = {**{k: given[k] for k in ("attention_mask", "cache", "position_ids") if k in given},
              **v.get("kwargs", {})}
        return _route_frame(m, call_unit, [v["hidden_states"], (0, kw), (1, {})], lambda x, _: x)


class _BloomAdapter(Adapter):
    """BLOOM adds each residual inside its attention and MLP (``dropout_add``); given a zero
    residual they return the branch alone. With ``apply_residual_connection_post_layernorm`` the
    shortcut is the LayerNorm of the input (a projection shortcut)."""

    KNOWN = ("alibi", "attention_mask", "layer_past", "use_cache", "output_attentions")
    REQUIRED = ("hidden_states", "alibi", "attention_mask")

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)
        ln_short = m.apply_residual_connection_post_layernorm

        def attend(x, alibi=None, attention_mask=None, layer_past=None, use_cache=False, output_attentions=False, **_):
            return _call(m.self_attention, m.input_layernorm(x), torch.zeros_like(x), layer_past=layer_past,
                         attention_mask=attention_mask, alibi=alibi, use_cache=use_cache,
                         output_attentions=output_attentions, _side="attn")[0]

        def feed(x, **_):
            return m.mlp(m.post_attention_layernorm(x), torch.zeros_like(x))

        return [UnitParts(residual=attend, shortcut=m.input_layernorm if ln_short else None, label="attention"),
                UnitParts(residual=feed, shortcut=m.post_attention_layernorm if ln_short else None, label="mlp")]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        kw = _known_args(v, self.KNOWN)
        return _route_frame(m, call_unit, [v["hidden_states"], (0, kw), (1, {})],
                            lambda x, frame: (x, frame["attn"][1] if "attn" in frame else None))


def _falcon_parallel(c) -> bool:
    return bool(c.new_decoder_architecture or c.parallel_attn)


class _FalconAdapter(Adapter):
    """Sequential (two units) or parallel attention (``new_decoder_architecture`` or
    ``parallel_attn``: one unit, ``x + dropout(mlp(ln(x)) + attn(ln(x)))``). The attention gets
    exactly the arguments the layer's own ``forward`` takes of :attr:`KNOWN`: transformers 5.25
    dropped ``alibi`` from the layer (and its attention), earlier releases pass it on."""

    KNOWN = ("attention_mask", "position_ids", "layer_past", "alibi", "use_cache", "output_attentions",
             "position_embeddings")
    REQUIRED = ("hidden_states", "attention_mask")

    def parts(self, m):
        _check_signature(m, self.KNOWN, self.REQUIRED)
        c = m.config
        two_ln = c.new_decoder_architecture and c.num_ln_in_parallel_attn == 2

        def attn(x, kw):
            ln = m.ln_attn(x) if two_ln else m.input_layernorm(x)
            return ln, _call(m.self_attention, ln, _side="attn", **kw)[0]

        if _falcon_parallel(c):
            def both(x, **kw):
                ln, a = attn(x, kw)
                return F.dropout(m.mlp(m.ln_mlp(x) if two_ln else ln) + a, p=c.hidden_dropout, training=m.training)

            return [UnitParts(residual=both, label="attention+mlp")]

        def attend(x, **kw):
            return F.dropout(attn(x, kw)[1], p=c.attention_dropout, training=m.training)

        def feed(x, **_):
            return F.dropout(m.mlp(m.post_attention_layernorm(x)), p=c.hidden_dropout, training=m.training)

        return [UnitParts(residual=attend, label="attention"), UnitParts(residual=feed, label="mlp")]

    def route(self, m, call_unit, *args, **kwargs):
        v = _bind(m, args, kwargs)
        kw = _known_args(v, self.KNOWN)
        calls = [v["hidden_states"], (0, kw)] + ([] if _falcon_parallel(m.config) else [(1, {})])
        return _route_frame(m, call_unit, calls, lambda x, frame: (x, frame["attn"][1] if "attn" in frame else None))


# ------------------------------------------------------------------------------------------
# Which classes and layouts


@functools.lru_cache(maxsize=None)
def _fingerprint(cls, name):
    return ast.dump(ast.Module(body=_source(_renames(getattr(cls, name))[1]), type_ignores=[]))


def _bert_like(m) -> bool:
    """A layer whose code is, statement for statement, BERT's (RoBERTa, XLM-R, ELECTRA, ...)."""
    try:
        from transformers.models.bert import modeling_bert as B

        pairs = [(m, B.BertLayer, "forward"), (m, B.BertLayer, "feed_forward_chunk"),
                 (m.attention, B.BertAttention, "forward"), (m.attention.output, B.BertSelfOutput, "forward"),
                 (m.output, B.BertOutput, "forward")]
        return all(_fingerprint(original_class(a), n) == _fingerprint(b, n) for a, b, n in pairs)
    except (ImportError, AttributeError, OSError, TypeError):
        return False


_READ = _ReadAdapter()
_P = "transformers.models."
CLASSES = {
    f"{_P}gpt2.modeling_gpt2.GPT2Block": _READ,
    f"{_P}gpt_neo.modeling_gpt_neo.GPTNeoBlock": _READ,
    f"{_P}gptj.modeling_gptj.GPTJBlock": _READ,
    f"{_P}gpt_neox.modeling_gpt_neox.GPTNeoXLayer": _READ,
    f"{_P}llama.modeling_llama.LlamaDecoderLayer": _READ,
    f"{_P}vit.modeling_vit.ViTLayer": _READ,
    f"{_P}deit.modeling_deit.DeiTLayer": _READ,
    f"{_P}distilbert.modeling_distilbert.TransformerBlock": _READ,
    f"{_P}bert.modeling_bert.BertLayer": _BertLayerAdapter(),
    f"{_P}roberta.modeling_roberta.RobertaLayer": _BertLayerAdapter(),
    f"{_P}opt.modeling_opt.OPTDecoderLayer": _OPTAdapter(),
    f"{_P}bloom.modeling_bloom.BloomBlock": _BloomAdapter(),
    f"{_P}falcon.modeling_falcon.FalconDecoderLayer": _FalconAdapter(),
    f"{_P}deepseek_v4.modeling_deepseek_v4.DeepseekV4DecoderLayer": _DeepseekV4Adapter(),
    f"{_P}hy_v4.modeling_hy_v4.HYV4DecoderLayer": _HYV4Adapter(),
    f"{_P}qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextDecoderLayer": _Qwen4ExpAdapter(),
}
LAYOUTS = [
    Layout("Llama-style decoder layer, read from its forward", _READ, module_prefix=_P,
           attributes=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"), predicate=_readable),
    Layout("decoder layer with self_attn and mlp, read from its forward", _READ, module_prefix=_P,
           attributes=("self_attn", "mlp"), predicate=_readable),
    Layout("GPT-2-style block (ln_1, attn, mlp), read from its forward", _READ, module_prefix=_P,
           attributes=("ln_1", "attn", "mlp"), predicate=_readable),
    Layout("ViT-style layer, read from its forward", _READ, module_prefix=_P,
           attributes=("layernorm_before", "attention", "layernorm_after"), predicate=_readable),
    Layout("BERT-style layer (BERT's code)", _BertLayerAdapter(), module_prefix=_P,
           attributes=("attention", "intermediate", "output"), predicate=_bert_like),
    Layout("any layer whose forward reads as residual units", _READ, module_prefix=_P, predicate=_readable_layer),
]
