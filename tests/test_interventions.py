"""Regression tests of the defects where two features met (issue: core redesign), and of the
public intervention primitive. Each of the first tests failed on the code before the redesign."""

import copy
import pickle
import threading

import pandas as pd
import pytest
import torch
from torch import nn

import unravel
from unravel import attribution, lesion, models, sweeps, train
from unravel.errors import InterventionError, ResultsMismatchError, UnsupportedModelError

from .conftest import randomize_bn, state_hash


def _resmlp(depth=5, seed=0):
    torch.manual_seed(seed)
    net = models.resmlp(6, 3, width=8, depth=depth).double().eval()
    x = torch.randn(7, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    return net, x, y


def _without(net, deleted):
    """An independent reference: the same network with the deleted blocks physically removed
    (resmlp units are pre-activation, so a deleted unit is the identity)."""
    other = copy.deepcopy(net)
    other.blocks = nn.Sequential(*[b for i, b in enumerate(other.blocks) if i not in deleted])
    return other


# --- 1. attribution inside a lesion decomposes the lesioned network ---------------------------


def test_exact_inside_delete_equals_the_network_without_those_units():
    net, x, y = _resmlp()
    ref = attribution.path_length_gradients(_without(net, {1, 3}), x, y)
    outside = attribution.path_length_gradients(net, x, y)
    with lesion.delete(net, [1, 3]):
        inside = attribution.path_length_gradients(net, x, y)
        lesioned_out = net(x)
    assert inside.counts == ref.counts == [1, 3, 3, 1]
    assert torch.allclose(inside.by_length, ref.by_length, rtol=1e-12, atol=1e-15)
    # the parts sum to the lesioned model's gradient, not the unlesioned one's
    assert torch.allclose(inside.total, ref.total, rtol=1e-12, atol=1e-15)
    assert not torch.allclose(inside.total, outside.total)
    assert torch.allclose(lesioned_out, _without(net, {1, 3})(x))


def test_parameter_parts_inside_delete():
    net, x, y = _resmlp(4)
    ref = attribution.path_length_gradients(_without(net, {2}), x, y, wrt="units")
    with lesion.delete(net, 2):
        inside = attribution.path_length_gradients(net, x, y, wrt="units")
    rename = {"blocks.3.": "blocks.2."}
    for name, parts in inside.param_by_length.items():
        if name.startswith("blocks.2."):
            assert torch.count_nonzero(parts) == 0, name  # a deleted unit's parameters get no gradient
            continue
        other = next((name.replace(a, b) for a, b in rename.items() if name.startswith(a)), name)
        assert torch.allclose(parts, ref.param_by_length[other], rtol=1e-12, atol=1e-15), name


def test_sample_and_norm_ratios_inside_delete():
    net, x, y = _resmlp(4)
    with lesion.delete(net, [0]):
        sampled = attribution.path_length_gradients(net, x, y, method="sample", num_samples=50, generator=0)
        ratios = attribution.norm_ratios(net, x, y)
    ref = attribution.path_length_gradients(_without(net, {0}), x, y, method="sample", num_samples=50, generator=0)
    assert sampled.counts == [1, 3, 3, 1]
    # every path of the 3 remaining units is enumerated (counts <= num_samples): exact means
    assert torch.allclose(sampled.per_path_norm, ref.per_path_norm, rtol=1e-10)
    ref_ratios = attribution.norm_ratios(_without(net, {0}), x, y)
    assert ratios.deleted.tolist() == [True, False, False, False]
    assert ratios.ratio.iloc[0] == pytest.approx(1.0)  # a deleted pre-activation unit is the identity
    assert ratios.ratio.iloc[1:].tolist() == pytest.approx(ref_ratios.ratio.tolist(), rel=1e-12)


def test_attribution_inside_reorder_attributes_the_moved_units():
    net, x, y = _resmlp(3)
    swapped = copy.deepcopy(net)
    swapped.blocks = nn.Sequential(swapped.blocks[2], swapped.blocks[1], swapped.blocks[0])
    ref = attribution.path_length_gradients(swapped, x, y, wrt="units")
    with lesion.reorder(net, [2, 1, 0]):
        inside = attribution.path_length_gradients(net, x, y, wrt="units")
    for name, parts in inside.param_by_length.items():
        i = name.split(".")[1] if name.startswith("blocks.") else None
        other = name if i is None else name.replace(f"blocks.{i}.", f"blocks.{2 - int(i)}.", 1)
        assert torch.allclose(parts, ref.param_by_length[other], rtol=1e-12, atol=1e-15), name


def test_a_second_computation_inside_one_is_refused():
    net, x, y = _resmlp(3)

    def record(unit, xin, position, **kw):
        attribution.path_length_gradients(net, x, y)  # a computation inside a computation
        return unit.forward(xin, **kw)

    with pytest.raises(InterventionError, match="already active"):
        with unravel.intervene(net, compute=record):
            net(x)
    assert unravel.active_interventions(net) == 0


def test_sweeps_refuse_to_run_inside_a_lesion():
    net, x, y = _resmlp(3)
    with lesion.delete(net, 0), pytest.raises(InterventionError, match="cannot run inside"):
        sweeps.delete_each(net, (x, y), progress=False)


# --- 2. resuming a sweep with other settings ----------------------------------------------------


def test_resume_with_other_settings_is_refused(tmp_path):
    net, x, y = _resmlp(5)
    path = tmp_path / "r.csv"
    first = sweeps.delete_random(net, (x, y), ks=[1, 2], samples_per_k=2, results=path, progress=False)
    again = sweeps.delete_random(net, (x, y), ks=[1, 2], samples_per_k=2, results=path, progress=False)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ResultsMismatchError, match="samples_per_k=2; this call has samples_per_k=3"):
        sweeps.delete_random(net, (x, y), ks=[1, 2], samples_per_k=3, results=path, progress=False)
    with pytest.raises(ResultsMismatchError, match="seed=0; this call has seed=1"):
        sweeps.delete_random(net, (x, y), ks=[1, 2], samples_per_k=2, seed=1, results=path, progress=False)
    with pytest.raises(ResultsMismatchError, match="data_size=7; this call has data_size=5"):
        sweeps.delete_random(net, (x[:5], y[:5]), ks=[1, 2], samples_per_k=2, results=path, progress=False)
    with pytest.raises(ResultsMismatchError, match=r"units=.*blocks.4.\]; this call has units=.*blocks.5"):
        sweeps.delete_random(models.resmlp(6, 3, width=8, depth=6).double(), (x, y), ks=[1, 2], samples_per_k=2,
                             results=path, progress=False)
    # a file without a fingerprint (an older sweep, or another tool) is not trusted
    (tmp_path / "old.csv").write_text(path.read_text())
    with pytest.raises(ResultsMismatchError, match="no fingerprint"):
        sweeps.delete_random(net, (x, y), ks=[1, 2], samples_per_k=2, results=tmp_path / "old.csv", progress=False)


def test_only_rank_zero_repairs_a_cut_line(tmp_path, monkeypatch):
    import torch.distributed as dist

    from unravel import sweeps

    net, x, y = _resmlp(3)
    path = tmp_path / "r.csv"
    sweeps.delete_each(net, (x, y), results=path, progress=False)
    text = path.read_text()
    path.write_text(text + "delete_each,7,1,2")  # a line cut short by a kill
    cut = path.read_text()
    # this process is rank 1 of 2: it may read the file, never rewrite it
    monkeypatch.setattr(sweeps.run, "process_group_of", lambda group: (None, 1, 2))
    monkeypatch.setattr(dist, "barrier", lambda group=None: None)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, rows, group=None: out.__setitem__(slice(None), [rows, []]))
    sweeps.delete_each(net, (x, y), results=path, progress=False)
    assert path.read_text().startswith(cut)


# --- 3. adapters match exactly --------------------------------------------------------------


class _Overriding(models.ResidualBlock):
    def forward(self, x):
        return 2 * super().forward(x)


class _Inheriting(models.ResidualBlock):
    pass


def test_a_subclass_that_overrides_forward_is_not_its_base_class():
    net = nn.Sequential(_Overriding(nn.Linear(3, 3)), models.ResidualBlock(nn.Linear(3, 3)))
    with pytest.raises(UnsupportedModelError, match="_Overriding.*overrides forward"):
        unravel.find_units(net)
    ok = nn.Sequential(_Inheriting(nn.Linear(3, 3)))
    unit, = unravel.find_units(ok)
    x = torch.randn(2, 3)
    assert torch.equal(unit.forward(x), ok[0](x))
    # the class that needs an adapter can have one, scoped
    with unravel.adapters({_Overriding: lambda m: unravel.UnitParts(residual=lambda x: 2 * m.residual(x),
                                                                   shortcut=lambda x: 2 * x)}):
        units = unravel.find_units(net)
        assert torch.equal(units[0].forward(x), net[0](x))
    with pytest.raises(UnsupportedModelError):
        unravel.find_units(net)


def test_an_instance_forward_is_not_the_class_forward():
    block = models.ResidualBlock(nn.Linear(3, 3))
    block.forward = lambda x: x
    with pytest.raises(UnsupportedModelError, match="the instance overrides forward"):
        unravel.find_units(nn.Sequential(block))


def test_scoped_adapters_restore_the_registry():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(2, 2)

        def forward(self, x):
            return x + self.f(x)

    unravel.register_adapter(Block, lambda m: unravel.UnitParts(residual=m.f))
    try:
        with unravel.adapters({Block: lambda m: unravel.UnitParts(residual=m.f, label="scoped")}):
            assert unravel.find_units(nn.Sequential(Block()))[0].name == "0/scoped"
        assert unravel.find_units(nn.Sequential(Block()))[0].name == "0"
    finally:
        unravel.unregister_adapter(Block)
    with pytest.raises(UnsupportedModelError):
        unravel.find_units(nn.Sequential(Block()))


# --- 4. evaluate restores every module's mode ---------------------------------------------------


def test_evaluate_keeps_a_frozen_batchnorm_frozen():
    net = models.resnet_cifar(8, width=4)
    net.train()
    net.stem[1].eval()  # a frozen BN inside a training model
    modes = [m.training for m in net.modules()]
    train.evaluate(net, (torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)))
    assert [m.training for m in net.modules()] == modes


# --- 5. races, deepcopies and pickles -------------------------------------------------------


def test_deepcopy_and_pickle_inside_a_lesion_hold_the_unlesioned_network():
    net, x, _ = _resmlp(4)
    before = net(x)
    with lesion.delete(net, [0, 1, 2, 3]):
        copied = copy.deepcopy(net)
        pickled = pickle.loads(pickle.dumps(net))
        lesioned = net(x)
    for other in (copied, pickled):
        assert all(type(a) is type(b) for a, b in zip(other.modules(), net.modules()))
        assert not any(hasattr(type(m), "_unravel_original") for m in other.modules())
        assert torch.equal(other(x), before)
        assert state_hash(other) == state_hash(net)
    assert not torch.equal(lesioned, before)
    # the copy is a model like any other: lesions work on it and leave it as it was
    with lesion.delete(copied, 0):
        pass
    assert torch.equal(copied(x), before)


def test_threads_entering_and_leaving_lesions_leave_nothing_routed():
    import sys

    net, x, _ = _resmlp(6)
    before = net(x)
    errors = []

    def work(i):
        try:
            for j in range(60):
                with lesion.delete(net, (i + j) % 6):
                    pass
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert unravel.active_interventions(net) == 0
    assert not any(hasattr(type(m), "_unravel_original") or "forward" in vars(m) for m in net.modules())
    assert torch.equal(net(x), before)


# --- the primitive --------------------------------------------------------------------------


def test_intervene_deletes_places_and_composes():
    net, x, _ = _resmlp(3)
    with unravel.intervene(net, delete=[1]):
        deleted = net(x)
    with lesion.delete(net, 1):
        assert torch.equal(net(x), deleted)
    with unravel.intervene(net, place={0: 2, 2: 0}):
        placed = net(x)
    with lesion.reorder(net, [2, 1, 0]):
        assert torch.equal(net(x), placed)
    # deletions name units: a deleted unit stays deleted where a reorder moves it
    with lesion.reorder(net, [2, 1, 0]), lesion.delete(net, 2):
        both = net(x)
    manual = net.head(net.blocks[0](net.blocks[1](net.stem(x))))
    assert torch.allclose(both, manual)
    with pytest.raises(unravel.errors.ArgumentError, match="delete: unit index 9 is out of range"):
        with unravel.intervene(net, delete=9):
            pass
    with pytest.raises(unravel.errors.ArgumentTypeError, match="compute must be callable"):
        with unravel.intervene(net, compute=3):
            pass
    assert unravel.active_interventions(net) == 0


def test_models_with_bn_restore_bit_exactly_through_all_interventions():
    net = randomize_bn(models.resnet_cifar(8, width=4)).eval()
    x = torch.randn(2, 3, 8, 8)
    h = state_hash(net)
    with lesion.delete(net, 0):
        attribution.path_length_gradients(net, x, torch.zeros(2, dtype=torch.long))
    assert state_hash(net) == h and not any(hasattr(type(m), "_unravel_original") for m in net.modules())
