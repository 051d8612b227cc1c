"""Models other libraries wrap: accelerate's device_map (CPU and disk offload) and
nnsight.NNsight. Found as the plain model's units, lesioned with the wrapper put back exactly,
attributed exactly, swept as the plain model is."""

import numpy as np
import pytest
import torch

import unravel
from unravel import attribution, sweeps
from unravel.adapters.wrappers import wrapper_of
from unravel.errors import ArgumentError
from unravel.losses import next_token_loss

from .conftest import autograd_input_grad, state_hash

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate", reason="accelerate is in the [devices] extra")
nnsight = pytest.importorskip("nnsight", reason="nnsight is in the [nnsight] extra")
try:
    # importing nnsight mounts a `save` method on every Python object, process-wide: argparse
    # then sees every `--save` option as given (a bound method), which broke another test of this
    # suite's process. Unmounted here; the traces below call nnsight.save(value) instead.
    from nnsight._c import unmount

    unmount("save")
except ImportError:  # the optional extension did not build: nothing was mounted
    pass


@pytest.fixture
def float64_softmax(monkeypatch):
    """Eager attention takes its softmax in float32; in float64 here (exactness at float64)."""
    softmax = torch.nn.functional.softmax

    def softmax64(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=None if x.dtype == torch.float64 else dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", softmax64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama-layout model saved with save_pretrained, as users have theirs."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=50, max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def _conserves(res, g):
    """The parts sum to autograd's gradient, to float32 rounding: Llama's RMSNorm computes in
    float32 whatever the model's dtype, so float64 exactness is out of reach (the plain model's
    parts are as far from its gradient; the wrapped model's parts equal the plain model's)."""
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-6, atol=1e-7 * float(g.abs().max()))


def _plain(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()


def _offloaded(folder, how, tmp_path):
    if how == "disk":  # two layers on disk, the rest on the CPU
        device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                      "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
        return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64, device_map=device_map,
                                                                 offload_folder=tmp_path / "offload").eval()
    # every module's weights held off the model, brought in for each forward
    return accelerate.cpu_offload(_plain(folder), execution_device="cpu")


IDS = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(1))


def _wrappers(model):
    """What the wrappers hold, by identity: each module's instance forward and hook state."""
    return {name: {k: id(v) for k, v in m.__dict__.items() if k in ("forward", "_old_forward", "_hf_hook")}
            for name, m in model.named_modules()}


@pytest.mark.parametrize("how", ["disk", "cpu_offload"])
def test_device_map_found_lesioned_and_restored(saved, how, tmp_path):
    plain, model = _plain(saved), _offloaded(saved, how, tmp_path)
    layer = model.model.layers[1]
    # disk: the layer's hook brings its weights in; cpu_offload: each leaf module's does
    assert wrapper_of(layer if how == "disk" else layer.self_attn.q_proj) == "accelerate"
    assert layer.self_attn.q_proj.weight.device.type == "meta"  # really offloaded
    units = unravel.verify_units(model, IDS)
    assert [u.name for u in units] == [u.name for u in unravel.find_units(plain)]
    before = _wrappers(model)
    with torch.no_grad():
        base = model(IDS).logits
        assert torch.equal(base, plain(IDS).logits)
        for group in [(0,), (2, 3), (5,)]:
            with unravel.lesion.delete(model, list(group)):
                lesioned = model(IDS).logits
            with unravel.lesion.delete(plain, list(group)):
                want = plain(IDS).logits
            assert torch.equal(lesioned, want) and not torch.equal(lesioned, base)
        with unravel.lesion.reorder(model, [0, 1, 4, 5, 2, 3]):
            moved = model(IDS).logits
        with unravel.lesion.reorder(plain, [0, 1, 4, 5, 2, 3]):
            assert torch.equal(moved, plain(IDS).logits)
        assert torch.equal(model(IDS).logits, base)
    assert _wrappers(model) == before and type(layer) is type(plain.model.layers[1])


@pytest.mark.parametrize("how", ["disk", "cpu_offload"])
def test_device_map_attribution_is_exact(saved, how, tmp_path, float64_softmax):
    plain, model = _plain(saved), _offloaded(saved, how, tmp_path)
    res = attribution.path_length_gradients(model, IDS, loss="next_token")
    _conserves(res, autograd_input_grad(plain, IDS, IDS, next_token_loss))
    assert torch.equal(res.by_length, attribution.path_length_gradients(plain, IDS, loss="next_token").by_length)
    want = attribution.path_length_gradients(plain, IDS, loss="next_token", group="layer")
    got = attribution.path_length_gradients(model, IDS, loss="next_token", group="layer")
    assert torch.allclose(got.by_length, want.by_length, rtol=1e-10, atol=1e-16)
    if how == "disk":
        with pytest.raises(ArgumentError, match="meta device"):
            attribution.path_length_gradients(model, IDS, loss="next_token", wrt="units")


def test_device_map_sweeps_equal_the_plain_model(saved, tmp_path):
    plain, model = _plain(saved), _offloaded(saved, "disk", tmp_path)
    kw = dict(loss="next_token", progress=False, group="layer", batch_size=2)
    got, want = sweeps.delete_each(model, (IDS, IDS), **kw), sweeps.delete_each(plain, (IDS, IDS), **kw)
    assert got.equals(want)


def test_nnsight_wrapped_model(saved, float64_softmax):
    plain = _plain(saved)
    reference = _plain(saved)
    wrapped = nnsight.NNsight(plain)
    assert wrapper_of(plain.model.layers[0]) == "nnsight"
    assert [u.name for u in unravel.find_units(wrapped)] == [u.name for u in unravel.find_units(reference)]
    unravel.verify_units(wrapped, IDS)
    before, wrappers = state_hash(plain), _wrappers(plain)
    with torch.no_grad():
        with unravel.lesion.delete(wrapped, [2, 3]):
            lesioned = wrapped(IDS).logits
            with wrapped.trace(IDS):  # nnsight inside a lesion sees the lesioned network
                traced = nnsight.save(wrapped.lm_head.output)
        with unravel.lesion.delete(reference, [2, 3]):
            want = reference(IDS).logits
    assert torch.equal(lesioned, want) and torch.equal(traced, want)
    assert state_hash(plain) == before and _wrappers(plain) == wrappers
    with torch.no_grad():
        assert torch.equal(wrapped(IDS).logits, reference(IDS).logits)
    res = attribution.path_length_gradients(wrapped, IDS, loss="next_token")
    _conserves(res, autograd_input_grad(reference, IDS, IDS, next_token_loss))
    assert torch.equal(res.by_length, attribution.path_length_gradients(reference, IDS, loss="next_token").by_length)
    kw = dict(loss="next_token", progress=False, group="layer")
    assert sweeps.delete_each(wrapped, (IDS, IDS), **kw).equals(sweeps.delete_each(reference, (IDS, IDS), **kw))
    frame = sweeps.reorder_random(wrapped, (IDS, IDS), ks=[1], samples_per_k=2, **kw)
    assert np.allclose(frame.loss, sweeps.reorder_random(reference, (IDS, IDS), ks=[1], samples_per_k=2, **kw).loss,
                       rtol=0, atol=0)


def test_a_forward_replaced_by_hand_is_still_refused(saved):
    model = _plain(saved)
    layer = model.model.layers[0]
    layer.forward = lambda *a, **k: type(layer).forward(layer, *a, **k)
    with pytest.raises(unravel.UnsupportedModelError, match="overrides forward"):
        unravel.find_units(model)


def test_transformer_lens_bridge(saved, tmp_path):
    """TransformerLens's TransformerBridge keeps the transformers layers (its bridges replace their
    submodules): units found, lesions and attribution equal the plain model's. transformer_lens
    is not in the lock (its dependencies: wandb, datasets, pyarrow, ...); install it to run this."""
    tl = pytest.importorskip("transformer_lens.model_bridge", reason="transformer_lens is not in the lock")
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(50)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t1", bos_token="t2",
                                         eos_token="t3").save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float64, attn_implementation="eager")
    bridge = tl.TransformerBridge.boot_transformers(str(saved), hf_model=hf.eval(), dtype=torch.float64, device="cpu",
                                                    tokenizer=transformers.AutoTokenizer.from_pretrained(tmp_path))
    # the bridge runs eager attention; so does the reference
    plain = transformers.AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float64,
                                                              attn_implementation="eager").eval()
    assert len(unravel.verify_units(bridge, IDS)) == 6
    with torch.no_grad():
        base = bridge(IDS)
        with unravel.lesion.delete(bridge, [2, 3]):
            lesioned = bridge(IDS)
        with unravel.lesion.delete(plain, [2, 3]):
            assert torch.equal(lesioned, plain(IDS).logits)
        assert torch.equal(bridge(IDS), base)
    res = attribution.path_length_gradients(bridge, IDS, loss="next_token")
    _conserves(res, autograd_input_grad(bridge, IDS, IDS, next_token_loss))
    assert torch.equal(res.by_length, attribution.path_length_gradients(plain, IDS, loss="next_token").by_length)
