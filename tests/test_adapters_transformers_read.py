"""transformers layers no adapter names, read from their forward (one tiny random model per layout:
seq2seq decoder layers, BERT-family layers read through their submodules, SSM and hybrid layers,
mixture-of-experts, scaled, cast and normed shortcuts, hyper-connections, ...): units found
without a user adapter, routing faithful, deletion restored bit-exactly, and the exact path-length
decomposition summing to autograd's gradient. No weights are downloaded."""

import functools

import pytest
import torch

import unravel
from unravel.errors import ArgumentError, UnsupportedModelError

from .conftest import autograd_input_grad, state_hash
from .test_adapters_transformers import SIZES, _check_exact, float64_softmax  # noqa: F401  (a fixture)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SEQ2SEQ = dict(d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=48, encoder_layers=2,
               encoder_attention_heads=2, encoder_ffn_dim=48)
SEQ, MAMBA = ["attention", "mlp"] * 2, ["mixer"] * 2
# name -> (model_type, config overrides, head, labels, float32 inside: the decomposition's tolerance)
FAMILIES = {
    "bart": ("bart", SEQ2SEQ, "lm", SEQ, None),  # post-norm seq2seq decoder layer
    "mbart": ("mbart", SEQ2SEQ, "lm", SEQ, None),  # pre-norm
    "trocr": ("trocr", SEQ2SEQ, "lm", SEQ, None),  # output_attentions in a condition
    "megatron-bert": ("megatron-bert", {}, "lm", SEQ, None),  # BERT family, pre-LN inside the attention
    "roformer": ("roformer", {}, "lm", SEQ, None),  # BERT family, read through attention.output
    "deberta-v2": ("deberta-v2", {}, "mlm", SEQ, None),
    "squeezebert": ("squeezebert", {"embedding_size": 32}, "mlm", SEQ, None),  # dicts in and out, a required flag
    "mamba": ("mamba", {"state_size": 8}, "lm", MAMBA, "residual in float32"),  # a cast shortcut
    "jamba": ("jamba", {"num_experts": 4, "state_size": 8}, "lm", ["mamba", "mlp"] * 2, "RMSNorm in float32"),
    "zamba2": ("zamba2", {"layers_block_type": ["mamba", "hybrid"], "mamba_d_state": 8}, "lm", ["mamba", "attention+mamba"],
               "RMSNorm in float32"),  # a shared transformer read through, the embeddings beside the stream
    "granitemoe": ("granitemoe", {"num_local_experts": 4, "num_experts_per_tok": 2}, "lm", SEQ, "RMSNorm in float32"),
    "qwen3_next": ("qwen3_next", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                                  "shared_expert_intermediate_size": 16}, "lm", SEQ, "RMSNorm in float32"),
    "doge": ("doge", {}, "lm", SEQ, "RMSNorm in float32"),  # shortcut scaled by a parameter
    "minimax": ("minimax", {"num_local_experts": 4}, "lm", SEQ, "RMSNorm in float32"),  # scaled, normed shortcut
    "mpt": ("mpt", {}, "lm", SEQ, "softmax in float32"),  # the MLP adds the residual itself
    "ctrl": ("ctrl", {}, "lm", SEQ, None),  # one tensor passed three times
    "openai-gpt": ("openai-gpt", {}, "lm", SEQ, None),  # returns a list
    "rwkv": ("rwkv", {}, "lm", SEQ, "time mixing in float32"),  # a state passed between its units
    "gpt-neox-japanese": ("gpt_neox_japanese", {}, "lm", SEQ, None),  # a bias returned by the attention
    "beam": ("beam", {}, "lm", SEQ, "RMSNorm in float32"),  # depth-scaled sums
    "deepseek-v4": ("deepseek_v4", {}, "lm", SEQ, "hyper-connections in float32"),  # mHC: mixing shortcut
    "hy-v4": ("hy_v4", {}, "lm", SEQ, "hyper-connections in float32"),
}
FAST = ["bart", "roformer", "mamba", "zamba2", "minimax", "rwkv"]
SLOW = [pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES if n not in FAST]


@functools.lru_cache(maxsize=None)
def _model(name):
    model_type, extra, head, _, _ = FAMILIES[name]
    fields = transformers.AutoConfig.for_model(model_type).to_dict()
    sizes = {k: v for k, v in SIZES.items() if k in fields}
    cfg = transformers.AutoConfig.for_model(model_type, **{**sizes, **extra}, use_cache=False)
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"  # grouped matmuls take no float64
    auto = transformers.AutoModelForCausalLM if head == "lm" else transformers.AutoModelForMaskedLM
    torch.manual_seed(0)
    return auto.from_config(cfg).double().eval()


def _ids(n=2, seq=6):
    return torch.randint(3, 100, (n, seq), generator=torch.Generator().manual_seed(1))


def _loss(out, _):
    return out.logits.pow(2).mean()


@pytest.mark.parametrize("name", FAST + SLOW)
def test_units_found_and_verified(name):
    model = _model(name)
    units = unravel.find_units(model)
    assert [u.parts.label for u in units] == FAMILIES[name][3]
    unravel.verify_units(model, {"input_ids": _ids()}, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FAST + SLOW)
def test_delete_changes_logits_and_restores_bit_exactly(name):
    model, ids = _model(name), _ids()
    n = len(unravel.find_units(model))
    before, logits = state_hash(model), model(ids).logits
    with unravel.lesion.delete(model, [0, n - 1]):
        lesioned = model(ids).logits
    assert not torch.allclose(lesioned, logits)
    assert state_hash(model) == before and not model.training
    assert torch.equal(model(ids).logits, logits)


@pytest.mark.parametrize("name", FAST + SLOW)
def test_exact_decomposition_sums_to_autograd(name, float64_softmax):
    model, ids = _model(name), _ids()
    res = unravel.attribution.path_length_gradients(model, ids, loss=_loss)
    n = len(unravel.find_units(model))
    assert res.lengths.tolist() == list(range(n + 1))
    _check_exact(res, autograd_input_grad(model, ids, None, _loss), 1e-6 if FAMILIES[name][4] else 1e-10)


def test_shortcut_kinds():
    # a cast (Mamba's residual in float32) is not a projection; a scaling by a parameter (Doge),
    # a norm before the sum (MiniMax) and DeepSeek-V4's mixing of the streams are
    units = {n: unravel.find_units(_model(n)) for n in ("mamba", "doge", "minimax", "deepseek-v4", "bart")}
    assert [u.projection for u in units["mamba"]] == [False, False]
    assert all(u.projection for n in ("doge", "minimax", "deepseek-v4") for u in units[n])
    assert not any(u.projection for u in units["bart"])
    # Bart is post-norm: each unit's post is its LayerNorm
    assert all(u.parts.post is not None for u in units["bart"])


def test_output_attentions_is_read_again_and_returned():
    # TrOCR's layer returns attention weights under `if output_attentions:`; that call is read
    # again, its units equal the default reading's, and the weights come back as the layer's
    model, ids = _model("trocr"), _ids()
    own = model(ids, output_attentions=True).attentions
    assert own is not None and len(own) == 2 and own[0] is not None
    unravel.verify_units(model, {"input_ids": ids, "output_attentions": True}, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_required_flag_is_read_off_and_read_again_on():
    # SqueezeBERT's layer takes output_attentions positionally and returns a dict with the
    # attention scores under it: read with the flag off, read again with it on
    model, ids = _model("squeezebert"), _ids()
    assert model(ids, output_attentions=True).attentions[0] is not None
    unravel.verify_units(model, {"input_ids": ids, "output_attentions": True}, rtol=1e-12, atol=1e-12)


def test_cross_attention_call_is_refused():
    # with encoder states Bart's decoder layer has a third unit (cross-attention): not routed
    model, ids = _model("bart"), _ids()
    enc = torch.randn(2, 3, 32, dtype=torch.float64)
    with unravel.lesion.delete(model, [0]), pytest.raises(ArgumentError, match="encoder_hidden_states given"):
        model(ids, encoder_hidden_states=enc)


def test_state_between_units_is_refused_with_a_cache():
    # RWKV's feed-forward takes the state its attention returns: None without a cache; with one
    # the units would share state, so routing refuses it
    model, ids = _model("rwkv"), _ids()
    with unravel.lesion.delete(model, [0]), pytest.raises(ArgumentError, match="use_cache=False"):
        model(ids, use_cache=True)


def test_branch_skipping_units_is_not_matched():
    # a sum that adds a branch read from an earlier state (LongCat-Flash's shortcut MLP) is not a
    # chain of units: the layer is not matched, rather than merged into one unit
    class Skipping(torch.nn.Module):
        __module__ = "transformers.models.fake.modeling_fake"

        def __init__(self):
            super().__init__()
            self.attn, self.mlp, self.attn2, self.mlp2, self.extra_mlp = (torch.nn.Linear(4, 4) for _ in range(5))

        def forward(self, hidden_states):
            hidden_states = hidden_states + self.attn(hidden_states)
            shortcut_output = self.extra_mlp(hidden_states)
            hidden_states = hidden_states + self.mlp(hidden_states)
            hidden_states = hidden_states + self.attn2(hidden_states)
            return hidden_states + self.mlp2(hidden_states) + shortcut_output

    class Parallel(Skipping):  # the same extra branch read from the last unit's input: a parallel unit
        __module__ = Skipping.__module__

        def forward(self, hidden_states):
            hidden_states = hidden_states + self.attn(hidden_states)
            return hidden_states + self.mlp(hidden_states) + self.extra_mlp(hidden_states)

    with pytest.raises(UnsupportedModelError):
        unravel.find_units(torch.nn.Sequential(Skipping()))
    net = torch.nn.Sequential(Parallel())
    assert [u.parts.label for u in unravel.find_units(net)] == ["attention", "mlp"]
    unravel.verify_units(net, torch.randn(2, 4), rtol=0, atol=0)
