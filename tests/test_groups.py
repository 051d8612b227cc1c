"""Groups of units (a transformer layer's sublayers, a CNN stage, groups of one's own) in the
sweeps and the attribution, and the built-in next-token loss: against the naive loop, autograd's
gradient and brute-force enumeration."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unravel
from unravel import attribution, sweeps
from unravel.errors import ArgumentError
from unravel.losses import next_token_loss
from unravel.units import unit_groups

from .conftest import autograd_input_grad, state_hash


@pytest.fixture
def float64_softmax(monkeypatch):
    """Eager attention takes its softmax in float32; in float64 here, so that exactness is
    checked at float64 rounding."""
    softmax = torch.nn.functional.softmax

    def softmax64(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=None if x.dtype == torch.float64 else dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", softmax64)


def _lm(depth=3, vocab=11):
    torch.manual_seed(0)
    model = unravel.lm.gpt2(num_classes=vocab, context=8, depth=depth, width=8, heads=2).double().eval()
    ids = torch.randint(0, vocab, (6, 8), generator=torch.Generator().manual_seed(1))
    return model, ids


def _naive_row(model, ids, deleted=(), order=None):
    """Loss per token and error of the model with ``deleted`` units (or the units in ``order``),
    by a plain loop: unravel.lesion, one full forward, the next-token shift by hand."""
    lesion = unravel.lesion.reorder(model, order) if order is not None else unravel.lesion.delete(model, list(deleted))
    with torch.no_grad(), lesion:
        logits = model(ids).logits
    logits, y = logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(-1) != y).double().mean())


def _check_rows(frame, model, ids):
    for row in frame.itertuples():
        if row.variant == -1:
            loss, error = _naive_row(model, ids)
        elif row.order:
            loss, error = _naive_row(model, ids, order=[int(i) for i in row.order.split(",")])
        else:
            loss, error = _naive_row(model, ids, deleted=[int(i) for i in row.units.split(",")])
        assert row.error == error and np.isclose(row.loss, loss, rtol=1e-12, atol=0), row


# ------------------------------------------------------------------------------------------
# unit_groups


def test_unit_groups_layer_stage_and_own():
    model, _ = _lm()
    units = unravel.find_units(model)
    assert unit_groups(units) == [(i,) for i in range(6)]
    assert unit_groups(units, "layer") == [(0, 1), (2, 3), (4, 5)]
    assert unit_groups(units, "stage") == [tuple(range(6))]  # identity shortcuts throughout
    assert unit_groups(units, [["transformer.h.1/attention", "transformer.h.1/mlp"]]) == [(0,), (1,), (2, 3), (4,), (5,)]
    cnn = unravel.find_units(unravel.models.resnet_cifar(20))
    # a new stage at each projection unit (the first unit of stages 2 and 3)
    assert [len(g) for g in unit_groups(cnn, "stage")] == [3, 3, 3]
    assert [g[0] for g in unit_groups(cnn, "stage")] == [0] + [u.index for u in cnn if u.projection]


@pytest.mark.parametrize("bad, match", [("block", "not a grouping"), ([[0, 2]], "one after another"),
                                        ([[0, 1], [1, 2]], "must not overlap"), ([[]], "empty"),
                                        ([[99]], "out of range"), (3.5, "not a grouping")])
def test_unit_groups_refuses(bad, match):
    units = unravel.find_units(_lm()[0])
    with pytest.raises(ArgumentError, match=match):
        unit_groups(units, bad)


# ------------------------------------------------------------------------------------------
# Sweeps: group= against the naive loop


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_delete_each_layer_equals_the_naive_loop(method):
    model, ids = _lm()
    before = state_hash(model)
    frame = sweeps.delete_each(model, (ids, ids), batch_size=4, progress=False, loss="next_token", group="layer",
                               method=method)
    assert frame.units.tolist() == ["", "0,1", "2,3", "4,5"] and frame.k.tolist() == [0, 1, 1, 1]
    assert frame.names.tolist()[1] == "transformer.h.0/attention,transformer.h.0/mlp"
    assert (frame.per == "token").all() and (frame.samples == 6 * 7).all()
    _check_rows(frame, model, ids)
    assert state_hash(model) == before


def test_delete_random_layers_equals_the_naive_loop():
    model, ids = _lm(depth=4)
    frame = sweeps.delete_random(model, (ids, ids), ks=[1, 2, 3], samples_per_k=3, seed=2, batch_size=4,
                                 progress=False, loss="next_token", group="layer")
    groups = unit_groups(unravel.find_units(model), "layer")
    for row in frame[frame.variant >= 0].itertuples():
        deleted = tuple(int(i) for i in row.units.split(","))
        chosen = [g for g in groups if set(g) <= set(deleted)]
        assert len(chosen) == row.k and sum(map(len, chosen)) == len(deleted)  # whole layers, k of them
    _check_rows(frame, model, ids)
    with pytest.raises(ArgumentError, match=r"1\.\.4"):
        sweeps.delete_random(model, (ids, ids), ks=[5], progress=False, loss="next_token", group="layer")


def test_delete_random_unit_group_draws_as_before():
    """group='unit' (the default) draws the same units for a seed as the sweep drew before
    groups existed: positions in the candidates as given, then sorted."""
    model, ids = _lm()
    kw = dict(ks=[2, 3], samples_per_k=3, seed=4, progress=False, loss="next_token", candidates=[5, 1, 3, 0])
    frame = sweeps.delete_random(model, (ids, ids), **kw)
    rng, pool, want = np.random.default_rng(4), [5, 1, 3, 0], [""]
    for k in (2, 3):
        for _ in range(3):
            want.append(",".join(map(str, sorted(int(i) for i in rng.choice(pool, size=k, replace=False)))))
    assert frame.units.tolist() == want


def test_delete_random_stage_candidates():
    torch.manual_seed(0)
    net = unravel.models.resnet_cifar(20, width=4).eval()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    units = unravel.find_units(net)
    stages = unit_groups(units, "stage")
    frame = sweeps.delete_random(net, (x, y), ks=[1], samples_per_k=4, progress=False, group="stage",
                                 candidates=list(stages[1]) + list(stages[2]))
    assert set(frame.units[1:]) <= {",".join(map(str, g)) for g in stages[1:]}
    naive = sweeps.delete_random(net, (x, y), ks=[1], samples_per_k=4, progress=False, group="stage",
                                 candidates=list(stages[1]) + list(stages[2]), method="naive")
    assert frame.units.tolist() == naive.units.tolist()
    assert np.allclose(frame.loss, naive.loss, rtol=1e-5) and (frame.error == naive.error).all()


def test_reorder_random_moves_whole_layers():
    model, ids = _lm(depth=4)
    frame = sweeps.reorder_random(model, (ids, ids), ks=[1, 2], samples_per_k=3, seed=0, batch_size=4,
                                  progress=False, loss="next_token", group="layer")
    moved_any = False
    for row in frame[frame.variant >= 0].itertuples():
        order = [int(i) for i in row.order.split(",")]
        for layer in range(4):  # each layer's positions hold one layer's units, in their order
            here = order[2 * layer:2 * layer + 2]
            assert here[0] % 2 == 0 and here[1] == here[0] + 1
            moved_any |= here[0] != 2 * layer
    assert moved_any
    _check_rows(frame, model, ids)


# ------------------------------------------------------------------------------------------
# The built-in next-token loss


def test_next_token_loss_equals_the_hand_written_one():
    model, ids = _lm()

    def lm_loss(logits, targets, reduction="mean"):  # what users wrote before: shift by hand
        return F.cross_entropy(logits, targets, reduction=reduction)

    built = sweeps.delete_each(model, (ids, ids), progress=False, loss="next_token")
    by_hand = sweeps.delete_each(model, (ids, ids), progress=False, loss=lm_loss, next_token=True)
    assert built.drop(columns="loss").equals(by_hand.drop(columns="loss"))
    assert np.allclose(built.loss, by_hand.loss, rtol=1e-14)
    runs = sweeps.run_variants("mine", model, (ids, ids), [sweeps.Variant(id=0, k=2, deleted=(0, 3))],
                               progress=False, loss="next_token")
    assert np.isclose(runs.loss[1], _naive_row(model, ids, deleted=(0, 3))[0], rtol=1e-12)
    with pytest.raises(ArgumentError, match="not a loss"):
        sweeps.delete_each(model, (ids, ids), progress=False, loss="next-token")


def test_next_token_attribution_equals_a_hand_written_loss(float64_softmax):
    model, ids = _lm()
    res = attribution.path_length_gradients(model, ids, loss="next_token")
    want = attribution.path_length_gradients(model, ids, loss=lambda out, _: next_token_loss(out, ids))
    assert torch.allclose(res.by_length, want.by_length, rtol=1e-12, atol=1e-18)
    g = autograd_input_grad(model, ids, ids, next_token_loss)
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    # split over examples, weighted by their scored tokens (some ignored), the same parts
    targets = ids.clone()
    targets[0, 3:] = -100
    targets[2, 1:] = -100  # nothing of this example is scored
    whole = attribution.path_length_gradients(model, ids, targets, loss="next_token")
    split = attribution.path_length_gradients(model, ids, targets, loss="next_token", batch_size=2)
    assert torch.allclose(split.by_length, whole.by_length, rtol=1e-10, atol=1e-16)
    assert np.isclose(split.loss, whole.loss, rtol=1e-12)
    g = autograd_input_grad(model, ids, targets, next_token_loss)
    assert torch.allclose(whole.by_length.sum(0), g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    with pytest.raises(ArgumentError, match="no token to score"):
        attribution.path_length_gradients(model, ids, torch.full_like(ids, -100), loss="next_token")


# ------------------------------------------------------------------------------------------
# Attribution: a path's length counted in groups


def _brute_force_groups(model, x, loss, groups):
    """Every path (subset of units) separately, its gradient at the first unit's input summed by
    the number of groups it takes a residual branch in."""
    units = unravel.find_units(model)
    sums = {}
    for choice in itertools.product([False, True], repeat=len(units)):
        taken = {i for i, t in enumerate(choice) if t}
        leaf = {}

        def compute(unit, xin, position, **kw):
            p = position.index
            if p == 0:
                xin = leaf.setdefault(0, xin.detach().requires_grad_())
            r, s = unit.residual(xin, **kw), unit.shortcut(xin)
            return unit.post(s.detach() + r if p in taken else s + r.detach())

        with unravel.intervene(model, compute=compute):
            value = loss(model(x))
        grad, = torch.autograd.grad(value, leaf[0])
        k = sum(1 for g in groups if taken & set(g))
        sums[k] = sums.get(k, 0) + grad
    return sums


@pytest.mark.parametrize("group", ["layer", [[0, 1, 2], [3]], "stage"])
def test_group_attribution_equals_brute_force(group, float64_softmax):
    model, ids = _lm(depth=2)
    ids = ids[:2]
    groups = unit_groups(unravel.find_units(model), group)
    res = attribution.path_length_gradients(model, ids, loss="next_token", group=group)
    sums = _brute_force_groups(model, ids, lambda out: next_token_loss(out, ids), groups)
    assert res.lengths.tolist() == list(range(len(groups) + 1))
    for k in range(len(groups) + 1):
        want = sums.get(k, torch.zeros_like(res.by_length[0]))
        assert torch.allclose(res.by_length[k], want, rtol=1e-9, atol=1e-13 * float(want.abs().max() + 1)), k
    # counts: the subsets of units with k groups touched
    counts = [0] * (len(groups) + 1)
    for choice in itertools.product([False, True], repeat=4):
        counts[sum(1 for g in groups if any(choice[i] for i in g))] += 1
    assert res.counts == counts


def test_group_attribution_conserves_and_cuts_at_max_length(float64_softmax):
    model, ids = _lm(depth=3)
    g = autograd_input_grad(model, ids, ids, next_token_loss)
    res = attribution.path_length_gradients(model, ids, loss="next_token", group="layer")
    assert res.counts == [1, 9, 27, 27]
    assert torch.allclose(res.by_length.sum(0), g, rtol=1e-10, atol=1e-13 * float(g.abs().max()))
    cut = attribution.path_length_gradients(model, ids, loss="next_token", group="layer", max_length=1)
    assert torch.allclose(cut.by_length, res.by_length[:2], rtol=1e-10, atol=1e-16)
    assert np.isclose(cut.dropped_norm, float(res.by_length[2:].sum(0).norm()), rtol=1e-9)
    # a lesion inside: the deleted layer takes only its shortcut; still the lesioned gradient
    with unravel.lesion.delete(model, [2, 3]):
        lesioned = attribution.path_length_gradients(model, ids, loss="next_token", group="layer")
        g2 = autograd_input_grad(model, ids, ids, next_token_loss)
    assert lesioned.counts == [1, 6, 9]
    assert torch.allclose(lesioned.by_length.sum(0), g2, rtol=1e-10, atol=1e-13 * float(g2.abs().max()))


def test_group_attribution_of_parameters_equals_brute_force():
    """wrt='units': a weight in unit 2's residual branch; its paths take that branch, so their
    length is the number of groups touched among units 2.. (unit 2's own group counted)."""
    torch.manual_seed(0)
    model = unravel.models.resmlp(6, 3, width=6, depth=5).double().eval()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    groups = [[0, 1], [2, 3], [4]]
    res = attribution.path_length_gradients(model, x, y, wrt="units", group=groups)
    target = "blocks.2.residual.1.weight"
    weight = dict(model.named_parameters())[target]
    want = torch.zeros((len(groups) + 1,) + tuple(weight.shape), dtype=torch.float64)
    for above in itertools.product([False, True], repeat=2):  # units 3 and 4
        taken = {2} | {3 + i for i, t in enumerate(above) if t}

        def compute(unit, xin, position, **kw):
            p = position.index
            if p < 2:
                return unit.forward(xin, **kw)
            r, s = unit.residual(xin, **kw), unit.shortcut(xin)
            return unit.post(s.detach() + r if p in taken else s + r.detach())

        with unravel.intervene(model, compute=compute):
            value = F.cross_entropy(model(x), y)
        grad, = torch.autograd.grad(value, weight)
        want[sum(1 for g in groups if taken & set(g))] += grad
    assert torch.allclose(res.param_by_length[target], want, rtol=1e-10, atol=1e-15)
    full, = torch.autograd.grad(F.cross_entropy(model(x), y), weight)
    assert torch.allclose(res.param_by_length[target].sum(0), full, rtol=1e-10, atol=1e-15)
    total = {k: v.sum(0) for k, v in res.param_by_length.items()}
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for (name, _), gr in zip(model.named_parameters(), grads):
        assert torch.allclose(total[name], gr, rtol=1e-10, atol=1e-15), name


def test_group_attribution_refuses_sampling():
    model, ids = _lm(depth=2)
    with pytest.raises(ArgumentError, match="method='exact'"):
        attribution.path_length_gradients(model, ids, loss="next_token", group="layer", method="sample")


def test_norm_ratios_take_the_built_in_loss():
    model, ids = _lm(depth=2)
    built = attribution.norm_ratios(model, ids, loss="next_token")
    by_hand = attribution.norm_ratios(model, ids, loss=lambda out, _: next_token_loss(out, ids))
    assert np.allclose(built.ratio, by_hand.ratio, rtol=1e-12) and len(built) == 4
