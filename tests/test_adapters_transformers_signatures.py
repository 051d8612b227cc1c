"""The hand-written transformers adapters against the layers' signatures: each reads the installed
release's ``forward`` signature (whatever version the lock, the newest or the oldest install
brings), tolerates an optional argument a release removed (Falcon's ``alibi`` in 5.25), and
refuses a renamed, missing or new argument with one ``UnsupportedModelError`` naming the class and
the transformers version — never a ``KeyError`` from inside a route."""

import importlib
import inspect

import pytest
import torch

import unravel
from unravel.adapters._transformers import CLASSES
from unravel.adapters._transformers._program import _ReadAdapter
from unravel.adapters._transformers._read import _bind, _forward_of, _known_args, _signature_problem
from unravel.errors import UnsupportedModelError

from .test_adapters_transformers import _inputs, _kwargs, _model

transformers = pytest.importorskip("transformers")

HAND = {path: adapter for path, adapter in CLASSES.items() if not isinstance(adapter, _ReadAdapter)}
# the layers every supported release ships (the others are newer families)
STABLE = {"BertLayer", "RobertaLayer", "OPTDecoderLayer", "BloomBlock", "FalconDecoderLayer"}


def _import(path):
    module, name = path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


@pytest.fixture
def fresh_signatures():
    """``_forward_of`` caches each class's signature; a patched ``forward`` needs it cleared."""
    _forward_of.cache_clear()
    yield
    _forward_of.cache_clear()


def test_every_hand_adapter_reads_the_installed_signature():
    found = {path.rsplit(".", 1)[1]: _import(path) for path in HAND}
    present = {name for name, cls in found.items() if cls is not None}
    assert STABLE <= present, f"missing from transformers {transformers.__version__}: {STABLE - present}"
    problems = {name: _signature_problem(cls, HAND[path].KNOWN, HAND[path].REQUIRED)
                for path, (name, cls) in zip(HAND, found.items()) if cls is not None}
    assert problems == dict.fromkeys(problems), problems


def _required_args(cls):
    """None for each argument of ``cls.forward`` without a default, past the input."""
    params = list(inspect.signature(cls.forward).parameters.values())[2:]
    return {p.name: None for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _patch_forward(monkeypatch, cls, forward):
    monkeypatch.setattr(cls, "forward", forward)


def test_falcon_with_alibi_in_its_signature_is_routed_as_before(monkeypatch, fresh_signatures):
    """Releases before 5.25 take ``alibi`` and pass it on to the attention: routed, verified."""
    from transformers.models.falcon.modeling_falcon import FalconDecoderLayer

    model, x = _model("falcon"), _inputs("falcon")
    original = FalconDecoderLayer.forward
    params = list(inspect.signature(original).parameters)
    if "alibi" in params:  # a release before 5.25: the layer's own signature is the case
        assert [u.parts.label for u in unravel.find_units(model)] == ["attention", "mlp"] * 2
        unravel.verify_units(model, _kwargs("falcon", x), rtol=1e-12, atol=1e-12)
        return
    passed = []

    def forward(self, hidden_states, alibi=None, attention_mask=None, position_ids=None, layer_past=None,
                use_cache=False, output_attentions=False, position_embeddings=None, **kwargs):
        passed.append(alibi)
        named = dict(attention_mask=attention_mask, position_ids=position_ids, layer_past=layer_past,
                     use_cache=use_cache, output_attentions=output_attentions,
                     position_embeddings=position_embeddings)
        return original(self, hidden_states, **{k: v for k, v in named.items() if k in params}, **kwargs)

    _patch_forward(monkeypatch, FalconDecoderLayer, forward)
    units = unravel.find_units(model)
    assert [u.parts.label for u in units] == ["attention", "mlp"] * 2
    unravel.verify_units(model, _kwargs("falcon", x), rtol=1e-12, atol=1e-12)
    assert passed


@pytest.mark.parametrize("change", ["renamed", "required"])
def test_a_changed_signature_is_one_clear_error_when_units_are_found(monkeypatch, fresh_signatures, change):
    from transformers.models.falcon.modeling_falcon import FalconDecoderLayer

    model = _model("falcon")
    original = FalconDecoderLayer.forward
    if change == "renamed":  # attention_mask renamed: the adapter would lose the mask
        def forward(self, hidden_states, mask=None, **kwargs):
            return original(self, hidden_states, mask, **kwargs)
        said = "takes no argument 'attention_mask'"
    else:  # a new argument every call passes, which the adapter would not pass on
        def forward(self, hidden_states, attention_mask, sink_tokens, **kwargs):
            return original(self, hidden_states, attention_mask, **kwargs)
        said = "requires argument(s) 'sink_tokens' that its adapter does not pass on"
    _patch_forward(monkeypatch, FalconDecoderLayer, forward)
    with pytest.raises(UnsupportedModelError) as err:
        unravel.find_units(model)
    message = str(err.value)
    assert said in message and "FalconDecoderLayer" in message
    assert f"transformers {transformers.__version__}" in message


def test_a_new_optional_argument_is_routed_at_its_default_and_refused_when_set(monkeypatch, fresh_signatures):
    from transformers.models.falcon.modeling_falcon import FalconDecoderLayer

    model, x = _model("falcon"), _inputs("falcon")
    original = FalconDecoderLayer.forward

    def forward(self, *args, sink_tokens=None, **kwargs):
        return original(self, *args, **kwargs)

    sig = inspect.signature(original)  # the installed release's signature, plus sink_tokens
    params = list(sig.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    new = inspect.Parameter("sink_tokens", inspect.Parameter.KEYWORD_ONLY, default=None)
    forward.__signature__ = sig.replace(parameters=params[:at] + [new] + params[at:])
    _patch_forward(monkeypatch, FalconDecoderLayer, forward)
    unravel.verify_units(model, _kwargs("falcon", x), rtol=1e-12, atol=1e-12)
    layer, adapter = model.transformer.h[0], HAND[f"{FalconDecoderLayer.__module__}.FalconDecoderLayer"]
    h = torch.zeros(1, 2, 32, dtype=torch.float64)
    required = _required_args(FalconDecoderLayer)
    assert "sink_tokens" not in _known_args(_bind(layer, (h,), {**required, "sink_tokens": None}), adapter.KNOWN)
    with pytest.raises(UnsupportedModelError, match="called with 'sink_tokens'"):
        _known_args(_bind(layer, (h,), {**required, "sink_tokens": torch.ones(1)}), adapter.KNOWN)


def test_an_argument_missing_at_route_time_names_class_and_version():
    """The route's backstop: a bound argument the layer does not take is the same clear error."""
    model = _model("falcon")
    layer = model.transformer.h[0]
    values = _bind(layer, (torch.zeros(1, 2, 32, dtype=torch.float64),), _required_args(type(layer)))
    assert values["attention_mask"] is None
    with pytest.raises(UnsupportedModelError, match=r"FalconDecoderLayer.*takes no argument 'no_such_arg'.*transformers"):
        values["no_such_arg"]
