import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unravel
from unravel import data, lesion, models, sweeps, train

from .conftest import TinyTransformer, run_torchrun, state_hash
from .conftest import randomize_bn as _randomize_bn

ROOT = Path(__file__).resolve().parents[1]


def _family(name):
    torch.manual_seed(0)
    if name == "resnet":
        return _randomize_bn(models.resnet_cifar(14, width=4)).eval(), torch.randn(24, 3, 16, 16), 10
    if name == "resnet18":
        tv = pytest.importorskip("torchvision", reason="torchvision is in the test extra; install unravel[test]")
        return _randomize_bn(tv.models.resnet18(num_classes=10)).eval(), torch.randn(12, 3, 32, 32), 10
    if name == "densenet":
        return _randomize_bn(models.densenet_bc(16, growth=4)).eval(), torch.randn(16, 3, 16, 16), 10
    if name in ("transformer-preln", "transformer-postln"):
        return TinyTransformer(name.endswith("preln")).eval(), torch.randn(20, 5, 3), 4
    if name == "plain":
        return _randomize_bn(models.plain_cifar(14, width=4)).eval(), torch.randn(24, 3, 16, 16), 10
    raise KeyError(name)


FAMILIES = ["resnet", "resnet18", "densenet", "transformer-preln", "transformer-postln", "plain"]


@pytest.mark.parametrize("family", FAMILIES)
def test_delete_restores_model_bit_exactly(family):
    model, x, _ = _family(family)
    model.train(family == "resnet")  # one family in train mode: the flag must survive too
    with torch.no_grad():
        before_out = model(x)
    before = (state_hash(model), [id(m) for m in model.modules()], [m.training for m in model.modules()],
              [type(m) for m in model.modules()])
    n = len(unravel.find_units(model))
    with lesion.delete(model, [0, n - 1]) as m:
        assert m is model
        assert any(hasattr(type(mod), "_unravel_original") for mod in model.modules())  # routed inside
    with pytest.raises(RuntimeError, match="boom"):
        with lesion.delete(model, 1):
            raise RuntimeError("boom")
    if n > 2:
        with pytest.raises(KeyError):
            with lesion.reorder(model, list(range(n))):
                raise KeyError("inside reorder")
    after = (state_hash(model), [id(m) for m in model.modules()], [m.training for m in model.modules()],
             [type(m) for m in model.modules()])
    assert after == before
    assert all("forward" not in vars(mod) for mod in model.modules())
    assert not any(hasattr(type(mod), "_unravel_original") for mod in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before_out)


def _manual_resnet(model, x, deleted):
    """A CIFAR ResNet's forward written out, with deleted units computing post(shortcut(x))."""
    x = model.stem(x)
    for u in unravel.find_units(model):
        x = u.post(u.shortcut(x)) if u.index in deleted else u.module(x)
    return model.fc(model.pool(model.final(x)).flatten(1))


@pytest.mark.parametrize("build", [models.resnet_cifar, models.preact_resnet_cifar, models.plain_cifar])
def test_delete_equals_post_shortcut_by_hand(build):
    model = _randomize_bn(build(14, width=4)).eval()
    x = torch.randn(4, 3, 16, 16)
    units = unravel.find_units(model)
    for deleted in ([2], [0, 4], [2, 3, 5]):  # units 2 and 4 are projection units
        with torch.no_grad(), lesion.delete(model, deleted):
            got = model(x)
        assert torch.allclose(got, _manual_resnet(model, x, set(deleted)), atol=1e-6)
    # a projection unit keeps its projection: its bypass changes the shape
    proj = units[2]
    assert proj.projection and proj.bypass(torch.randn(1, 4, 16, 16)).shape == (1, 8, 8, 8)


def test_delete_torchvision_by_hand():
    tv = pytest.importorskip("torchvision", reason="torchvision is in the test extra; install unravel[test]")
    model = _randomize_bn(tv.models.resnet18(num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    units = unravel.find_units(model)
    with torch.no_grad():
        with lesion.delete(model, ["layer1.1", "layer3.0"]):
            got = model(x)
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for u in units:
            h = torch.relu(u.shortcut(h)) if u.name in ("layer1.1", "layer3.0") else u.module(h)
        want = model.fc(torch.flatten(model.avgpool(h), 1))
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_delete_transformer_units(norm_first):
    model = TinyTransformer(norm_first).eval()
    x = torch.randn(2, 5, 3)
    layer = model.encoder.layers[1]
    with torch.no_grad(), lesion.delete(model, ["encoder.layers.1/attention"]):
        got = model.encoder(model.embed(x))
    h = model.embed(x)
    with torch.no_grad():
        h = model.encoder.layers[0](h)
        h = h if norm_first else layer.norm1(h)  # deleted attention: post(shortcut(h))
        units = unravel.find_units(model)
        h = units[3].forward(h)  # the layer's feed-forward unit
        h = model.encoder.layers[2](h)
    assert torch.allclose(got, h, atol=1e-5)


def test_lesions_nest_and_duplicates_count_once():
    model = _randomize_bn(models.resnet_cifar(14, width=4)).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        with lesion.delete(model, [1, 3]):
            union = model(x)
        with lesion.delete(model, 1):
            with lesion.delete(model, "stage2.1"):
                nested = model(x)
            only_one = model(x)
        with lesion.delete(model, [1, 1, "stage1.1", unravel.find_units(model)[1]]):
            dup = model(x)
        with lesion.delete(model, [1]):
            single = model(x)
    assert torch.equal(union, nested) and torch.equal(only_one, single) and torch.equal(dup, single)


def test_reorder_by_hand_and_with_deletion():
    model = _randomize_bn(models.resnet_cifar(20, width=4)).eval()
    units = unravel.find_units(model)
    x = torch.randn(3, 3, 16, 16)
    order = list(range(9))
    order[0], order[2] = 2, 0
    order[4], order[5] = 5, 4
    with torch.no_grad():
        with lesion.reorder(model, order, example_inputs=x):
            got = model(x)
            with lesion.delete(model, [0]):  # deletes unit 0, which now runs at position 2
                got_del = model(x)
        h = model.stem(x)
        for p in range(9):
            h = units[order[p]].module(h)
        want = model.fc(model.pool(h).flatten(1))
        h = model.stem(x)
        for p in range(9):
            u = units[order[p]]
            h = u.bypass(h) if u.index == 0 else u.module(h)
        want_del = model.fc(model.pool(h).flatten(1))
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got_del, want_del, atol=1e-6)


def test_reorder_validation_names_units_and_reasons():
    model = models.resnet_cifar(20, width=4)
    with pytest.raises(ValueError, match="permutation of 0..8"):
        with lesion.reorder(model, [0, 1, 2]):
            pass
    order = list(range(9))
    order[2], order[3] = 3, 2
    with pytest.raises(ValueError, match=r"unit 3 \(stage2.0\): it has a projection shortcut"):
        with lesion.reorder(model, order):
            pass
    order = list(range(9))
    order[1], order[4] = 4, 1  # identity units of different stages: shapes differ
    with pytest.raises(ValueError, match=r"unit 4 \(stage2.1\) takes inputs of shape \(8, 8, 8\)"):
        with lesion.reorder(model, order, example_inputs=torch.randn(1, 3, 16, 16)):
            pass
    with pytest.raises(ValueError, match="cannot run at position 1"):  # caught at run time without shapes
        with torch.no_grad(), lesion.reorder(model.eval(), order):
            model(torch.randn(1, 3, 16, 16))
    assert all("forward" not in vars(m) for m in model.modules())
    plain = models.plain_cifar(14, width=4)
    with pytest.raises(ValueError, match="it is a plain unit"):
        with lesion.reorder(plain, [1, 0, 2, 3, 4, 5]):
            pass


def test_bad_unit_names_list_valid_ones():
    model = models.resnet_cifar(14, width=4)
    with pytest.raises(ValueError, match=r"unit index 6 is out of range: the model has 6 units \(indices 0..5; names stage1.0"):
        with lesion.delete(model, 6):
            pass
    with pytest.raises(ValueError, match="no unit named 'layer1.0'.*stage3.1"):
        with lesion.delete(model, "layer1.0"):
            pass
    other = unravel.find_units(models.resnet_cifar(14, width=4))[0]
    with pytest.raises(ValueError, match="not a unit of this model"):
        with lesion.delete(model, other):
            pass
    with pytest.raises(ValueError, match="empty"):
        sweeps.delete_each(model, (torch.randn(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"each k in ks=7 must be an integer in 1..6"):
        sweeps.delete_random(model, (torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)), ks=[7])


STUDIES = {
    "delete_each": lambda m, d, **kw: sweeps.delete_each(m, d, **kw),
    "delete_random": lambda m, d, **kw: sweeps.delete_random(m, d, ks=[1, 2, 3], samples_per_k=4, seed=1, **kw),
    "reorder_random": lambda m, d, **kw: sweeps.reorder_random(m, d, ks=[1, 2], samples_per_k=3, seed=2, **kw),
}


@pytest.mark.parametrize("family", ["resnet", "resnet18", "transformer-preln", "transformer-postln", "densenet", "plain"])
@pytest.mark.parametrize("study", list(STUDIES))
def test_engine_equals_naive_loop(family, study):
    model, x, classes = _family(family)
    if study == "reorder_random" and family in ("densenet", "plain"):
        with pytest.raises(ValueError, match="no two units"):
            STUDIES[study](model, (x, torch.zeros(len(x), dtype=torch.long)), progress=False)
        return
    y = torch.randint(0, classes, (len(x),))
    before = state_hash(model)
    # small batches and a small max_rows force several batches and stacked chunks
    fast = STUDIES[study](model, (x, y), batch_size=8, max_rows=16, progress=False)
    naive = STUDIES[study](model, (x, y), batch_size=8, progress=False, method="naive")
    assert state_hash(model) == before and not model.training
    pd.testing.assert_frame_equal(fast.drop(columns=["loss"]), naive.drop(columns=["loss"]))
    assert (fast.loss - naive.loss).abs().max() < 1e-5
    assert len(fast) == 1 + {"delete_each": len(unravel.find_units(model)), "delete_random": 12,
                             "reorder_random": 6}[study]
    assert (fast.variant == -1).sum() == 1 and fast.loc[fast.variant == -1, "k"].item() == 0


def test_studies_restore_train_mode_and_columns():
    model = models.resnet_cifar(8, width=4).train()
    before = state_hash(model)
    df = sweeps.delete_random(model, (torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), ks=2,
                              samples_per_k=2, progress=False)
    assert model.training and state_hash(model) == before
    assert {"study", "units", "k", "error", "loss", "samples", "seed"} <= set(df.columns)
    assert df.samples.unique().tolist() == [8] and df.seed.unique().tolist() == [0]
    again = sweeps.delete_random(model, (torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), ks=2,
                                 samples_per_k=2, progress=False)
    assert df.units.tolist() == again.units.tolist()  # same seed, same draws


def test_delete_each_marks_projection_units():
    model = models.resnet_cifar(14, width=4).eval()
    df = sweeps.delete_each(model, (torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)), progress=False)
    assert df[df.projection].names.tolist() == ["stage2.0", "stage3.0"]


def test_study_inside_lesion_is_refused():
    model = models.resnet_cifar(8, width=4)
    with lesion.delete(model, 0):
        with pytest.raises(ValueError, match="inside delete"):
            sweeps.delete_each(model, (torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)), progress=False)


def test_residual_vs_plain_contrast_on_mnist1d():
    """Veit et al. Fig. 3 on real data: one deletion barely hurts a residual net, wrecks a plain one."""
    d = data.mnist1d()
    increase = {}
    for name, build in (("residual", models.resmlp), ("plain", models.plain_mlp)):
        torch.manual_seed(0)
        net = build(40, 10, width=48, depth=6)
        train.fit(net, d, epochs=4, optimizer="adam", progress=False)
        df = sweeps.delete_each(net, d, progress=False)
        base = df.loc[df.variant == -1, "error"].item()
        increase[name] = df.loc[df.variant >= 0, "error"].mean() - base
    assert increase["residual"] < 0.5 * increase["plain"], increase


_SWEEP = textwrap.dedent("""
    import sys, torch, unravel
    from unravel import lesion, models, sweeps

    def sweep(results):
        torch.manual_seed(0)
        model = models.resnet_cifar(20, width=16).eval()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        return sweeps.delete_random(model, (x, y), ks=[1, 2, 3, 4, 5, 6], samples_per_k=4, seed=3, results=results,
                                    batch_size=128, max_rows=128, progress=False)

    if __name__ == "__main__":
        sweep(sys.argv[1])
""")


def test_resume_after_kill(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(_SWEEP)
    results = tmp_path / "results.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(results)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 4:  # header, baseline, two variants
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = results.read_text()
    assert 3 <= partial.count("\n") - 1 < 25
    namespace = {}
    exec(compile(_SWEEP, "sweep", "exec"), namespace)
    resumed = namespace["sweep"](results)
    text = results.read_text()
    assert text.startswith(partial[: partial.rfind("\n") + 1])  # what was written is kept, not redone
    lines = text.splitlines()
    assert len(lines) == 1 + 25 and len(set(lines)) == len(lines)  # every variant once
    fresh = namespace["sweep"](None)
    pd.testing.assert_frame_equal(resumed.drop(columns="loss"), fresh.drop(columns="loss"))
    assert (resumed.loss - fresh.loss).abs().max() < 1e-9  # written as text: decimal round trip


def test_results_file_of_another_study_is_refused(tmp_path):
    model = models.resnet_cifar(8, width=4)
    d = (torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    path = tmp_path / "r.csv"
    first = sweeps.delete_each(model, d, results=path, progress=False)
    again = sweeps.delete_each(model, d, results=path, progress=False)  # everything skipped
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ValueError, match="study=.delete_each.; this call has study=.delete_random."):
        sweeps.delete_random(model, d, ks=[1], results=path, progress=False)


_DIST = textwrap.dedent("""
    import sys, torch, torch.distributed as dist, unravel
    from unravel import lesion, models, sweeps
    torch.manual_seed(0)
    model = models.resnet_cifar(14, width=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    df = sweeps.delete_random(model, (x, y), ks=[1, 2, 3], samples_per_k=3, seed=5, batch_size=16, progress=False)
    assert dist.is_initialized() and dist.get_world_size() == 2
    df.to_csv(sys.argv[1] + f".rank{dist.get_rank()}", index=False)
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_process_torchrun_equals_single_process(tmp_path):
    run_torchrun(_DIST, tmp_path)
    torch.manual_seed(0)
    model = models.resnet_cifar(14, width=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    single = sweeps.delete_random(model, (x, y), ks=[1, 2, 3], samples_per_k=3, seed=5, batch_size=16, progress=False)
    for rank in (0, 1):  # every rank returns the whole frame
        got = pd.read_csv(tmp_path / f"out.csv.rank{rank}", keep_default_na=False)
        assert got.variant.tolist() == single.variant.tolist()
        assert got.units.astype(str).tolist() == single.units.tolist()
        assert (got.error - single.error).abs().max() < 1e-9 and (got.loss - single.loss).abs().max() < 1e-5


class _TokenTagger(nn.Module):
    """A tiny sequence model returning a dict with per-token logits (like a ModelOutput)."""

    def __init__(self, vocab=11, d=8, layers=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*[models.ResidualBlock(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d)))
                                      for _ in range(layers)])
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        return {"logits": self.head(self.blocks(self.embed(ids)))}


@pytest.mark.parametrize("next_token", [False, True])
def test_sequence_outputs_are_scored_per_token(next_token):
    torch.manual_seed(0)
    net = _TokenTagger().eval()
    ids = torch.randint(0, 11, (6, 9))
    targets = ids.clone()
    targets[0, :3] = -100  # ignored tokens
    fast = sweeps.delete_each(net, (ids, targets), batch_size=4, progress=False, next_token=next_token)
    naive = sweeps.delete_each(net, (ids, targets), batch_size=4, progress=False, next_token=next_token,
                               method="naive")
    assert (fast.error - naive.error).abs().max() < 1e-12 and (fast.loss - naive.loss).abs().max() < 1e-5
    assert set(fast.per) == {"token"} and fast.error.between(0, 1).all()
    # the baseline against a direct per-token count
    with torch.no_grad():
        logits = net(ids)["logits"]
    t = targets
    if next_token:
        logits, t = logits[:, :-1], t[:, 1:]
    keep = t != -100
    want_error = float((logits.argmax(-1)[keep] != t[keep]).float().mean())
    want_loss = float(F.cross_entropy(logits[keep], t[keep]))
    base = fast[fast.variant == -1].iloc[0]
    assert base.samples == int(keep.sum())
    assert base.error == pytest.approx(want_error) and base.loss == pytest.approx(want_loss, rel=1e-5)


# ------------------------------------------------------------------------------------------
# Batch-norm recalibration of a lesioned network


class _Zero(nn.Module):
    """A residual branch that adds nothing: the naive lesioned unit computes post(shortcut(x))."""

    def __init__(self, block):
        super().__init__()
        self.shortcut, self.dense = block.shortcut, block.kind == "dense"
        self.out_channels = getattr(block.residual, "out_channels", None)

    def forward(self, x):
        if self.dense:  # a DenseNet layer adds zero channels
            return x.new_zeros((x.shape[0], self.out_channels) + tuple(x.shape[2:]))
        return torch.zeros_like(x if self.shortcut is None else self.shortcut(x))


def _naive_lesioned_copy(model, deleted):
    import copy

    naive = copy.deepcopy(model)
    for u in unravel.find_units(naive):
        if u.index in deleted:
            u.module.residual = _Zero(u.module)
    return naive


@pytest.mark.parametrize("build", [models.resnet_cifar, models.densenet_bc])
def test_recalibrated_statistics_equal_one_pass_over_the_data(build):
    """After recalibration inside a lesion, every BN layer's running mean and variance equal the
    mean over batches of its input's batch mean and unbiased variance, computed in one pass over
    the data with the subnetwork built by hand (float64); on exit every bit is back."""
    torch.manual_seed(0)
    model = _randomize_bn(build(14, width=4) if build is models.resnet_cifar else build(16, growth=4)).double()
    x = torch.randn(96, 3, 8, 8, dtype=torch.float64)
    y = torch.zeros(96, dtype=torch.long)
    deleted = {1, 3}
    before = state_hash(model)
    old = {name: m.running_mean.clone() for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    # the reference: the naive lesioned copy in train mode, each BN layer's inputs per batch
    naive = _naive_lesioned_copy(model, deleted).train()
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: seen.setdefault(name, []).append(a[0].detach()))
             for name, m in naive.named_modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for start in range(0, 96, 32):
            naive(x[start:start + 32])
    for h in hooks:
        h.remove()
    model.eval()
    with lesion.delete(model, sorted(deleted)), lesion.recalibrated_bn(model, (x, y), batch_size=32):
        assert not model.training  # modes are restored
        stats = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        assert set(seen) < set(stats) and len(seen) > 4
        for name, m in stats.items():
            if name not in seen:  # in a deleted unit's branch: it did not run and keeps its statistics
                assert torch.equal(m.running_mean, old[name]) and int(m.num_batches_tracked) == 0
                continue
            batches = seen[name]
            mean = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
            var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)
            assert torch.allclose(m.running_mean, mean, rtol=1e-10, atol=1e-12), name
            assert torch.allclose(m.running_var, var, rtol=1e-10, atol=1e-12), name
            assert int(m.num_batches_tracked) == 3 and m.momentum == 0.1
        recal = model(x[:8])
    assert state_hash(model) == before
    with torch.no_grad(), lesion.delete(model, sorted(deleted)):
        assert not torch.allclose(model(x[:8]), recal)  # the old statistics give another network


def test_recalibrate_max_examples_and_bad_input():
    torch.manual_seed(0)
    model = models.resnet_cifar(8, width=4, dims=1, in_channels=1)
    x = torch.randn(50, 1, 12)
    data = (x, torch.zeros(50, dtype=torch.long))
    lesion.recalibrate_bn(model, data, batch_size=64, max_examples=20)
    stem_bn = model.stem[1]
    with torch.no_grad():
        inp = model.stem[0](x[:20])
    assert torch.allclose(stem_bn.running_mean, inp.mean((0, 2)), atol=1e-6)
    assert int(stem_bn.num_batches_tracked) == 1
    with pytest.raises(ValueError, match="max_examples"):
        lesion.recalibrate_bn(model, data, max_examples=0)
    with pytest.raises(ValueError, match="empty"):
        lesion.recalibrate_bn(model, (x[:0], torch.zeros(0, dtype=torch.long)))


@pytest.mark.parametrize("family", ["resnet", "transformer-preln", "densenet", "plain"])
def test_engine_resuming_from_a_lesioned_base_equals_naive_loop(family):
    """A greedy step's sweep (every variant deletes the chosen ``base`` units and one more)
    resumes from the states of the network without ``base``: the tallies equal the naive loop's,
    and the base is checked."""
    from unravel.sweeps.engine import Engine, Tally, Variant, make_scorer
    from unravel.train import as_loader

    model, x, classes = _family(family)
    y = torch.randint(0, classes, (len(x),))
    n = len(unravel.find_units(model))
    engine = Engine(model, unravel.find_units(model), as_loader((x, y), 8), torch.device("cpu"),
                    make_scorer(torch.nn.functional.cross_entropy), max_rows=16)
    for base in ([0], [n - 1], [1, n - 2]):
        variants = [Variant(id=c, k=len(base) + 1, deleted=tuple(sorted(set(base) | {c})))
                    for c in range(n) if c not in base]
        with torch.no_grad():
            fast = engine.run(variants, None, base)
            naive = engine.run_naive(variants, None)
        for v in variants:
            f, g = fast[v.id].metrics(), naive[v.id].metrics()
            assert f["error"] == g["error"] and abs(f["loss"] - g["loss"]) < 1e-5, (base, v.deleted)
    with pytest.raises(ValueError, match="every variant deletes the base units"):
        engine.run([Variant(id=0, k=1, deleted=(1,))], None, [0])
    with pytest.raises(ValueError, match="baseline tally"):
        engine.run([Variant(id=0, k=1, deleted=(0,))], Tally(), [0])
