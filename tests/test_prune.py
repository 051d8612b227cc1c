"""unravel.prune: physical removal equals lesion.delete bit for bit (reference nets, torchvision,
transformers), the model is never changed, transformers round-trip through save_pretrained; the
selection strategies against brute force; the command line."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel.errors import ArgumentError, InterventionError, UnsupportedModelError
from unravel.prune import remove, select

from .conftest import randomize_bn, state_hash


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _check_removed(net, x, units, *, shallower=True):
    """remove(net, units) against lesion.delete(net, units): bit-exact, smaller, net unchanged."""
    net.eval()
    before = state_hash(net)
    n = len(unravel.find_units(net))
    small = remove(net, units)
    with unravel.lesion.delete(net, units):
        want = net(x)
    got = small(x)
    want, got = (unravel._utils.logits_of(t) for t in (want, got))
    assert torch.equal(want, got)
    assert state_hash(net) == before
    assert len(unravel.find_units(net)) == n
    if shallower:
        assert _params(small) < _params(net)
    return small


# ------------------------------------------------------------------------------------------
# remove: reference nets


@pytest.mark.parametrize("units", [[0], [1, 3], [2, 4, 5], [0, 2, 3]])
def test_resnet_cifar_option_a(units):
    net = randomize_bn(unravel.models.resnet_cifar(14, width=4, in_channels=1, dims=1))
    small = _check_removed(net, torch.randn(3, 1, 40), units)
    assert len(unravel.find_units(small)) == 6 - len(units)


@pytest.mark.parametrize("units", [[2], [2, 4], [1, 2, 5]])
def test_resnet_cifar_option_b_keeps_the_projection(units):
    net = randomize_bn(unravel.models.resnet_cifar(14, width=4, shortcut="conv"))
    small = _check_removed(net, torch.randn(2, 3, 16, 16), units)
    assert len(unravel.find_units(small)) == 6 - len(units)
    # the projection of a removed projection unit is still there, its residual branch is not
    kept = [m for m in small.modules() if isinstance(m, unravel.prune.Bypass)]
    assert len(kept) == len(units)
    assert sum(isinstance(b.shortcut, torch.nn.Sequential) for b in kept) == sum(u in (2, 4) for u in units)


def test_preact_identity_units_are_dropped_from_their_sequential():
    net = randomize_bn(unravel.models.preact_resnet_cifar(20, width=4))
    small = _check_removed(net, torch.randn(2, 3, 16, 16), [0, 1, 4, 6])
    assert len(small.stage1) == 1 and len(small.stage2) == 2  # unit 3 (projection) stays a Bypass
    assert [type(m).__name__ for m in small.stage2] == ["ResidualBlock", "ResidualBlock"]
    assert len(unravel.find_units(small)) == 5
    assert [u.name for u in unravel.find_units(small)][:2] == ["stage1.0", "stage2.0"]


def test_preact_projection_unit_becomes_its_shortcut():
    net = randomize_bn(unravel.models.preact_resnet_cifar(14, width=4, shortcut="conv"))
    small = _check_removed(net, torch.randn(2, 3, 16, 16), [2])
    assert isinstance(small.stage2[0], unravel.prune.Bypass) and small.stage2[0].post is None


def test_plain_and_dense_units():
    _check_removed(randomize_bn(unravel.models.plain_cifar(14, width=4)), torch.randn(2, 3, 16, 16), [1, 2, 4])
    small = _check_removed(randomize_bn(unravel.models.densenet_bc(10, growth=4)), torch.randn(2, 3, 16, 16), [0, 2])
    assert isinstance(small.block1[0], unravel.prune.ZeroChannels)


def test_resmlp_every_unit_and_the_original_untouched_in_train_mode():
    net = unravel.models.resmlp(6, 3, width=8, depth=4).train()
    small = remove(net, [0, 1, 2, 3])
    assert net.training and small.training and len(small.blocks) == 0
    x = torch.randn(4, 6)
    net.eval(), small.eval()
    with unravel.lesion.delete(net, [0, 1, 2, 3]):
        assert torch.equal(small(x), net(x))


def test_nothing_to_remove_gives_an_equal_copy():
    net = unravel.models.resmlp(6, 3, width=8, depth=2).eval()
    small = remove(net, [])
    assert small is not net and state_hash(small) == state_hash(net)


def test_example_inputs_check_passes():
    net = unravel.models.resnet_cifar(8, width=4).eval()
    remove(net, [1], example_inputs=torch.randn(1, 3, 16, 16))


def test_unknown_units_and_lesions_are_refused():
    net = unravel.models.resmlp(6, 3, width=8, depth=3)
    with pytest.raises(ArgumentError, match="out of range"):
        remove(net, [3])
    with pytest.raises(ArgumentError, match="no unit named"):
        remove(net, "blocks.9")
    with pytest.raises(TypeError):
        remove("net", [0])
    with unravel.lesion.delete(net, 0), pytest.raises(InterventionError):
        remove(net, [1])


def test_part_of_a_block_is_refused_clearly():
    from .conftest import TinyTransformer

    net = TinyTransformer(norm_first=True).eval()
    with pytest.raises(UnsupportedModelError, match="lesion.delete"):
        remove(net, ["encoder.layers.0/attention"])


def test_whole_transformer_encoder_layer():
    from .conftest import TinyTransformer

    net = TinyTransformer(norm_first=True).eval()
    small = _check_removed(net, torch.randn(2, 5, 3), ["encoder.layers.1/attention", "encoder.layers.1/feedforward"])
    assert len(small.encoder.layers) == 2


# ------------------------------------------------------------------------------------------
# remove: torchvision


@pytest.mark.parametrize("units", [[0], [2], [1, 2, 5, 7]])
def test_torchvision_resnet18(units):
    torchvision = pytest.importorskip("torchvision")
    net = randomize_bn(torchvision.models.resnet18(num_classes=3))
    small = _check_removed(net, torch.randn(1, 3, 32, 32), units)
    assert len(unravel.find_units(small)) == 8 - len(units)


# ------------------------------------------------------------------------------------------
# remove: transformers


def _hf(kind, **extra):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100, n_positions=64, **extra)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=100, max_position_embeddings=64, **extra)
    return transformers.LlamaForCausalLM(cfg).eval()


def _layers(m):
    return m.transformer.h if hasattr(m, "transformer") else m.model.layers


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("units", [[2, 3], [0, 1, 4, 5]])
def test_transformers_whole_layers_dropped_and_saved(kind, units, tmp_path):
    import transformers

    net = _hf(kind)
    x = torch.randint(0, 100, (2, 9))
    small = _check_removed(net, x, units)
    k = len(units) // 2
    assert len(_layers(small)) == 3 - k and small.config.num_hidden_layers == 3 - k
    assert len(unravel.find_units(small)) == 6 - len(units)
    assert net.config.num_hidden_layers == 3
    # cache indices follow the layers' new positions
    idx = [layer.self_attn.layer_idx if kind == "llama" else layer.attn.layer_idx for layer in _layers(small)]
    assert idx == list(range(3 - k))
    small.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(back(x).logits, small(x).logits)
    assert _params(back) == _params(small)
    # with a cache: generation runs on the smaller model
    out = small(x, use_cache=True)
    assert out.past_key_values is not None or getattr(out, "cache", None) is not None


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("units", [[0], [1, 4], [2, 3, 5]])
def test_transformers_sublayers_zeroed_and_reloaded(kind, units, tmp_path):
    net = _hf(kind)
    x = torch.randint(0, 100, (2, 9))
    small = _check_removed(net, x, units)
    zeroed = [m for m in small.modules() if isinstance(m, unravel.prune.ZeroBranch)]
    assert zeroed and not any(p.numel() for z in zeroed for p in z.parameters())
    recorded = small.config.unravel_removed_sublayers
    assert len(recorded) == sum(1 for u in units if not ({2, 3} <= set(units) and u in (2, 3)))
    small.save_pretrained(tmp_path)
    back = unravel.prune.from_pretrained(tmp_path)
    assert torch.equal(back(x).logits, small(x).logits)
    # the pruned model is still a model unravel can lesion
    with unravel.lesion.delete(small, [0]):
        small(x)


@pytest.mark.parametrize("family", ["gpt_neox", "qwen2", "gemma2", "distilbert", "vit", "opt", "falcon"])
def test_transformers_families(family, tmp_path):
    """Whole layers and (where the layer is read from its forward) sublayers, bit-exact, saved and
    reloaded: parallel layers (one unit), per-layer config lists (layer_types), post-LN layers,
    a dropout shared by both sublayers (ViT)."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    sizes = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=48, head_dim=16, vocab_size=100, max_position_embeddings=64, dim=32, n_heads=2,
                 n_layers=3, hidden_dim=48, image_size=16, patch_size=8, num_channels=3, pad_token_id=0,
                 sliding_window=4, layer_types=None, num_labels=3)
    fields = transformers.AutoConfig.for_model(family).to_dict()
    cfg = transformers.AutoConfig.for_model(family, **{k: v for k, v in sizes.items() if k in fields})
    if family == "gemma2":
        cfg.layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    auto = {"distilbert": transformers.AutoModelForMaskedLM,
            "vit": transformers.AutoModelForImageClassification}.get(family, transformers.AutoModelForCausalLM)
    torch.manual_seed(0)
    net = auto.from_config(cfg).eval()
    x = torch.randn(2, 3, 16, 16) if family == "vit" else torch.randint(3, 100, (2, 9))
    units = unravel.find_units(net)
    per = len(units) // 3
    sets = [list(range(per, 2 * per))] + ([[0]] if per == 2 and family not in ("opt", "falcon") else [])
    for chosen in sets:
        small = _check_removed(net, x, chosen)
        small.save_pretrained(tmp_path / str(chosen))
        back = unravel.prune.from_pretrained(tmp_path / str(chosen))
        assert torch.equal(unravel._utils.logits_of(back(x)), unravel._utils.logits_of(small(x)))
    if family == "gemma2":
        small = remove(net, list(range(per, 2 * per)))
        assert small.config.layer_types == ["sliding_attention", "sliding_attention"]
    if family == "opt":  # a hand-written adapter: whole layers only
        with pytest.raises(UnsupportedModelError, match="lesion.delete"):
            remove(net, [0])


def test_torchvision_vit_blocks_keep_their_names():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16,
                                               mlp_dim=32, num_classes=3).eval()
    small = _check_removed(net, torch.randn(2, 3, 16, 16), ["encoder.layers.encoder_layer_1/attention",
                                                             "encoder.layers.encoder_layer_1/mlp"])
    assert list(small.encoder.layers._modules) == ["encoder_layer_0", "encoder_layer_2"]
    with pytest.raises(UnsupportedModelError, match="also holds"):
        remove(net, ["encoder.layers.encoder_layer_1/mlp"])


def test_transformers_hand_written_post_ln_layer_is_refused():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                                  vocab_size=100)
    net = transformers.BertForMaskedLM(cfg).eval()
    with pytest.raises(UnsupportedModelError, match="lesion.delete"):
        remove(net, [0, 1])


# ------------------------------------------------------------------------------------------
# select


def _trained_mlp(depth=4, seed=0):
    torch.manual_seed(seed)
    data = unravel.data.synthetic(240, input_shape=(8,), num_classes=3, seed=seed)
    net = unravel.models.resmlp(8, 3, width=8, depth=depth)
    unravel.train.fit(net, data, epochs=3, optimizer="adam", lr=1e-2, seed=seed, progress=False)
    return net.eval(), data


def _evaluate(net, data, units):
    with unravel.lesion.delete(net, units):
        return unravel.train.evaluate(net, data)


def test_greedy_first_step_is_the_exhaustive_best():
    net, data = _trained_mlp()
    sel = select(net, data, budget=10.0, strategy="greedy", metric="loss", max_units=2)
    losses = [_evaluate(net, data, [i])["loss"] for i in range(4)]
    first = int(np.argmin(losses))
    assert sel.units[0] == first
    assert sel.frame.loss[1] == pytest.approx(losses[first], rel=1e-5)
    # the second step is the best pair that contains the first unit
    pairs = {j: _evaluate(net, data, [first, j])["loss"] for j in range(4) if j != first}
    assert sel.units[1] == min(pairs, key=pairs.get)
    assert sel.frame.step.tolist() == [0, 1, 2]


def test_greedy_stops_at_the_budget():
    net, data = _trained_mlp()
    sel = select(net, data, budget=0.0, strategy="greedy", metric="loss")
    f = sel.frame
    assert list(f.columns[:6]) == ["strategy", "step", "removed", "units_removed", "error", "loss"]
    assert f.within_budget.tolist()[:-1] == [True] * (len(f) - 1)
    assert len(sel.units) == f.units_removed[f.within_budget].max()
    assert (f.loss_increase[f.within_budget] <= 1e-12).all()
    assert f.error[0] == pytest.approx(unravel.train.evaluate(net, data)["error"])


def _states_by_hooks(net, x):
    """Inputs and outputs of each block of a resmlp, by forward hooks."""
    ins, outs = [], []

    def hook(m, a, o):
        ins.append(a[0])
        outs.append(o)

    hooks = [b.register_forward_hook(hook) for b in net.blocks]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return ins, outs


def test_block_influence_against_brute_force():
    net, data = _trained_mlp()
    sel = select(net, data, budget=10.0, strategy="block_influence", max_units=1)
    x, _ = data.test.tensors
    ins, outs = _states_by_hooks(net, x)
    want = [float((1 - F.cosine_similarity(a.double(), b.double(), dim=1)).mean()) for a, b in zip(ins, outs)]
    got = [sel.scores[(i,)] for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert sel.frame.removed[1] == str(int(np.argmin(want)))


def test_block_influence_per_token_on_gpt2():
    net = _hf("gpt2")
    ids = torch.randint(0, 100, (6, 7))
    sel = select(net, (ids, ids), budget=10.0, strategy="block_influence", group="module", next_token=True,
                 max_units=1)
    hidden = net(ids, output_hidden_states=True).hidden_states  # embeddings, then after each layer (ln_f last)
    ins, outs = [], []

    def hook(m, a, o):
        ins.append(a[0])
        outs.append(o)

    hooks = [b.register_forward_hook(hook) for b in net.transformer.h]
    with torch.no_grad():
        net(ids)
    for h in hooks:
        h.remove()
    assert torch.equal(ins[0], hidden[0])
    want = [float((1 - F.cosine_similarity(a.double(), b.double(), dim=-1)).mean()) for a, b in zip(ins, outs)]
    got = [sel.scores[(2 * i, 2 * i + 1)] for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_angular_against_brute_force():
    net, data = _trained_mlp(depth=4)
    sel = select(net, data, budget=10.0, strategy="angular")
    x, _ = data.test.tensors
    ins, outs = _states_by_hooks(net, x)
    states = ins + [outs[-1]]

    def dist(a, b):
        c = F.cosine_similarity(a.double(), b.double(), dim=1).clamp(-1, 1)
        return float((torch.arccos(c) / math.pi).mean())

    for n in range(1, 5):
        d = {l: dist(states[l], states[l + n]) for l in range(5 - n)}
        best = min(d, key=d.get)
        row = sel.frame[sel.frame.step == n].iloc[0]
        assert row.removed == ",".join(map(str, range(best, best + n)))
        assert row.score == pytest.approx(d[best], rel=1e-9)


def test_gradient_share_against_brute_force():
    net, data = _trained_mlp()
    net = net.double()
    x, y = data.test.tensors
    x = x.double()
    sel = select(net, (x, y), budget=10.0, strategy="gradient_share", max_units=1)
    want = []
    for i in range(4):
        h = net.stem(x)
        for b in net.blocks[:i]:
            h = b(h)
        h = h.detach().requires_grad_()
        z = h + net.blocks[i].residual(h)  # identity shortcut, no post
        zl = z.detach().requires_grad_()
        out = zl
        for b in net.blocks[i + 1:]:
            out = b(out)
        L = F.cross_entropy(net.head(out), y, reduction="sum")
        gz, = torch.autograd.grad(L, zl)
        g, = torch.autograd.grad(z, h, gz)  # through shortcut and branch
        skip = gz  # through the shortcut only
        r, s = float((g - skip).norm()), float(skip.norm())
        want.append(r / (r + s))
    got = [sel.scores[(i,)] for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-7)
    assert sel.frame.removed[1] == str(int(np.argmin(want)))


def test_ranking_prefixes_and_the_chosen_set():
    net, data = _trained_mlp()
    sel = select(net, data, budget=0.02, strategy="block_influence")
    f = sel.frame
    order = sorted(sel.scores, key=sel.scores.get)
    assert f.removed.tolist()[1:] == [",".join(map(str, sorted(i for g in order[:k] for i in g))) for k in range(1, 5)]
    within = f[f.within_budget & (f.step > 0)]
    assert len(sel.units) == (within.units_removed.max() if len(within) else 0)
    for _, r in f.iterrows():  # every row is what lesion.delete measures
        units = [int(i) for i in r.removed.split(",")] if r.removed else []
        assert r.error == pytest.approx(_evaluate(net, data, units)["error"])
    small = sel.remove(net)
    assert _params(small) <= _params(net)


def test_select_arguments_are_checked():
    net, data = _trained_mlp(depth=2)
    with pytest.raises(ArgumentError, match="budget"):
        select(net, data, budget=-1)
    with pytest.raises(ArgumentError, match="strategy"):
        select(net, data, budget=0.1, strategy="random")
    with pytest.raises(ArgumentError, match="metric"):
        select(net, data, budget=0.1, metric="accuracy")
    with pytest.raises(ArgumentError):
        select(net, data, budget=0.1, candidates=[7])
    sel = select(net, data, budget=1.0, candidates=[1])
    assert set(sel.units) <= {1}


# ------------------------------------------------------------------------------------------
# the command line


def test_cli_prune_writes_a_smaller_checkpoint_and_a_report(tmp_path, capsys):
    import pandas as pd

    from unravel.cli import main

    out = tmp_path / "pruned"
    args = ["resnet_cifar", "--depth", "14", "--width", "4", "--data", "digits", "--no-progress"]
    assert main(["train", *args, "--epochs", "1", "--save", str(tmp_path / "m.pt")]) == 0
    rc = main(["prune", *args, "--checkpoint", str(tmp_path / "m.pt"), "--budget", "0.05", "--strategy",
               "block_influence", "--max-units", "3", "--out", str(out)])
    assert rc == 0
    frame = pd.read_csv(out / "selection.csv")
    assert frame.step.tolist() == list(range(4)) and "within_budget" in frame
    report = (out / "report.md").read_text()
    assert "block_influence" in report and "| step |" in report
    removed = unravel.train.load(out / "model.pt")["meta"]["removed"]
    data = unravel.study.load_data({"data": "digits"})
    trained = unravel.train.load(tmp_path / "m.pt", unravel.models.build_model("resnet_cifar", data, depth=14,
                                                                                width=4)).eval()
    small = unravel.prune.load(out / "model.pt", unravel.models.build_model("resnet_cifar", data, depth=14, width=4))
    assert len(unravel.find_units(small)) == 6 - len(removed)
    x = data.test.tensors[0][:8]
    with unravel.lesion.delete(trained, removed):
        assert torch.equal(small.eval()(x), trained(x))
    within = frame[frame.within_budget]
    assert len(removed) == within.units_removed.max()
    assert "removed" in capsys.readouterr().out


def test_cli_prune_checks_its_options():
    from unravel.cli import main

    assert main(["prune", "resmlp", "--budget", "-1"]) == 2
    assert main(["prune", "resmlp", "--budget", "0.1", "--strategy", "nope"]) == 2



class _Ordered(nn.Module):
    """The blocks of ``net`` registered in the order ``registered`` (original block numbers) but
    run in their original order: ``find_units`` (without example inputs) lists them as
    registered, the recording walks them as they ran."""

    def __init__(self, net, registered):
        super().__init__()
        self.stem, self.head = net.stem, net.head
        self.b = nn.ModuleList([net.blocks[i] for i in registered])
        self.run = [list(registered).index(k) for k in range(len(registered))]

    def forward(self, x):
        h = self.stem(x)
        for i in self.run:
            h = self.b[i](h)
        return self.head(h)


def test_scores_follow_units_not_positions_when_registration_and_run_orders_differ():
    """gradient_share scores and norm ratios belong to the unit that ran, not to the unit
    registered at that position (timm's Twins registers some blocks after the others)."""
    net, data = _trained_mlp(depth=3)
    net = net.double().eval()
    x, y = data.test.tensors
    x = x.double()
    plain, moved = _Ordered(net, (0, 1, 2)), _Ordered(net, (2, 0, 1))  # moved: b.1 runs first, then b.2, b.0
    want = select(plain, (x, y), budget=10.0, strategy="gradient_share", max_units=1).scores
    got = select(moved, (x, y), budget=10.0, strategy="gradient_share", max_units=1).scores
    assert len(set(want.values())) == 3  # three different scores: a mix-up would show
    for m, p in ((1, 0), (2, 1), (0, 2)):
        assert got[(m,)] == pytest.approx(want[(p,)], rel=1e-12)
    ratios = unravel.attribution.norm_ratios(moved, x, y)
    assert ratios["index"].tolist() == [1, 2, 0] and ratios["unit"].tolist() == [0, 1, 2]
    assert ratios["name"].tolist() == [u.name for u in (unravel.find_units(moved)[i] for i in (1, 2, 0))]
    ref = unravel.attribution.norm_ratios(plain, x, y)
    np.testing.assert_allclose(ratios.ratio, ref.ratio, rtol=1e-12)


TIMM_CASES = {  # name: (create_model kwargs, input size, "blocks": whole blocks, else single units)
    "resnet18": ({}, 32, "units"),
    "efficientnet_b0": ({}, 32, "units"),
    "regnetx_002": ({}, 32, "units"),
    "convnext_atto": ({}, 32, "units"),
    "vit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8}, 32, "blocks"),
    "swin_tiny_patch4_window7_224": ({"img_size": 56, "window_size": 7}, 56, "blocks"),
    "mixer_s16_224": ({"img_size": 32}, 32, "blocks"),
}


@pytest.mark.parametrize("name", list(TIMM_CASES))
def test_timm_remove_equals_the_lesion_bit_for_bit(name):
    """timm models: units of convolutional nets, and whole transformer / mixer blocks (their
    attention and MLP units together), removed physically; the copy computes what the lesion
    does, bit for bit, with fewer parameters. A transformer block's single sublayer is refused
    with a clear error (lesion.delete handles it)."""
    import timm
    kwargs, size, what = TIMM_CASES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    units = unravel.find_units(model)
    groups = {}
    for u in units:
        groups.setdefault(id(u.module), []).append(u.index)
    groups = list(groups.values())
    if what == "blocks":
        pick = groups[1] + groups[-2]
        with pytest.raises(UnsupportedModelError, match="cannot remove .* physically"):
            remove(model, [groups[1][-1]])
    else:
        pick = [u.index for u in units if not u.projection][1::3][:3]
    x = torch.randn(2, 3, size, size)
    before = state_hash(model)
    small = remove(model, pick).eval()
    with torch.no_grad(), unravel.lesion.delete(model, pick):
        want = model(x)
    with torch.no_grad():
        assert torch.equal(small(x), want)
    assert state_hash(model) == before
    assert len(unravel.find_units(small)) == len(units) - len(pick)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
