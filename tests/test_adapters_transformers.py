"""Built-in adapters for Hugging Face transformers layers, on tiny random models built from configs
(no weights are downloaded): units found without a user adapter, routing faithful, deletion
restored bit-exactly, and the exact path-length decomposition summing to autograd's gradient."""

import functools

import pytest
import torch

import unravel
from unravel.errors import ArgumentError, UnsupportedModelError

from .conftest import autograd_input_grad, state_hash

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=48,
             head_dim=16, n_embd=32, n_layer=2, n_head=2, n_inner=48, num_layers=2, num_heads=2, ffn_dim=48,
             word_embed_proj_dim=32, dim=32, n_heads=2, n_layers=2, hidden_dim=48, vocab_size=100,
             max_position_embeddings=64, n_positions=64, rotary_dim=8, image_size=16, patch_size=8, num_channels=3,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, sliding_window=8, query_pre_attn_scalar=16)

SEQ, PAR = ["attention", "mlp"] * 2, ["attention+mlp"] * 2
# name -> (model_type, config overrides, head, labels of the units); the families the adapters name
FAMILIES = {
    "gpt2": ("gpt2", {}, "lm", SEQ),
    "gpt-neo": ("gpt_neo", {"attention_types": [[["global", "local"], 1]], "window_size": 4}, "lm", SEQ),
    "gpt-j": ("gptj", {}, "lm", PAR),
    "pythia": ("gpt_neox", {}, "lm", PAR),
    "gpt-neox-sequential": ("gpt_neox", {"use_parallel_residual": False}, "lm", SEQ),
    "opt": ("opt", {}, "lm", SEQ),
    "opt-post-ln": ("opt", {"do_layer_norm_before": False}, "lm", SEQ),
    "bloom": ("bloom", {}, "lm", SEQ),
    "bloom-ln-shortcut": ("bloom", {"apply_residual_connection_post_layernorm": True}, "lm", SEQ),
    "falcon": ("falcon", {"new_decoder_architecture": False, "parallel_attn": False, "alibi": False}, "lm", SEQ),
    "falcon-parallel": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}, "lm", PAR),
    "llama": ("llama", {}, "lm", SEQ),
    "bert": ("bert", {}, "mlm", SEQ),
    "roberta": ("roberta", {}, "mlm", SEQ),
    "distilbert": ("distilbert", {}, "mlm", SEQ),
    "vit": ("vit", {}, "vision", SEQ),
    "deit": ("deit", {}, "DeiTForImageClassification", SEQ),
}
# families no adapter names: matched by a layout (the layer's forward is read)
LAYOUT_FAMILIES = {
    "qwen3": ("qwen3", {}, "lm", SEQ),
    "qwen2": ("qwen2", {}, "lm", SEQ),
    "gemma": ("gemma", {}, "lm", SEQ),
    "olmo": ("olmo", {}, "lm", SEQ),
    "mistral": ("mistral", {}, "lm", SEQ),
    "gemma2": ("gemma2", {}, "lm", SEQ),
    "gemma3": ("gemma3_text", {}, "lm", SEQ),
    "phi3": ("phi3", {}, "lm", SEQ),
    "olmo2": ("olmo2", {}, "lm", SEQ),
    "granite": ("granite", {}, "lm", SEQ),
    "phi": ("phi", {}, "lm", PAR),
    "cohere": ("cohere", {}, "lm", PAR),
    "codegen": ("codegen", {}, "lm", PAR),
    "gpt-bigcode": ("gpt_bigcode", {}, "lm", SEQ),
    "xlm-roberta": ("xlm-roberta", {}, "mlm", SEQ),
    "electra": ("electra", {}, "mlm", SEQ),
}
ALL = {**FAMILIES, **LAYOUT_FAMILIES}


@functools.lru_cache(maxsize=None)
def _model(name):
    model_type, extra, head, _ = ALL[name]
    fields = transformers.AutoConfig.for_model(model_type).to_dict()
    cfg = transformers.AutoConfig.for_model(
        model_type, **{k: v for k, v in {**SIZES, **extra}.items() if k in fields or k in extra}, use_cache=False)
    auto = {"lm": transformers.AutoModelForCausalLM, "mlm": transformers.AutoModelForMaskedLM,
            "vision": transformers.AutoModelForImageClassification}.get(head)
    torch.manual_seed(0)
    cfg._attn_implementation = "eager"
    model = auto.from_config(cfg) if auto is not None else getattr(transformers, head)(cfg)
    return model.double().eval()


def _inputs(name):
    g = torch.Generator().manual_seed(1)
    if "Image" in ALL[name][2] or ALL[name][2] == "vision":
        return torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=g)
    return torch.randint(3, 100, (2, 6), generator=g)


def _kwargs(name, x):
    return {"pixel_values": x} if x.is_floating_point() else {"input_ids": x}


def _loss(out, _):
    return out.logits.pow(2).mean()


def _autograd_input_grad(model, x):
    return autograd_input_grad(model, x, None, _loss)


@pytest.mark.parametrize("name", list(ALL))
def test_units_found_and_verified(name):
    model, x = _model(name), _inputs(name)
    units = unravel.find_units(model)
    assert [u.parts.label for u in units] == ALL[name][3]
    assert len({u.name for u in units}) == len(units)
    unravel.verify_units(model, _kwargs(name, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES) + ["qwen3", "olmo2", "phi"])
def test_delete_changes_logits_and_restores_bit_exactly(name):
    model, x = _model(name), _inputs(name)
    before, logits = state_hash(model), model(x).logits
    with unravel.lesion.delete(model, [0, 1]):
        lesioned = model(x).logits
    assert not torch.allclose(lesioned, logits)
    assert state_hash(model) == before and not model.training
    assert torch.equal(model(x).logits, logits)


# transformers computes some steps in float32 whatever the model's dtype; there the decomposition
# is exact up to float32 rounding (with those steps in float64 it is exact to 1e-16, see below)
FLOAT32_INSIDE = {"gpt-neo": "query and key in float32", "gpt-j": "query and key in float32",
                  "codegen": "query and key in float32", "llama": "RMSNorm in float32",
                  "qwen3": "RMSNorm in float32", "gemma2": "RMSNorm in float32", "cohere": "LayerNorm in float32"}


@pytest.fixture
def float64_softmax(monkeypatch):
    """Eager attention takes its softmax in float32 (``dtype=torch.float32``); in float64 here,
    so that exactness is checked at float64 rounding."""
    softmax = torch.nn.functional.softmax

    def softmax64(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=None if x.dtype == torch.float64 else dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", softmax64)


def _check_exact(res, g, rtol):
    atol = 1e-13 * float(g.abs().max()) if rtol <= 1e-10 else rtol * float(g.abs().max())
    assert torch.allclose(res.by_length.sum(0), g, rtol=rtol, atol=atol)
    assert torch.allclose(res.total, g, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(FAMILIES) + ["qwen3", "gemma2", "phi", "cohere", "codegen"])
def test_exact_decomposition_sums_to_autograd(name, float64_softmax):
    model, x = _model(name), _inputs(name)
    res = unravel.attribution.path_length_gradients(model, x, loss=_loss)
    g = _autograd_input_grad(model, x)
    n = len(unravel.find_units(model))
    assert res.lengths.tolist() == list(range(n + 1))
    _check_exact(res, g, 1e-6 if name in FLOAT32_INSIDE else 1e-10)


def test_llama_decomposition_exact_with_its_norm_in_float64(float64_softmax, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def rms64(self, h):  # LlamaRMSNorm without its cast to float32
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(LlamaRMSNorm, "forward", rms64)
    model, x = _model("llama"), _inputs("llama")
    _check_exact(unravel.attribution.path_length_gradients(model, x, loss=_loss), _autograd_input_grad(model, x), 1e-10)


def test_next_token_cross_entropy_decomposition(float64_softmax):
    model, ids = _model("gpt2"), _inputs("gpt2")

    def loss(out, _):
        return torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 100), ids[:, 1:].reshape(-1))

    res = unravel.attribution.path_length_gradients(model, ids, loss=loss)
    _check_exact(res, autograd_input_grad(model, ids, None, loss), 1e-10)


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_padding_mask_is_routed(name):
    model, ids = _model(name), _inputs(name)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # right padding (left-padded rows are NaN in Llama's own eager output)
    unravel.verify_units(model, {"input_ids": ids, "attention_mask": mask}, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt-neo", "bloom", "falcon", "llama"])
def test_attention_weights_returned_as_the_layer_returns_them(name):
    model, ids = _model(name), _inputs(name)
    own = model(ids, output_attentions=True).attentions
    assert own is not None and len(own) == 2
    unravel.verify_units(model, {"input_ids": ids, "output_attentions": True}, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt2", "gpt-j"])
def test_deleting_every_unit_leaves_the_shortcuts(name):
    # every unit deleted: the logits are the head applied to the embeddings (a parallel layer is
    # one unit, so its attention and MLP go together)
    model, ids = _model(name), _inputs(name)
    t = model.transformer
    with unravel.lesion.delete(model, list(range(len(unravel.find_units(model))))):
        lesioned = model(ids).logits
    h = t.wte(ids) + (t.wpe(torch.arange(ids.shape[1]))[None] if hasattr(t, "wpe") else 0)
    assert torch.allclose(lesioned, model.lm_head(t.ln_f(h)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["pythia", "cohere"])
def test_parallel_layer_is_one_unit(name):
    # x + attn(ln(x)) + mlp(ln(x)): every path takes at most one branch, so one unit per layer;
    # Cohere sums (x + attn) + mlp, which the unit's forward replays in the layer's own order
    model, ids = _model(name), _inputs(name)
    units = unravel.find_units(model)
    assert len(units) == 2 and len({u.module for u in units}) == 2
    assert (units[0].parts.forward is not None) == (name == "cohere")
    res = unravel.attribution.path_length_gradients(model, ids, loss=_loss)
    assert res.counts == [1, 2, 1]


def test_fresh_cache_works_and_a_filled_one_is_refused():
    model, ids = _model("llama"), _inputs("llama")
    unravel.verify_units(model, {"input_ids": ids, "use_cache": True}, rtol=1e-12, atol=1e-12)
    with unravel.lesion.delete(model, [1]):
        out = model(ids, use_cache=True)
        assert out.past_key_values is not None
        with pytest.raises(ArgumentError, match="use_cache=False"):
            model(ids[:, -1:], cache=out.past_key_values, use_cache=True)


def test_cross_attention_call_is_refused():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, add_cross_attention=True,
                                  use_cache=False)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(3, 100, (1, 4))
    assert [u.parts.label for u in unravel.find_units(model)] == ["attention", "mlp"]
    with unravel.lesion.delete(model, [0]), pytest.raises(ArgumentError, match="encoder_hidden_states"):
        model(ids, encoder_hidden_states=torch.randn(1, 3, 32))


def test_layer_whose_forward_cannot_be_read_is_not_matched():
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    class Scaled(torch.nn.Module):  # a Llama-like layer adding a function of its input: no residual unit
        __module__ = "transformers.models.fake.modeling_fake"

        def __init__(self, layer):
            super().__init__()
            self.input_layernorm, self.self_attn = layer.input_layernorm, layer.self_attn
            self.post_attention_layernorm, self.mlp = layer.post_attention_layernorm, layer.mlp

        def forward(self, hidden_states, **kwargs):
            return self.mlp(self.input_layernorm(hidden_states)) + hidden_states.abs()

    layer = _model("llama").model.layers[0]
    with pytest.raises(UnsupportedModelError):
        unravel.find_units(torch.nn.Sequential(Scaled(layer)))

    class Overridden(LlamaDecoderLayer):  # overrides forward: the Llama adapter does not apply
        def forward(self, hidden_states, **kwargs):
            return hidden_states * 2

    with pytest.raises(UnsupportedModelError, match="overrides forward"):
        unravel.find_units(torch.nn.Sequential(Overridden(_model("llama").config, 0)))


def test_supported_blocks_lists_the_layouts():
    names = unravel.supported_blocks()
    assert "transformers.models.gpt2.modeling_gpt2.GPT2Block" in names
    assert any("input_layernorm, self_attn, post_attention_layernorm, mlp" in n for n in names)


def test_reading_a_layer_keeps_no_reference_to_it():
    import gc
    import weakref

    from unravel.adapters._transformers import _program as _transformers

    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=50, use_cache=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    unravel.verify_units(model, {"input_ids": torch.randint(0, 50, (1, 4))})
    layer = weakref.ref(model.model.layers[0])
    assert layer() in _transformers._PROGRAMS
    del model
    gc.collect()
    assert layer() is None


def test_stacked_sweeps_cut_per_example_keywords_with_their_rows():
    """delete_random with k >= 2 splits stacked variants into groups at one unit: attention masks
    and rotary tables must follow their rows (the engine equals the naive loop)."""
    for cfg in (transformers.GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=40, n_positions=32),
                transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=40,
                                         use_cache=False)):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        model.config.use_cache = False
        ids = torch.randint(0, 40, (4, 8))
        kw = dict(ks=[2, 3], samples_per_k=4, seed=1, batch_size=4, progress=False, next_token=True)
        fast = unravel.sweeps.delete_random(model, (ids, ids), **kw)
        naive = unravel.sweeps.delete_random(model, (ids, ids), method="naive", **kw)
        assert (fast.error - naive.error).abs().max() < 1e-12 and (fast.loss - naive.loss).abs().max() < 1e-4
