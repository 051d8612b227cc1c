"""The model registry: names, sizing from the data, argument checks, registration."""

import pytest
import torch

import unravel
from unravel import study
from unravel.errors import ArgumentError, UnravelError
from unravel.models import registry

BUILTIN = ["resnet_cifar", "preact_resnet_cifar", "plain_cifar", "se_resnet_cifar", "densenet_bc", "resmlp",
           "plain_mlp", "resnet1d", "plain1d"]


@pytest.fixture
def clean_registry(monkeypatch):
    """Models registered inside a test are gone after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_every_reference_model_is_registered_and_seen_by_studies():
    assert list(registry.model_names())[:len(BUILTIN)] == BUILTIN
    assert study.MODEL_BUILDERS["resnet_cifar"] is unravel.models.resnet_cifar
    assert list(study.MODEL_BUILDERS) == list(registry.model_names())
    with pytest.raises(TypeError):
        study.MODEL_BUILDERS["vgg"] = unravel.models.resnet_cifar  # a read-only view
    assert registry.model_entry("resnet_cifar").depth == 20 and registry.model_entry("densenet_bc").depth == 22
    assert registry.model_entry("densenet_bc").width == "growth"


@pytest.mark.parametrize("name", BUILTIN)
def test_each_model_is_sized_for_the_data(name):
    data = unravel.data.load("mnist1d", num_samples=100)
    extra = {"densenet_bc": {"depth": 10, "growth": 4}}.get(name, {"depth": 8} if "cifar" in name else {})
    net = registry.build_model(name, data, **extra)
    x, _ = data.batch(4)
    assert net(x).shape == (4, data.num_classes)
    assert len(unravel.find_units(net)) > 0


def test_sizing_follows_the_input_shape_and_kwargs_win():
    digits = unravel.data.load("digits")  # (1, 8, 8), 10 classes
    conv = registry.build_model("resnet_cifar", digits, depth=8, width=4)
    assert isinstance(conv.stem[0], torch.nn.Conv2d) and conv.stem[0].in_channels == 1
    assert registry.build_model("resmlp", digits).stem.in_features == 64
    assert registry.build_model("resnet1d", (3, 40), num_classes=5).fc.out_features == 5
    assert registry.build_model("resmlp", digits, num_classes=3).head[-1].out_features == 3
    assert registry.build_model("resmlp", (2, 3), num_classes=2).stem.in_features == 6


def test_unknown_model_lists_the_names():
    with pytest.raises(ArgumentError, match=r"unknown model 'vgg'; available: resnet_cifar, .*plain1d"):
        registry.build_model("vgg", (1, 40))


def test_bad_arguments_name_the_model_and_the_argument():
    with pytest.raises(ArgumentError, match=r"model 'resnet_cifar' takes no argument 'widht'; its arguments: depth"
                       ) as info:
        registry.build_model("resnet_cifar", (1, 40), depth=8, widht=4)
    assert not isinstance(info.value, TypeError)
    with pytest.raises(ArgumentError, match=r"model 'resnet_cifar' needs argument 'depth'"):
        registry.build_model("resnet_cifar", (1, 40))
    with pytest.raises(ArgumentError, match=r"model 'resnet_cifar': depth=7"):
        registry.build_model("resnet_cifar", (1, 40), depth=7)
    with pytest.raises(ArgumentError, match=r"model 'densenet_bc': depth=20"):
        registry.build_model("densenet_bc", (1, 40), depth=20)


def test_register_a_model(clean_registry):
    def tiny(in_features, num_classes, hidden=8):
        return unravel.models.resmlp(in_features, num_classes, width=hidden, depth=2)

    registry.register_model("tiny", tiny, sizing=lambda shape: {"in_features": shape[-1]}, width="hidden")
    assert "tiny" in registry.model_names() and "tiny" in study.MODEL_BUILDERS
    net = registry.build_model("tiny", unravel.data.synthetic(40, input_shape=(6,), num_classes=3))
    assert net.stem.in_features == 6 and net.head[-1].out_features == 3
    with pytest.raises(ArgumentError, match="registered already"):
        registry.register_model("tiny", tiny)
    registry.register_model("tiny", tiny, sizing="flat", replace=True)
    with pytest.raises(ArgumentError, match="sizing='wide'"):
        registry.register_model("other", tiny, sizing="wide")
    with pytest.raises(ArgumentError, match="takes no argument 'depth'"):
        registry.build_model("tiny", (4,), num_classes=2, depth=3)
    # a builder's own mistakes are bugs: not turned into user errors
    registry.register_model("broken", lambda **kw: {}["missing"], sizing=lambda s: {})
    with pytest.raises(KeyError):
        registry.build_model("broken", (4,))


def test_errors_are_unravel_errors():
    for call in (lambda: registry.model_entry("nope"), lambda: registry.build_model("resmlp", (4,), bogus=1)):
        with pytest.raises(UnravelError):
            call()


def test_model_strings_build_models_nobody_registered(tmp_path):
    import unravel
    from unravel.errors import ArgumentError
    from unravel.models import build_model

    tv = build_model("torchvision:resnet18", (3, 32, 32), num_classes=4)
    assert tv.fc.out_features == 4 and len(unravel.find_units(tv)) == 8
    mine = build_model("unravel.models:resmlp", None, in_features=4, num_classes=2, depth=3)
    assert len(unravel.find_units(mine)) == 3
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=32,
                                  architectures=["GPT2LMHeadModel"])
    cfg.save_pretrained(tmp_path)
    lm = build_model(f"hf:{tmp_path}", None)
    assert type(lm).__name__ == "GPT2LMHeadModel" and lm.config.n_layer == 2
    for bad, match in [("torchvision:nope", "no such builder"), ("hf:" + str(tmp_path / "none"), "no config.json"),
                       ("nomodule:x", "cannot import"), ("unravel.models:nothing", "no callable")]:
        with pytest.raises(ArgumentError, match=match):
            build_model(bad, None)


def test_checkpoints_of_other_tools_load(tmp_path):
    import torch

    from unravel import models, train

    net = models.resmlp(4, 2, width=8, depth=2)
    other = models.resmlp(4, 2, width=8, depth=2)
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    train.load(tmp_path / "bare.pt", other)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    third = models.resmlp(4, 2, width=8, depth=2)
    train.load(tmp_path / "w.safetensors", third)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), third.state_dict().values()))


def test_preact_plain_is_the_preact_resnet_without_its_shortcuts():
    import torch

    torch.manual_seed(0)
    plain = unravel.models.preact_plain_cifar(14, width=4, in_channels=1, dims=1)
    torch.manual_seed(0)
    res = unravel.models.preact_resnet_cifar(14, width=4, in_channels=1, dims=1)
    # the same layers, parameter for parameter (option A shortcuts hold none)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in res.state_dict().items()}
    units = unravel.find_units(plain)
    assert {u.kind for u in units} == {"plain"} and all(u.parts.post is None for u in units)
    assert [u.name for u in units if u.projection] == ["stage2.0", "stage3.0"]
    plain.eval()
    x = torch.randn(3, 4, 40)
    block = plain.stage1[1]
    assert torch.equal(block(x), block.residual(x))  # y = F(x): nothing added, nothing after
    assert torch.equal(res.stage1[1](x), x + res.stage1[1].residual(x))
