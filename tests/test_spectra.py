"""Jacobian-spectrum summaries, BatchNorm recalibration and the per-epoch tracker (unravel.jacobian.spectra)."""

import copy

import numpy as np
import pytest
import torch

import unravel
from unravel.errors import ArgumentError
from unravel.jacobian.spectra import SpectraTracker, measure_spectra, recalibrated, spectrum_summary
from .conftest import randomize_bn, state_hash


def _net():
    torch.manual_seed(0)
    return randomize_bn(unravel.models.preact_resnet_cifar(8, width=2, in_channels=1, dims=1)).double().eval()


def test_summary_matches_the_svd_of_the_full_jacobian():
    net = _net()
    x = torch.randn(3, 1, 16, dtype=torch.float64)
    summary = measure_spectra(net, x)
    units = unravel.find_units(net)
    inputs = {}
    hooks = [u.module.register_forward_pre_hook(lambda m, a, i=u.index: inputs.setdefault(i, a[0])) for u in units]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    for u in units:
        for e in range(3):
            J = torch.autograd.functional.jacobian(lambda v: u.module(v.unsqueeze(0))[0], inputs[u.index][e])
            s = torch.linalg.svdvals(J.reshape(J.shape[0] * J.shape[1], -1)).numpy()
            log = np.log(np.maximum(s, 1e-4))
            row = summary[(summary.unit == u.index) & (summary.example == e)].iloc[0]
            assert row.n_values == len(s) and bool(row.projection) == u.projection
            assert row.dev == pytest.approx(np.median(np.abs(log)), abs=1e-10)
            assert row.mean_log == pytest.approx(log.mean(), abs=1e-10)
            assert row.within == pytest.approx(np.mean(np.abs(log) <= 0.1))
            assert row.q50 == pytest.approx(np.median(s), abs=1e-10) and row["max"] == pytest.approx(s.max())


def test_summary_floor_and_band():
    import pandas as pd

    f = pd.DataFrame({"unit": 0, "example": 0, "singular_value": [0.0, 0.0, 0.0, 1.0]})
    row = spectrum_summary(f).iloc[0]
    assert row.dev == pytest.approx(-np.log(1e-4)) and row["min"] == 0.0  # zeros count as the floor
    assert spectrum_summary(f, floor=1e-6).iloc[0].dev == pytest.approx(-np.log(1e-6))
    assert spectrum_summary(f.assign(singular_value=[0.95, 1.0, 1.2, 1.05]), band=0.1).iloc[0].within == 0.75
    with pytest.raises(ArgumentError, match="band"):
        spectrum_summary(f, band=0)
    with pytest.raises(ArgumentError, match="missing"):
        spectrum_summary(f.drop(columns="example"))


def test_recalibrated_copy_holds_the_batch_statistics_and_the_model_is_untouched():
    net = _net()
    before = state_hash(net)
    x = 2 + 3 * torch.randn(64, 1, 16, dtype=torch.float64)
    calibrated = recalibrated(net, x)
    assert state_hash(net) == before and not net.training and not calibrated.training
    # what each BatchNorm sees in one train-mode pass of x
    probe = copy.deepcopy(net).train()
    seen = {}
    bns = [(n, m) for n, m in probe.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for name, m in bns:
        m.register_forward_pre_hook(lambda mod, a, name=name: seen.setdefault(name, a[0]))
    with torch.no_grad():
        probe(x)
    got = dict(calibrated.named_modules())
    for name, _ in bns:
        h = seen[name]
        assert torch.allclose(got[name].running_mean, h.mean((0, 2)), atol=1e-12)
        assert torch.allclose(got[name].running_var, h.var((0, 2), unbiased=True), atol=1e-10)
        assert got[name].momentum == 0.1
    # in chunks: the equal-weight average of the chunks' statistics
    halves = recalibrated(net, x, batch_size=32)
    bn = dict(halves.named_modules())[bns[0][0]]
    h = seen[bns[0][0]]
    assert torch.allclose(bn.running_mean, (h[:32].mean((0, 2)) + h[32:].mean((0, 2))) / 2, atol=1e-12)


def test_tracker_records_every_epoch_without_changing_training():
    data = unravel.data.synthetic(96, input_shape=(1, 16), num_classes=2)
    x = data.batch(2)[0]

    def run(callbacks):
        torch.manual_seed(0)
        net = unravel.models.preact_resnet_cifar(8, width=2, num_classes=2, in_channels=1, dims=1)
        unravel.train.fit(net, data, epochs=2, batch_size=16, callbacks=callbacks, progress=False)
        return net

    tracker = SpectraTracker(x, calibration=data.batch(64, split="train")[0], units=[0, 2], keep=True)
    assert state_hash(run([tracker])) == state_hash(run([]))  # measured on copies, no random numbers drawn
    frame = tracker.to_frame()
    assert sorted(frame.epoch.unique()) == [0, 1, 2]
    assert frame.groupby("epoch").unit.apply(lambda u: sorted(set(u))).tolist() == [[0, 2]] * 3
    full = tracker.spectra()
    assert len(full) == frame.n_values.sum()
    with pytest.raises(ArgumentError, match="keep=True"):
        SpectraTracker(x).spectra()
    with pytest.raises(ArgumentError, match="probe inputs"):
        SpectraTracker([1, 2])
