"""Adapter coverage: which timm families and transformers architectures unravel finds and verifies.

    python benchmarks/coverage.py [--timm] [--hf] [--limit N] [--json FILE] [--jobs N] [--timeout S]
                                  [--only NAME ...]

Without ``--timm``/``--hf`` both sweeps run. Nothing is downloaded: timm models are built with
``pretrained=False``, transformers models from their default configs shrunk to a tiny size.

timm
    A *family* is a timm model module (``timm.list_modules()``; ``timm.list_models(module=...)``
    lists its models). For each family the smallest model is built: the names are ranked by the
    sizes they spell (``test_``, atto, femto, pico, nano, xxs, tiny, small, a small number, no
    large resolution, ...), the first ``CANDIDATES`` are built on the meta device to count their
    parameters, and the one with the fewest is built for real (random weights, eval mode, batch 1,
    float32). timm's ``test_*`` models rank last (minimal configurations for timm's own tests). Where
    the model's recognised blocks use no skip at all (``find_units`` says they "hold no residual
    unit"), the next smallest is measured instead, up to ``FALLBACKS`` more (``passed_over``):
    the other counted candidates by parameters, then the family's remaining models by the sizes
    they spell. The input is 224 px where the pretrained config asks for more: through
    ``img_size=224`` where the model takes it, else a 224 px image where the size is not fixed;
    otherwise the config's own size.

    *Residual family* (the goal's denominator): a family is residual unless it is in
    ``NON_RESIDUAL_TIMM`` -- families whose models have no additive identity-shortcut blocks
    (VGG; Inception v3/v4; DenseNet, RDNet and SelecSLS, whose skips concatenate; NASNet/PNASNet,
    whose cells add parallel branches, not a block around an identity). A family in that list where
    unravel finds units anyway counts as residual (its units are evidence of skips).

transformers
    Causal LMs: every model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, built with
    ``AutoModelForCausalLM.from_config``. Encoders: every model type of
    ``MODEL_FOR_MASKED_LM_MAPPING_NAMES`` whose config is not encoder-decoder, built with
    ``AutoModelForMaskedLM.from_config``. Each config is ``AutoConfig.for_model(model_type)`` with
    its sizes shrunk by one generic rule (:func:`tiny_config_kwargs`: hidden 64, 4 heads of 16, 2
    key/value heads, FFN 128, 2 layers or one of each layer type, vocabulary 128, 4 experts,
    sub-configs shrunk alike), ``use_cache=False``; where that does not build, the ``VARIANTS``
    are tried in order (as many key/value heads as heads, one expert per token, a latent-attention
    head of both parts, two of each layer type). ``CONFIG_FIXES`` adds the few values some
    architectures' *default* configs lack (the library's default does not build: DBRX, LFM2-MoE,
    Cohere-Compass, Qwen4-Exp); such rows carry ``config_fix``. The input is ``{"input_ids": ids}``,
    ids of shape [1, 8] below every special token id. A config that does not build (or builds over
    ``MAX_HF_PARAMS`` parameters: the rule missed its size) is "build failed"; the goal is reported
    over all architectures and over those that built.

    Beyond ``verify_units``, each transformers row checks (:func:`hf_exactness`), on the text model
    (the nearest module above the layer stack whose forward takes ``input_ids``): deleting the first
    unit restores the model bit for bit, and the exact path-length decomposition of a loss's
    gradient at the first unit's input sums to autograd's (on a float64 copy, float32 where the
    model does not run in float64; relative tolerance ``EXACT_TOL``, which allows for the steps
    transformers computes in float32 whatever the dtype). A model whose units do not form one chain
    (a branch skipping several units, a state passed between layers beside the stream, a layer run
    twice) fails it. Where units of the text model do not run on text input (a vision tower
    inside it) the decomposition is not checked (``exact_note``).

Each model runs in a forked worker with ``--timeout`` seconds (default 60) for build, forward,
``find_units`` and ``verify_units`` (plus as much again for picking the smallest timm model);
past it the row is "timeout".

Statuses: ``verified`` (found, and ``verify_units`` passed; for transformers also every layer of
the text stack holds a unit and no sum outside its units, and the exactness check passed);
``partial`` (verified, but some text layers hold no unit, or add something outside their units:
e.g. only a vision tower's blocks, or one submodule of a layer, were recognised); ``inexact``
(routing faithful, but deletion or the exact decomposition failed); ``unfaithful`` (found, routed
output differs: ``UnfaithfulAdapterError``); ``unsupported`` (``find_units`` or ``verify_units``
raised ``UnsupportedModelError``: no adapter, or a block refused); ``error`` (found, but routing
raised something else); ``build failed`` / ``forward failed`` (the model itself); ``timeout``.

Limits: ``verify_units`` checks the units found; a timm block no adapter recognises runs as code
between units, so a timm family is ``verified`` when its recognised blocks are faithful, whether or
not every residual block was recognised (the transformers sweep checks layer coverage, timm's
does not). One input, one model per family: another model of the family may use other blocks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import unravel  # noqa: E402
from unravel.errors import UnfaithfulAdapterError, UnsupportedModelError  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "coverage-results.json"
GOAL = 0.90
CANDIDATES = 5  # timm names per family counted on the meta device
FALLBACKS = 5  # next-smallest timm models tried where the smallest uses no skip
IMG_CAP = 224
MAX_HF_PARAMS = 300_000_000  # a tiny config past this missed a size (sub-configs may stay large)
SEQ = 8

# families with no additive identity-shortcut block (see the module docstring)
NON_RESIDUAL_TIMM = {
    "vgg": "plain stack of convolutions",
    "inception_v3": "parallel branches concatenated, no shortcut",
    "inception_v4": "parallel branches concatenated, no shortcut",
    "densenet": "skips concatenate (dense connectivity), no sum",
    "selecsls": "skips concatenate, no sum",
    "nasnet": "cells add parallel branches, no block around an identity",
    "pnasnet": "cells add parallel branches, no block around an identity",
    "rdnet": "dense stages concatenate every block's output (as DenseNet), no sum",
}


# ------------------------------------------------------------------------------------------
# Small helpers


def first_line(exc: BaseException, limit: int = 300) -> str:
    msg = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {msg[0] if msg else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def classify(model, inputs, coverage=None, exact=None) -> dict:
    """find_units, then verify_units: the row's status, unit count and first error line.
    ``coverage(units)`` may give ``(covered, layers)``: a verified model where fewer than all its
    layers hold a unit is ``partial``. ``exact(model, inputs)`` may check the exact decomposition
    and deletion (a dict with ``ok`` and what it measured): where it fails the row is ``inexact``."""
    row: dict = {"found": False, "verified": False, "units": None}
    try:
        units = unravel.find_units(model)
    except UnsupportedModelError as e:
        return {**row, "status": "unsupported", "error": first_line(e)}
    except Exception as e:  # noqa: BLE001  (find_units crashed: reported, not raised)
        return {**row, "status": "error", "error": "find_units: " + first_line(e)}
    row.update(found=True, units=len(units))
    try:
        unravel.verify_units(model, inputs)
    except UnfaithfulAdapterError as e:
        return {**row, "status": "unfaithful", "error": first_line(e)}
    except UnsupportedModelError as e:
        return {**row, "status": "unsupported", "error": first_line(e)}
    except Exception as e:  # noqa: BLE001  (routing crashed: reported, not raised)
        return {**row, "status": "error", "error": first_line(e)}
    cov = coverage(units) if coverage is not None else None
    if cov is not None:
        row["layers_covered"] = f"{cov[0]}/{cov[1]}"
        if cov[0] < cov[1]:
            return {**row, "status": "partial",
                    "error": f"verified, but only {cov[0]} of the {cov[1]} decoder/encoder layers hold a unit "
                             "for every sum in their code"}
    if exact is not None:
        got = exact(model, inputs)
        row.update({k: v for k, v in got.items() if k not in ("ok", "why")})
        if not got["ok"]:
            return {**row, "status": "inexact", "error": got["why"]}
    return {**row, "verified": True, "status": "verified", "error": None}


# ------------------------------------------------------------------------------------------
# timm

_SIZE_WORDS = {
    "atto": 0, "zepto": 0, "femto": 1, "pico": 2, "nano": 3, "xxs": 4, "xxtiny": 4, "xx": 4, "xs": 5,
    "xtiny": 5, "slim": 6, "tiny": 6, "ti": 6, "t": 6, "mini": 6.5, "small": 7, "s": 7, "lite": 7,
    "medium": 8, "m": 8, "base": 9, "b": 9, "large": 10, "l": 10, "huge": 11, "h": 11, "giant": 12,
    "g": 12, "xl": 12, "xlarge": 12, "gigantic": 13, "xxl": 13,
}
_BIG_RES = {256, 288, 320, 336, 384, 448, 480, 512, 518, 560, 576, 640, 768, 1024}


def timm_size_key(name: str):
    """Sort key putting the names that spell a small model first (a guess; the meta-device
    count decides among the first few)."""
    toks = []
    for part in name.split("_"):
        toks += re.findall(r"[a-z]+|\d+", part)
    sizes = [_SIZE_WORDS[t] for t in toks if t in _SIZE_WORDS]
    nums = [float("0." + t) if len(t) > 1 and t[0] == "0" else int(t) for t in toks if t.isdigit()]
    return (name.startswith("test_"), min(sizes, default=8), any(n in _BIG_RES for n in nums),
            nums[:2] or [999], len(name), name)


def timm_smallest(family: str):
    """The family's candidates that build on the meta device, as ``[(name, parameters)]``,
    fewest parameters first. timm's ``test_*`` models rank last: they are minimal configurations
    for timm's own tests (``test_efficientnet`` has one block per stage: no skip is used)."""
    import timm

    names = sorted(timm.list_models(module=family), key=timm_size_key)[:CANDIDATES]
    counts = {}
    for name in names:
        try:
            with torch.device("meta"):
                counts[name] = n_params(timm.create_model(name, pretrained=False))
        except Exception:  # noqa: BLE001  (a candidate that does not build on meta is skipped)
            continue
    if not counts:
        return [(names[0], None)]
    return sorted(counts.items(), key=lambda kv: (kv[1], timm_size_key(kv[0])))


def timm_measure(name: str) -> dict:
    """Build ``name`` (random weights, eval mode) at a small input and classify it."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    c, h, w = (cfg.input_size if cfg is not None and cfg.input_size else (3, 224, 224))
    fixed = bool(getattr(cfg, "fixed_input_size", False))
    attempts = []
    if max(h, w) > IMG_CAP:
        attempts.append(({"img_size": IMG_CAP}, (c, IMG_CAP, IMG_CAP)))
        if not fixed:
            attempts.append(({}, (c, IMG_CAP, IMG_CAP)))
    attempts.append(({}, (c, h, w)))

    row: dict = {"model": name}
    t1 = time.perf_counter()
    failures = []
    for kwargs, size in attempts:
        stage = "build failed"
        try:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, **kwargs).eval()
            x = torch.randn(1, *size)
            stage = "forward failed"
            with torch.no_grad():
                model(x)
        except Exception as e:  # noqa: BLE001
            failures.append((stage, f"{kwargs or ''} {size[1]}px: {first_line(e)}".strip()))
            continue
        row.update(kwargs=kwargs, input=list(size), params=n_params(model))
        row.update(classify(model, x))
        if row.get("verified"):
            row.update(timm_attribution(model, x))
        break
    else:
        stage = "build failed" if all(s == "build failed" for s, _ in failures) else "forward failed"
        row.update(status=stage, found=False, verified=False, units=None, error=failures[-1][1])
    row["seconds"] = round(time.perf_counter() - t1, 2)
    return row


#: Above this many parameters the attribution check is skipped (it costs about (n + 1) / 2
#: backward passes in float64, and the sweep's per-model time limit must hold).
ATTRIBUTION_MAX_PARAMS = 60_000_000


def timm_attribution(model, x) -> dict:
    """Whether path-length attribution runs on a verified timm model, and exactly: the exact
    decomposition of a loss's gradient at the first unit's input (a float64 copy; float32 where
    the model does not run in float64) against autograd's. ``attribution`` is ``exact``,
    ``not a chain`` (the decompositions refuse the model: a unit's output leaves the chain),
    ``inexact``, ``error`` or ``not checked``. It does not change the row's status: that counts
    the units found and routed, which lesions need."""
    import copy

    from unravel.errors import ArgumentError

    if n_params(model) > ATTRIBUTION_MAX_PARAMS:
        return {"attribution": "not checked", "attribution_note": f"over {ATTRIBUTION_MAX_PARAMS:,} parameters"}

    def loss(o, _):
        return unravel._utils.logits_of(o).double().pow(2).mean()

    for dtype in ("float64", "float32"):
        m = copy.deepcopy(model).to(getattr(torch, dtype))
        with torch.no_grad():  # a zero-initialised head (timm's gMLP, Hiera, ...) zeroes every gradient
            for p in m.parameters():
                if p.dim() >= 2 and not p.any():
                    torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(0))
        xx = x.to(getattr(torch, dtype))
        try:
            res = unravel.attribution.path_length_gradients(m, xx, loss=loss)
            g = _first_unit_grad(m, lambda mod: mod(xx), loss)
        except ArgumentError as e:
            if "do not form a chain" in str(e):
                return {"attribution": "not a chain", "attribution_note": first_line(e, 200)}
            return {"attribution": "error", "attribution_note": first_line(e, 200)}
        except (RuntimeError, TypeError, NotImplementedError) as e:
            if dtype == "float64":
                continue
            return {"attribution": "error", "attribution_note": first_line(e, 200)}
        err = float(max((res.total - g).abs().max(), (res.by_length.sum(0) - g).abs().max()) / g.abs().max())
        ok = err <= EXACT_TOL[dtype]
        return {"attribution": "exact" if ok else "inexact", "exact_dtype": dtype, "exact_rel_err": float(f"{err:.3g}")}
    return {"attribution": "error", "attribution_note": "no dtype runs"}


def timm_task(family: str, send) -> dict:
    """The family's smallest model; where its recognised blocks use no skip (a degenerate
    configuration of a residual family), the next smallest, up to ``FALLBACKS`` more: the
    counted candidates by parameters, then the family's other models by the sizes they spell
    (VoVNet's five smallest have one block per stage, so none uses its skip)."""
    import timm

    t0 = time.perf_counter()
    candidates = timm_smallest(family)
    counted = {name for name, _ in candidates}
    candidates += [(n, None) for n in sorted(timm.list_models(module=family), key=timm_size_key) if n not in counted]
    select_s = round(time.perf_counter() - t0, 2)
    passed = []
    for i, (name, params) in enumerate(candidates[: 1 + FALLBACKS]):
        send(("selected", name))
        row = timm_measure(name)
        last = i == min(len(candidates), 1 + FALLBACKS) - 1
        if row["status"] == "unsupported" and "hold no residual unit" in (row["error"] or "") and not last:
            passed.append(f"{name}: {row['error']}")
            continue
        break
    return {"family": family, "residual_rule": NON_RESIDUAL_TIMM.get(family), "select_s": select_s,
            "smallest": candidates[0][0], "passed_over": passed, **row}


def timm_tasks(only=None):
    import timm

    fams = sorted(timm.list_modules())
    return [f for f in fams if not only or f in only]


# ------------------------------------------------------------------------------------------
# transformers

HIDDEN, HEADS, HEAD_DIM, KV_HEADS, FFN, LAYERS, VOCAB = 64, 4, 16, 2, 128, 2, 128
_SIZES = {
    **dict.fromkeys(["hidden_size", "n_embd", "d_model", "n_embed", "embed_dim", "word_embed_proj_dim",
                     "embedding_size", "dim", "d_embed", "emb_dim", "d_latents", "embedding_dim", "proj_size",
                     "hidden_size_global", "adapter_in_dim", "adapter_out_dim", "adapter_input_size"],
                    HIDDEN),
    **dict.fromkeys(["num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads",
                     "encoder_attention_heads", "attention_heads", "num_self_attention_heads",
                     "num_cross_attention_heads"], HEADS),
    **dict.fromkeys(["num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num",
                     "num_kv_groups", "kv_n_heads"], KV_HEADS),
    **dict.fromkeys(["intermediate_size", "ffn_dim", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim", "d_ff",
                     "ffn_hidden_size", "hidden_dim", "moe_intermediate_size", "shared_expert_intermediate_size",
                     "expert_intermediate_size", "dense_intermediate_size", "feed_forward_size",
                     "intermediate_size_mlp", "d_inner", "inner_hidden_size", "expert_ffn_hidden_size"], FFN),
    **dict.fromkeys(["head_dim", "attention_head_dim", "kv_channels", "d_head", "attention_head_size",
                     "v_head_dim"], HEAD_DIM),
    **dict.fromkeys(["vocab_size", "n_vocab", "vocab_size_per_layer_input", "encoder_hash_byte_group_vocab"],
                    VOCAB),
    **dict.fromkeys(["max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length",
                     "max_sequence_length", "max_seq_length"], 64),
    **dict.fromkeys(["num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "n_experts"], 4),
    **dict.fromkeys(["num_experts_per_tok", "moe_topk", "num_experts_per_token", "top_k", "moe_k",
                     "top_k_experts"], 2),
    **dict.fromkeys(["n_shared_experts", "num_shared_experts", "moe_num_shared_experts"], 1),
    **dict.fromkeys(["n_group", "topk_group"], 1),
    "first_k_dense_replace": 1, "rotary_dim": 8, "kv_lora_rank": 16, "q_lora_rank": 32,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "qk_head_dim": 16, "image_size": 32, "patch_size": 8,
    "sliding_window": 4, "attention_window": 4, "ssm_state_size": 8, "state_size": 8, "mamba_d_state": 8,
    "mamba_n_heads": 4, "mamba_head_dim": 16, "mamba_d_head": 16, "n_groups": 1, "mamba_n_groups": 1,
    "mamba_expand": 1, "mamba_d_ssm": HIDDEN, "time_step_rank": 8, "mamba_dt_rank": 8, "linear_num_key_heads": 2,
    "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16, "num_memory_tokens": 0,
    "hidden_size_per_layer_input": 16, "laurel_rank": 8, "num_kv_shared_layers": 0, "zero_expert_num": 2,
    "num_latents": 8, "entity_vocab_size": 16, "entity_emb_size": 32, "num_self_attends_per_block": 2,
    "attention_hidden_size": 2 * HIDDEN,
    "axial_pos_embds_dim": [HIDDEN // 2, HIDDEN // 2], "local_attention_window_len": 8,
}
# sizes set even where the default config leaves them None (the model would divide by None)
_NONE_OK = {"num_key_value_heads", "head_dim", "vocab_size", "n_routed_experts", "num_experts_per_tok",
            "n_shared_experts", "num_experts", "top_k_experts", "moe_intermediate_size"}
_LAYER_KEYS = ["num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers",
               "num_decoder_layers", "num_encoder_layers", "text_num_hidden_layers"]
# what the variants after the first change, where the shrunk config does not build
VARIANTS = [
    {},
    {"kv_heads": "heads"},
    {"experts_per_tok": 1},
    {"kv_heads": "heads", "experts_per_tok": 1},
    {"kv_heads": "heads", "head_dim": "nope+rope"},  # latent attention whose head is both parts
    {"repeat": 2},  # two of each layer type (a block shared by several layers)
]
# values some architectures' default configs lack (the library's default does not build; real
# checkpoints set them): model type -> (overrides, why). Each row built with one says so.
CONFIG_FIXES = {
    "lfm2_moe": ({"layer_types": ["conv", "full_attention"]}, "default config has layer_types=None, which the "
                 "model indexes"),
    "dbrx": ({"attn_config.rope_theta": 10000.0, "attn_config.clip_qkv": 8.0},
             "DbrxAttention reads attn_config.rope_theta, which DbrxAttentionConfig does not define, and clamps "
             "by attn_config.clip_qkv, None by default"),
    **{t: ({f"{pre}indexer_{k}": v for k, v in dict(n_heads=2, kv_heads=1, head_dim=16, budget=8,
                                                      compress_ratio=4).items()},
           "default config leaves the QSA indexer sizes None, while every attention layer builds an indexer")
       for t, pre in (("qwen4_exp", "text_config."), ("qwen4_exp_text", "config."))},
    "cohere_compass_text": ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
                            "default config has rope_parameters={}, which the model indexes by layer type"),
}
_KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num", "num_kv_groups",
            "kv_n_heads")
_TOPK_KEYS = ("num_experts_per_tok", "moe_topk", "num_experts_per_token", "top_k", "moe_k", "top_k_experts")


def _layer_pattern(values):
    """One of each kind, in first-seen order (a hybrid keeps every layer type)."""
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def tiny_config_kwargs(d: dict, sub_configs=(), variant=None, causal=False) -> dict:
    """Overrides shrinking a config's ``to_dict()``: only keys it has, sizes kept consistent."""
    variant = variant or {}
    out = {}
    for k, v in _SIZES.items():
        if k not in d or isinstance(d[k], (dict, bool)) or (d[k] is None and k not in _NONE_OK):
            continue
        if isinstance(d[k], list) != isinstance(v, list):
            continue
        out[k] = v
    if "qk_rope_head_dim" in out and "head_dim" in out:  # multi-head latent attention: rope dims
        out["head_dim"] = out["qk_rope_head_dim"] + (out.get("qk_nope_head_dim", 0)
                                                     if variant.get("head_dim") == "nope+rope" else 0)
    if any(k in d for k in ("ssm_state_size", "mamba_d_state", "n_groups", "mamba_n_heads")) and "expand" in d:
        out["expand"] = 1  # heads x head_dim == expand x hidden
    if variant.get("kv_heads") == "heads":
        out.update({k: HEADS for k in _KV_KEYS if k in d})
    if "experts_per_tok" in variant:
        out.update({k: variant["experts_per_tok"] for k in _TOPK_KEYS if k in d})
    layers = next((d[k] for k in _LAYER_KEYS if _is_int(d.get(k))), None)
    n = LAYERS
    for key in ("layer_types", "layers_block_type", "block_types", "attn_type_list"):
        if isinstance(d.get(key), list) and d[key] and all(isinstance(v, str) for v in d[key]):
            n = max(n, len(_layer_pattern(d[key])))
    for key in ("hybrid_override_pattern", "block_pattern"):
        if isinstance(d.get(key), str) and d[key]:
            n = max(n, len(_layer_pattern(d[key].replace("-", ""))))
    n *= variant.get("repeat", 1)
    for key in ("layer_types", "layers_block_type", "block_types", "attn_type_list"):
        if isinstance(d.get(key), list) and d[key] and all(isinstance(v, str) for v in d[key]):
            pattern = _layer_pattern(d[key])
            out[key] = (pattern * n)[:n]
    for key in ("hybrid_override_pattern", "block_pattern"):
        if isinstance(d.get(key), str) and d[key]:
            pattern = "".join(_layer_pattern(d[key].replace("-", "")))
            out[key] = (pattern * n)[:n]
    for key in _LAYER_KEYS:
        if _is_int(d.get(key)) and d[key] > 0:
            out[key] = n
    if layers is not None and layers > n:
        for key, v in d.items():  # other per-layer lists: cut to the new depth (sizes shrunk)
            if key not in out and isinstance(v, list) and len(v) == layers and key != "architectures":
                out[key] = [_SIZES[key]] * n if key in _SIZES and all(_is_int(i) for i in v) else v[:n]
    for key, v in d.items():  # per-layer index lists (which layers are attention, MoE, ...)
        if key not in out and isinstance(v, list) and v and all(_is_int(i) for i in v) and "layer" in key:
            out[key] = [i for i in v if i < n] or [n - 1]
        if key not in out and isinstance(v, dict) and v and all(str(i).isdigit() for i in v) and "layer" in key:
            out[key] = {i: c for i, c in v.items() if int(i) < n}
    if isinstance(d.get("attention_types"), list):  # gpt-neo: [[kinds, repeat]]
        out["attention_types"] = [[["global", "local"], 1]]
        out["num_layers"] = 2
    # special token ids: small ones stay (some index position tables), others go above the input's ids
    top = VOCAB - 1
    for k in sorted(d):
        if not (k.endswith("_token_id") or k.endswith("_token_index") or k.endswith("_token_ids")) \
                or "vocab_size" not in out or d[k] is None:
            continue
        if _is_int(d[k]) and d[k] >= 4:
            out[k], top = top, top - 1
        elif isinstance(d[k], list) and d[k] and all(_is_int(i) for i in d[k]):
            out[k], top = [i if i < 4 else VOCAB - 1 for i in d[k]], top - 1
    for key in sub_configs:
        if isinstance(d.get(key), dict):
            sub = dict(d[key])
            sub.update(tiny_config_kwargs(sub, (), variant, causal))
            out[key] = sub
    if "pad_token_id" in d and d["pad_token_id"] is None and "vocab_size" in out:
        out["pad_token_id"] = 0  # embeddings that mask padding need one
    if "use_cache" in d:
        out["use_cache"] = False
    if causal and "is_decoder" in d:
        out["is_decoder"] = True
    return out


def hf_config(model_type: str, variant=None, causal=False):
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    d = base.to_dict()
    subs = [k for k, v in vars(base).items() if hasattr(v, "to_dict") and hasattr(v, "model_type")]
    kwargs = tiny_config_kwargs(d, subs, variant, causal)
    fixes = CONFIG_FIXES.get(model_type, ({}, None))[0]
    kwargs.update({k: v for k, v in fixes.items() if "." not in k})
    cfg = AutoConfig.for_model(model_type, **kwargs)
    for k, v in fixes.items():
        if "." in k:  # set on the built config ("config." is the config itself)
            owner, _, name = k.rpartition(".")
            setattr(cfg if owner == "config" else getattr(cfg, owner), name, v)
    for c in [cfg, *(getattr(cfg, k) for k in subs if hasattr(getattr(cfg, k, None), "model_type"))]:
        if hasattr(c, "use_cache"):
            c.use_cache = False
    return cfg


def hf_build(kind, model_type, cfg):
    """The model ``kind``'s auto class builds from ``cfg``; where the mapped class takes one of
    the config's sub-configs (MusicGen's decoder), from that."""
    import transformers
    from transformers.models.auto import modeling_auto as ma

    mapping = ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if kind == "causal" else ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    cls = getattr(transformers, mapping[model_type], None)
    want = getattr(cls, "config_class", None)
    if want is not None and not isinstance(cfg, want):
        for v in vars(cfg).values():
            if isinstance(v, want):
                return (lambda: cls(v)), v
    auto = transformers.AutoModelForCausalLM if kind == "causal" else transformers.AutoModelForMaskedLM
    return (lambda: auto.from_config(cfg)), cfg


_NOT_TEXT = ("vision", "visual", "audio", "image", "speech", "patcher", "vit", "mm_", "multi_modal")


def _adds(cls) -> bool:
    """Whether ``cls.forward``'s own source adds anything (``+`` or ``+=``); True where it cannot
    be read (a sum may hide there)."""
    import ast
    import inspect
    import textwrap

    fn = getattr(cls, "forward", None)
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return True
    return any(isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, ast.Add) for n in ast.walk(tree))


def _sums_read(module, hosts) -> bool:
    """Whether every sum in ``module``'s code is inside a module whose units were found: the
    module holds units itself (its whole forward was read), or neither its own forward nor those
    of its ``transformers`` submodules add anything outside such modules."""
    if module in hosts:
        return True
    cls = type(module)
    if cls.__module__.startswith("torch.nn") and not isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict,
                                                                         torch.nn.Sequential)):
        return True  # a torch layer (Linear, Dropout, an activation): no residual sum
    if cls.__module__.startswith("transformers.") and _adds(cls):
        return False
    return all(_sums_read(c, hosts) for c in module.children())


def hf_stack(model, cfg):
    """``(name, ModuleList)`` of the text stack: the first ``nn.ModuleList`` as long as the text
    config's layer count, outside vision/audio towers; None where there is none."""
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = next((getattr(text, k) for k in _LAYER_KEYS if _is_int(getattr(text, k, None))), None)
    if not n:
        return None
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)
                 and len(m) == n and not any(w in name.lower() for w in _NOT_TEXT)), None)


def hf_layer_coverage(model, cfg):
    """``coverage`` for :func:`classify`: how many layers of the text stack (:func:`hf_stack`)
    hold a unit, and no sum outside their units (:func:`_sums_read`: a layer whose units come
    from some of its submodules while its own code, or another submodule's, adds something, is not
    covered); ``None`` where no stack is found."""
    stack = hf_stack(model, cfg)
    if stack is None:
        return None
    n = len(stack[1])

    def coverage(units):
        hosts = {u.module for u in units}
        covered = 0
        for layer in stack[1]:
            inside = {m for m in layer.modules()}
            covered += bool(hosts & inside) and _sums_read(layer, hosts)
        return covered, n

    return coverage


EXACT_TOL = {"float64": 5e-5, "float32": 1e-3}  # relative to the gradient's largest entry (float32 steps inside)


def _first_unit_grad(model, call, loss):
    """Autograd's gradient of ``loss`` at the first unit's input (the reference the exact
    decomposition's parts sum to; everything else the units take is held fixed)."""
    leaf = {}

    def compute(unit, xin, position, **kw):
        if position.index == 0:
            xin = leaf.setdefault(0, xin.detach().requires_grad_())
        return unit.forward(xin, **kw)

    with unravel.intervene(model, compute=compute):
        value = loss(call(model), None)
    return torch.autograd.grad(value, leaf[0])[0]


def hf_exactness(stack):
    """``exact`` for :func:`classify`: on the text model (the nearest module above the layer
    stack whose forward takes ``input_ids``; the whole model without a stack), deleting the first
    unit restores the model bit for bit, and the exact decomposition of a loss's gradient at the
    first unit's input sums to autograd's (a float64 copy; float32 where the model does not run in
    float64; tolerances ``EXACT_TOL``). Units that do not run on text input leave it unchecked."""
    import copy
    import inspect

    from unravel.errors import ArgumentError
    from unravel.verify import output_tensors

    def exact(model, inputs):
        target, where = model, ""
        if stack:
            parts = stack.split(".")
            for i in range(len(parts) - 1, -1, -1):
                m = model.get_submodule(".".join(parts[:i]))
                if list(inspect.signature(m.forward).parameters)[:1] == ["input_ids"]:
                    target, where = m, ".".join(parts[:i])
                    break
        ids = inputs["input_ids"]
        out = {"exact_on": where or "(the model)"}
        before = {k: v.clone() for k, v in target.state_dict().items()}
        with torch.no_grad():
            own = output_tensors(target(**inputs))
            with unravel.lesion.delete(target, [0]):
                target(**inputs)
            again = output_tensors(target(**inputs))
        state = target.state_dict()
        out["delete_restores"] = (all(torch.equal(before[k], state[k]) for k in before) and len(own) == len(again)
                                  and all(torch.equal(a, b) for a, b in zip(own, again)))
        if not out["delete_restores"]:
            return {**out, "ok": False, "why": "deleting a unit did not restore the model bit for bit"}

        def loss(o, _):
            return output_tensors(o)[0].double().pow(2).mean()

        for dtype in ("float64", "float32"):
            m = copy.deepcopy(target).to(getattr(torch, dtype))
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_experts_implementation"):
                cfg._experts_implementation = "eager"  # grouped matmuls take no float64
            try:
                res = unravel.attribution.path_length_gradients(m, ids, loss=loss)
                g = _first_unit_grad(m, lambda mod: mod(ids), loss)
            except ArgumentError as e:
                if "did not run" in str(e):
                    return {**out, "ok": True, "exact_note": "not checked: " + first_line(e, 160)}
                return {**out, "ok": False, "why": "exact decomposition: " + first_line(e)}
            except (RuntimeError, TypeError, NotImplementedError) as e:
                if dtype == "float64":
                    continue
                return {**out, "ok": False, "why": "exact decomposition: " + first_line(e)}
            err = float(max((res.total - g).abs().max(), (res.by_length.sum(0) - g).abs().max()) / g.abs().max())
            out.update(exact_dtype=dtype, exact_rel_err=float(f"{err:.3g}"))
            if not err <= EXACT_TOL[dtype]:
                return {**out, "ok": False, "why": f"the exact decomposition misses autograd's gradient at the first "
                                                    f"unit's input by {err:.2g} (relative, {dtype}): the units are "
                                                    "not one chain, or a path avoids them"}
            return {**out, "ok": True}
        return {**out, "ok": False, "why": "exact decomposition: no dtype runs"}

    return exact


def hf_task(task, send) -> dict:
    kind, model_type = task
    from transformers.models.auto import modeling_auto as ma

    mapping = ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if kind == "causal" else ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    row: dict = {"kind": kind, "model_type": model_type, "class": mapping.get(model_type)}
    send(("selected", model_type))
    t0 = time.perf_counter()
    first = None
    for variant in VARIANTS:
        stage = "build failed"
        try:
            cfg = hf_config(model_type, variant, causal=kind == "causal")
            build, cfg = hf_build(kind, model_type, cfg)
            with torch.device("meta"):
                params = n_params(build())
            if params > MAX_HF_PARAMS:
                raise RuntimeError(f"the tiny config still has {params:,} parameters (> {MAX_HF_PARAMS:,}): "
                                   "the generic shrink missed a size")
            torch.manual_seed(0)
            model = build().eval()
            text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
            high = min(getattr(text, "vocab_size", None) or VOCAB, VOCAB) - 8
            # MusicGen's decoder reads one row per codebook
            ids = torch.randint(4, max(high, 5), (getattr(cfg, "num_codebooks", None) or 1, SEQ))
            langs = getattr(cfg, "languages", None)
            if hasattr(model, "set_default_language") and langs:  # X-MOD: adapters per language
                model.set_default_language(list(langs)[0])
            inputs = {"input_ids": ids}
            stage = "forward failed"
            with torch.no_grad():
                model(**inputs)
        except Exception as e:  # noqa: BLE001
            first = first or (stage, first_line(e))
            continue
        row.update(params=params, variant=variant, **{"class": type(model).__name__})
        if model_type in CONFIG_FIXES:
            row["config_fix"] = CONFIG_FIXES[model_type][1]
        stack = hf_stack(model, cfg)
        row.update(classify(model, inputs, hf_layer_coverage(model, cfg), hf_exactness(stack and stack[0])))
        break
    else:
        row.update(status=first[0], found=False, verified=False, units=None, error=first[1])
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def hf_tasks(only=None):
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto as ma

    causal = list(ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    encoders = []
    for t in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        try:
            if getattr(AutoConfig.for_model(t), "is_encoder_decoder", False):
                continue
        except Exception:  # noqa: BLE001  (a config that does not even build: its row says so)
            pass
        encoders.append(t)
    tasks = [("causal", t) for t in causal] + [("encoder", t) for t in encoders]
    return [t for t in tasks if not only or t[1] in only]


# ------------------------------------------------------------------------------------------
# Workers: one forked process per model, killed past its deadline


def _worker(fn, task, conn, threads):
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    try:
        row = fn(task, conn.send)
    except Exception as e:  # noqa: BLE001
        row = {"status": "error", "found": False, "verified": False, "units": None,
               "error": "harness: " + first_line(e), "traceback": traceback.format_exc(limit=3)}
    conn.send(("result", row))
    conn.close()


def run_all(fn, tasks, key, *, jobs, timeout, progress=True):
    """Rows for ``tasks`` in order; ``jobs`` forked workers at a time; each gets ``timeout``
    seconds to select its model and ``timeout`` more after."""
    ctx = mp.get_context("fork")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, running, rows = list(enumerate(tasks)), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            i, task = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(fn, task, child, threads), daemon=True)
            p.start()
            child.close()
            running[i] = dict(task=task, proc=p, conn=parent, start=time.perf_counter(),
                              deadline=time.perf_counter() + timeout, model=None)
        time.sleep(0.05)
        for i, r in list(running.items()):
            done = None
            try:
                while r["conn"].poll():
                    kind, payload = r["conn"].recv()
                    if kind == "selected":
                        r["model"] = payload
                        r["deadline"] = time.perf_counter() + timeout
                    else:
                        done = payload
            except (EOFError, OSError):
                if done is None:
                    done = {"status": "error", "found": False, "verified": False, "units": None,
                            "error": f"worker died (exit code {r['proc'].exitcode})"}
            if done is None and time.perf_counter() > r["deadline"]:
                r["proc"].kill()
                done = {"status": "timeout", "found": False, "verified": False, "units": None,
                        "error": f"over {timeout:g} s", "model": r["model"]}
            if done is None and not r["proc"].is_alive() and not r["conn"].poll():
                done = {"status": "error", "found": False, "verified": False, "units": None,
                        "error": f"worker died (exit code {r['proc'].exitcode})"}
            if done is not None:
                r["proc"].join(timeout=5)
                r["conn"].close()
                row = {**key(r["task"]), **done}
                row["wall_s"] = round(time.perf_counter() - r["start"], 2)
                rows[i] = row
                del running[i]
                if progress:
                    name = row.get("model") or ""
                    print(f"  [{len(rows)}/{len(tasks)}] {_label(row):28s} {name:40s} {row['status']:14s} "
                          f"{row['wall_s']:6.1f}s  {row.get('error') or ''}"[:220], file=sys.stderr, flush=True)
    return [rows[i] for i in range(len(tasks))]


def _label(row):
    return row.get("family") or f"{row.get('kind')}:{row.get('model_type')}"


# ------------------------------------------------------------------------------------------
# Summary and report


def _pct(a, b):
    return round(100.0 * a / b, 1) if b else None


def timm_summary(rows):
    residual = [r for r in rows if r["family"] not in NON_RESIDUAL_TIMM or r["found"]]
    built = [r for r in residual if r["status"] not in ("build failed", "forward failed", "timeout")]
    found = [r for r in residual if r["found"]]
    verified = [r for r in residual if r["verified"]]
    return {
        "families": len(rows),
        "residual_families": len(residual),
        "non_residual_families": sorted(r["family"] for r in rows if r not in residual),
        "built": len(built),
        "found": len(found),
        "verified": len(verified),
        "found_pct": _pct(len(found), len(residual)),
        "verified_pct": _pct(len(verified), len(residual)),
        "verified_pct_of_built": _pct(len(verified), len(built)),
        "goal_pct": 100 * GOAL,
        "goal_met": bool(residual) and len(verified) >= GOAL * len(residual),
        "by_status": _count(r["status"] for r in rows),
        "attribution": _count(r.get("attribution", "not checked") for r in verified),
    }


def hf_summary(rows):
    out = {}
    for kind in ("causal", "encoder"):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        built = [r for r in rs if r["status"] not in ("build failed", "forward failed", "timeout")]
        found = [r for r in rs if r["found"]]
        verified = [r for r in rs if r["verified"]]
        out[kind] = {
            "architectures": len(rs),
            "built": len(built),
            "found": len(found),
            "verified": len(verified),
            "found_pct": _pct(len(found), len(rs)),
            "verified_pct": _pct(len(verified), len(rs)),
            "verified_pct_of_built": _pct(len(verified), len(built)),
            "goal_pct": 100 * GOAL,
            "goal_met": len(verified) >= GOAL * len(rs),
            "goal_met_over_built": bool(built) and len(verified) >= GOAL * len(built),
            "by_status": _count(r["status"] for r in rs),
        }
    return out


def _count(items):
    out = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return dict(sorted(out.items()))


def _md_cell(s, limit=110):
    s = "" if s is None else str(s).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def markdown(report) -> str:
    lines = [f"# unravel adapter coverage ({report['date']})", "",
             f"timm {report['versions'].get('timm')}, transformers {report['versions'].get('transformers')}, "
             f"torch {report['versions']['torch']}; {report['elapsed_s']:.0f} s", ""]
    if "timm" in report:
        s = report["timm"]["summary"]
        lines += ["## timm families", "",
                  f"residual families: {s['residual_families']} of {s['families']} "
                  f"(non-residual: {', '.join(s['non_residual_families']) or 'none'}); "
                  f"found {s['found']} ({s['found_pct']}%), verified {s['verified']} ({s['verified_pct']}%; "
                  f"{s['verified_pct_of_built']}% of the {s['built']} that built); goal >= {s['goal_pct']:.0f}%: "
                  f"{'met' if s['goal_met'] else 'not met'}; attribution on the verified: "
                  f"{', '.join(f'{k} {v}' for k, v in s.get('attribution', {}).items()) or 'not checked'}", "",
                  "| family | model | params | input | residual | status | units | attribution | error |",
                  "|---|---|---:|---|---|---|---:|---|---|"]
        for r in report["timm"]["rows"]:
            res = "no" if r["family"] in NON_RESIDUAL_TIMM and not r["found"] else "yes"
            size = "x".join(map(str, r["input"][1:])) if r.get("input") else ""
            params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else ""
            model = (r.get("model") or "") + (f" (after {len(r['passed_over'])} using no skip)"
                                              if r.get("passed_over") else "")
            att = r.get("attribution", "")
            if r.get("exact_rel_err") is not None:
                att += f" ({r['exact_rel_err']:.1e}, {r['exact_dtype']})"
            lines.append(f"| {r['family']} | {model} | {params} | {size} | {res} | {r['status']} | "
                         f"{r['units'] if r['units'] is not None else ''} | {att} | "
                         f"{_md_cell(r.get('error') or r.get('attribution_note'))} |")
        lines.append("")
    if "hf" in report:
        for kind, s in report["hf"]["summary"].items():
            lines += [f"## transformers {'causal LMs' if kind == 'causal' else 'encoders (masked LM)'}", "",
                      f"architectures: {s['architectures']}, built {s['built']}; found {s['found']} "
                      f"({s['found_pct']}%), verified {s['verified']} ({s['verified_pct']}% of all, "
                      f"{s['verified_pct_of_built']}% of built); goal >= {s['goal_pct']:.0f}%: "
                      f"{'met' if s['goal_met'] else 'not met'} over all, "
                      f"{'met' if s['goal_met_over_built'] else 'not met'} over built", "",
                      "| model type | class | params | status | units | exact | error |",
                      "|---|---|---:|---|---:|---|---|"]
            for r in report["hf"]["rows"]:
                if r["kind"] != kind:
                    continue
                params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else ""
                exact = (f"{r['exact_rel_err']:.1e} ({r['exact_dtype']})" if r.get("exact_rel_err") is not None
                         else "not checked" if r.get("exact_note") else "")
                note = r.get("error") or (f"config fixed: {r['config_fix']}" if r.get("config_fix") else None)
                lines.append(f"| {r['model_type']} | {r.get('class') or ''} | {params} | {r['status']} | "
                             f"{r['units'] if r['units'] is not None else ''} | {exact} | {_md_cell(note)} |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm", action="store_true", help="sweep timm families")
    ap.add_argument("--hf", action="store_true", help="sweep transformers causal LMs and encoders")
    ap.add_argument("--limit", type=int, default=None, help="first N timm families / N of each HF kind")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help=f"output JSON (default {DEFAULT_JSON.relative_to(ROOT)})")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="models built at a time")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per model (build, forward, find, verify)")
    ap.add_argument("--only", nargs="*", default=None, help="only these timm families / HF model types")
    ap.add_argument("--quiet", action="store_true", help="no per-model progress on stderr")
    args = ap.parse_args(argv)
    if not args.timm and not args.hf:
        args.timm = args.hf = True

    warnings.filterwarnings("ignore")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "unravel": unravel.__version__}
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "versions": versions, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "settings": {"limit": args.limit, "jobs": args.jobs, "timeout_s": args.timeout, "img_cap": IMG_CAP,
                           "candidates": CANDIDATES, "seq": SEQ, "max_hf_params": MAX_HF_PARAMS, "goal": GOAL,
                           "only": args.only},
              "residual_rule": ("a timm family is residual unless listed in non_residual_timm (no additive "
                                "identity-shortcut block); a listed family where unravel finds units counts as "
                                "residual. Every transformers architecture counts as residual."),
              "non_residual_timm": NON_RESIDUAL_TIMM}
    t0 = time.perf_counter()
    if args.timm:
        import timm

        versions["timm"] = timm.__version__
        fams = timm_tasks(args.only)[: args.limit]
        print(f"timm: {len(fams)} families", file=sys.stderr, flush=True)
        t = time.perf_counter()
        rows = run_all(timm_task, fams, lambda f: {"family": f}, jobs=args.jobs, timeout=args.timeout,
                       progress=not args.quiet)
        report["timm"] = {"summary": timm_summary(rows), "elapsed_s": round(time.perf_counter() - t, 1), "rows": rows}
    if args.hf:
        import transformers

        transformers.logging.set_verbosity_error()
        versions["transformers"] = transformers.__version__
        tasks = hf_tasks(args.only)
        if args.limit is not None:
            tasks = [t for t in tasks if t[0] == "causal"][: args.limit] + \
                    [t for t in tasks if t[0] == "encoder"][: args.limit]
        print(f"transformers: {len(tasks)} architectures", file=sys.stderr, flush=True)
        t = time.perf_counter()
        rows = run_all(hf_task, tasks, lambda t: {"kind": t[0], "model_type": t[1]}, jobs=args.jobs,
                       timeout=args.timeout, progress=not args.quiet)
        report["hf"] = {"summary": hf_summary(rows), "elapsed_s": round(time.perf_counter() - t, 1), "rows": rows}
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
