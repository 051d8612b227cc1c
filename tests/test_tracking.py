"""Tracking over training: the step schedule, parameter groups, train-mode records and
recalibrated subnetworks, each against a computation done by hand."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unravel
from unravel import lesion, models, tracking, train

from .conftest import state_hash


def _data(n=320):
    return unravel.data.mnist1d(num_samples=n)


def _net(seed=0, depth=8, width=4):
    torch.manual_seed(seed)
    return models.resnet_cifar(depth, width=width, dims=1, in_channels=1)


# ------------------------------------------------------------------------------------------
# The step schedule


@pytest.mark.parametrize("steps_per_epoch,epochs,base", [(40, 3, 2.0), (7, 2, 2.0), (100, 1, 3.0), (1, 4, 2.0)])
def test_log_spaced_steps(steps_per_epoch, epochs, base):
    steps = tracking.log_spaced_steps(steps_per_epoch, epochs, base)
    assert steps[0] == 0 and steps == sorted(set(steps))
    first = [s for s in steps if 0 < s < steps_per_epoch]
    assert first == sorted({round(base ** i) for i in range(64) if round(base ** i) < steps_per_epoch})
    assert [s for s in steps if s >= steps_per_epoch] == [e * steps_per_epoch for e in range(1, epochs + 1)]


def test_log_spaced_steps_refuses_bad_input():
    with pytest.raises(ValueError, match="base"):
        tracking.log_spaced_steps(10, 2, base=1)
    with pytest.raises(ValueError, match="epochs"):
        tracking.log_spaced_steps(10, 0)
    with pytest.raises(TypeError, match="steps must be an iterable"):
        tracking.PathLengthTracker(_data(), steps=5)


def test_trackers_record_exactly_the_scheduled_steps():
    data = _data()  # 256 training examples: 4 steps of 64 per epoch
    steps = tracking.log_spaced_steps(4, 3)
    paths = tracking.PathLengthTracker(data, probe_size=16, steps=steps, mode="train")
    subs = tracking.SubnetworkTracker(data.batch(32), data, sizes=[1, 3], samples=2, steps=steps)
    train.fit(_net(), data, epochs=3, batch_size=64, optimizer="adam", callbacks=[paths, subs], progress=False)
    assert steps == [0, 1, 2, 4, 8, 12]
    assert sorted(paths.to_frame().step.unique()) == steps
    assert sorted(subs.to_frame().step.unique()) == steps
    # the epoch of each record: 0 before training, else the epoch the step belongs to
    f = paths.to_frame().drop_duplicates("step")
    assert f.epoch.tolist() == [0, 1, 1, 1, 2, 3]
    assert paths.seconds > 0 and subs.seconds > 0


def test_records_leave_training_bit_exactly_as_without_them():
    data = _data()
    plain = _net()
    train.fit(plain, data, epochs=2, batch_size=64, optimizer="adam", progress=False)
    tracked = _net()
    cbs = [tracking.PathLengthTracker(data, probe_size=16, steps=[0, 1, 2, 5, 8], mode="train", by_group=True),
           tracking.SubnetworkTracker(data.batch(32), data, sizes=[1, 2, 3], samples=2, steps=[0, 3, 8])]
    train.fit(tracked, data, epochs=2, batch_size=64, optimizer="adam", callbacks=cbs, progress=False)
    assert state_hash(tracked) == state_hash(plain)


# ------------------------------------------------------------------------------------------
# Parameter groups and their histograms


def test_parameter_groups_of_resnet_and_densenet():
    net = _net()
    g = tracking.parameter_groups(net, torch.randn(2, 1, 40))
    assert set(g) == {k for k, _ in net.named_parameters()}
    assert {k for k, v in g.items() if v == "stem"} == {"stem.0.weight", "stem.1.weight", "stem.1.bias"}
    assert {k for k, v in g.items() if v == "head"} == {"fc.weight", "fc.bias"}
    assert all(v == "units" for k, v in g.items() if k.startswith("stage"))
    dense = models.densenet_bc(16, growth=4, dims=1, in_channels=1)
    g = tracking.parameter_groups(dense, torch.randn(2, 1, 40))
    assert {v for k, v in g.items() if k.startswith("transition")} == {"between"}
    assert {v for k, v in g.items() if k.startswith(("final", "fc"))} == {"head"}
    assert g["stem.weight"] == "stem" and {v for k, v in g.items() if k.startswith("block")} == {"units"}


@pytest.mark.parametrize("build", ["resnet", "densenet"])
def test_group_histograms_partition_the_gradient(build):
    """Per length, the groups' squared norms add up to the whole parameter gradient's (float64);
    the head carries length 0 only, the units' parameters never length 0."""
    torch.manual_seed(0)
    net = (_net() if build == "resnet" else models.densenet_bc(16, growth=4, dims=1, in_channels=1)).double()
    data = _data()
    x, y = data.batch(24, split="train")
    t = tracking.PathLengthTracker((x.double(), y), steps=[0], mode="train", by_group=True)
    t.on_train_begin(net)
    f = t.to_frame()
    whole = f[f.group == "all"].set_index("length").norm
    parts = f[f.group != "all"].pivot_table(index="length", columns="group", values="norm", aggfunc="sum")
    assert set(parts.columns) == ({"units", "stem", "head"} | ({"between"} if build == "densenet" else set()))
    assert np.allclose((parts ** 2).sum(axis=1).to_numpy(), (whole ** 2).to_numpy(), rtol=1e-10)
    head = f[f.group == "head"].set_index("length").share
    assert head.loc[0] == 1.0 and (head.drop(0) == 0).all()
    units = f[f.group == "units"].set_index("length")
    assert units.share.loc[0] == 0.0 and units.share.sum() == pytest.approx(1.0)
    assert units.mean_length.iloc[0] == pytest.approx(float((units.share * units.index).sum()))


def test_train_mode_record_is_the_network_training_sees():
    """A train-mode record's loss is the loss with the probe's batch statistics, and the record
    leaves every buffer as it was."""
    torch.manual_seed(0)
    net = _net().double()
    fresh = copy.deepcopy(net)
    for m in net.modules():  # running statistics far from the probe's
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.fill_(3.0)
    x, y = _data().batch(32, split="train")
    x = x.double()
    before = state_hash(net)
    train_mode = tracking.PathLengthTracker((x, y), steps=[0], mode="train")
    eval_mode = tracking.PathLengthTracker((x, y), steps=[0], mode="eval")
    train_mode.on_train_begin(net)
    eval_mode.on_train_begin(net)
    assert state_hash(net) == before
    with torch.no_grad():
        expected = float(F.cross_entropy(fresh.train()(x), y))  # batch statistics ignore running ones
        in_eval = float(F.cross_entropy(net.eval()(x), y))
    assert train_mode.to_frame().loss.iloc[0] == pytest.approx(expected, rel=1e-12)
    assert eval_mode.to_frame().loss.iloc[0] == pytest.approx(in_eval, rel=1e-12)
    assert abs(expected - in_eval) > 1e-3


# ------------------------------------------------------------------------------------------
# Subnetworks with recalibrated statistics


def test_subnetwork_errors_equal_the_naive_recalibrated_subnetwork():
    data = _data()
    net = _net()
    evaluation = data.test.tensors
    subs = tracking.SubnetworkTracker(evaluation, data, sizes=[1, 2, 3], samples=2, steps=[0, 4, 8], seed=3,
                                      batch_size=50)
    train.fit(net, data, epochs=2, batch_size=64, optimizer="adam", callbacks=[subs], progress=False)
    f = subs.to_frame()
    items = subs.items()
    assert items.shape == (len(f), len(evaluation[1]))
    assert np.allclose(items.mean(1), f.error.to_numpy())
    # the draws are fixed: each (size, draw) keeps the same units at every step
    assert (f.groupby(["subnetwork_units", "draw"]).units.nunique() == 1).all()
    assert f[f.subnetwork_units == 3].units.unique().tolist() == ["0,1,2"]
    # the last record by hand: a copy of the trained net, units deleted, statistics recalibrated
    last = f[f.step == 8]
    for _, row in last.iterrows():
        naive = copy.deepcopy(net)
        kept = [int(u) for u in row.units.split(",")]
        with lesion.delete(naive, [i for i in range(3) if i not in kept]):
            lesion.recalibrate_bn(naive, data, batch_size=50)
            with torch.no_grad():
                wrong = (naive.eval()(evaluation[0]).argmax(1) != evaluation[1]).float().mean()
        assert row.error == pytest.approx(float(wrong), abs=1e-12)
    assert state_hash(naive) != state_hash(net)  # recalibration changed the copy, not the net


def test_subnetwork_tracker_refuses_bad_sizes():
    data = _data()
    with pytest.raises(ValueError, match="sizes"):
        tracking.SubnetworkTracker(data, data, sizes=[0])
    t = tracking.SubnetworkTracker(data, data, sizes=[5])
    with pytest.raises(ValueError, match="more units than the model's 3"):
        t.on_train_begin(_net())
