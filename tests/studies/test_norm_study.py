"""The norm-preservation study end to end on a tiny spec: what it trains, measures and writes,
identity and transition units apart."""

import json

import numpy as np
import pandas as pd
import pytest

import unravel
from unravel import study
from unravel.studies.norm_preservation.measure import tracked_units
from unravel.study.runner import read_items

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SPEC = {"kind": "norm-preservation", "data": "synthetic",
        "data_options": {"num_samples": 120, "input_shape": [1, 16], "num_classes": 3},
        "models": {"residual": {"name": "preact_resnet_cifar", "width": 2},
                   "plain": {"name": "preact_plain_cifar", "width": 2},
                   "procrustes": {"name": "preact_resnet_cifar", "width": 2, "procrustes": True}},
        "train": {"epochs": 2, "batch_size": 32},
        "analysis": {"depths": [8, 14], "procrustes_depths": [14], "probe_size": 3, "track_units": 3,
                     "calibration_size": 48, "n_boot": 20},
        "seeds": [0, 1]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return study.run_study(SPEC, tmp_path_factory.mktemp("norm"), progress=False)


@pytest.mark.slow  # two seeds of five nets, six figures: about 25 s on two busy cores
def test_every_net_is_trained_and_measured(folder):
    nets = {("residual", 8), ("plain", 8), ("residual", 14), ("plain", 14), ("procrustes", 14)}
    train = pd.read_csv(folder / "train.csv")
    assert set(zip(train.model, train.depth)) == nets and set(train.seed) == {0, 1}
    assert set(train.groupby(["seed", "net"]).epoch.apply(tuple)) == {(1, 2)}
    units = pd.read_csv(folder / "units_final.csv")
    data = study.load_data(SPEC)
    for (model, depth), g in units.groupby(["model", "depth"]):
        found = unravel.find_units(study.build_model({**SPEC["models"][model], "depth": int(depth)}, data))
        for seed in (0, 1):
            rows = g[g.seed == seed].sort_values("unit")
            # every unit after training, with its own transition flag
            assert rows.unit.tolist() == [u.index for u in found]
            assert rows.transition.tolist() == [u.projection for u in found]
    items = np.load(folder / "units_final_items.npz")["values"]  # per probe example: what the claims resample
    assert items.shape == (len(units), 3)
    assert np.allclose(items.mean(1), units.dev)


@pytest.mark.slow  # two seeds of five nets, six figures: about 25 s on two busy cores
def test_tracked_units_over_training(folder):
    tracked = pd.read_csv(folder / "spectra_tracked.csv")
    assert set(tracked.epoch) == {0, 1, 2} and set(tracked.example) == {0}  # track_probe 1
    data = study.load_data(SPEC)
    res = unravel.models.build_model("preact_resnet_cifar", data, depth=14, width=2)
    want = tracked_units(unravel.find_units(res), 3)
    got = tracked[(tracked.net == "residual-14") & (tracked.seed == 0)]
    assert set(got.groupby("epoch").unit.apply(lambda u: tuple(sorted(u)))) == {tuple(want)}
    assert want == [0, 2, 4]  # both transitions and one identity unit
    # the Procrustes net's transitions are exactly norm-preserving at every record
    proc = tracked[(tracked.model == "procrustes") & tracked.transition]
    assert len(proc) and proc.dev.max() < 1e-5 and (proc.within == 1).all()


@pytest.mark.slow  # two seeds of five nets, six figures: about 25 s on two busy cores
def test_claims_and_files(folder):
    summary = json.loads((folder / "summary.json").read_text())
    ids = [c["id"] for c in summary["claims"]]
    assert ids == ["identity-near-one", "deeper-concentrates", "transition-farther", "procrustes-not-worse"]
    # what holds by construction is a check, reported apart
    assert [c["id"] for c in summary["checks"]] == ["plain-farther", "procrustes-transitions", "procrustes-near-one"]
    by_id = {c["id"]: c for c in summary["claims"] + summary["checks"]}
    assert by_id["procrustes-near-one"]["estimate"] < 1e-5
    assert by_id["identity-near-one"]["measured"]["depth"] == 14
    assert set(by_id["transition-farther"]["measured"]["transition_by_depth"]) == {"8", "14"}
    for c in summary["claims"]:
        assert c["verdict"] in study.VERDICTS and c["seeds"] == [0, 1]
    errors = pd.read_csv(folder / "errors.csv")
    wrong = read_items(folder / "errors_items.npz")
    assert wrong.shape == (len(errors), 24) and np.allclose(wrong.mean(1), errors.error)
    report = (folder / "report.md").read_text()
    for png in ("identity_over_training", "transition_over_training", "units_final", "spectra_final",
                "training_curves", "procrustes_training"):
        assert (folder / f"{png}.png").stat().st_size > 1000 and f"({png}.png)" in report
    costs = pd.read_csv(folder / "costs.csv")
    assert len(costs) == 10 and (costs[["train_s", "track_s", "final_spectra_s"]] > 0).all().all()


def test_without_a_procrustes_net_its_claims_are_left_out(tmp_path):
    spec = {**SPEC, "models": {k: v for k, v in SPEC["models"].items() if k != "procrustes"},
            "train": {"epochs": 1}, "analysis": {**SPEC["analysis"], "depths": [8]}, "seeds": [0]}
    out = study.run_study(spec, tmp_path, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    claims = summary["claims"] + summary["checks"]
    assert [c["id"] for c in claims] == ["identity-near-one", "deeper-concentrates", "transition-farther",
                                         "plain-farther"]
    assert {c["verdict"] for c in claims} == {"inconclusive"}  # one seed, and one depth


def test_the_authors_measurements_and_recipe(tmp_path):
    spec = {**SPEC, "models": {**{k: v for k, v in SPEC["models"].items() if k != "procrustes"},
                               "procrustes_authors": {"name": "procresnet", "width": 1}},
            "train": {"epochs": 1, "batch_size": 32},
            "analysis": {**SPEC["analysis"], "depths": [8], "authors_depths": [13], "ratio_batch": 16, "delta": 0.2},
            "seeds": [0]}
    out = study.run_study(spec, tmp_path, progress=False)
    train = pd.read_csv(out / "train.csv")
    assert set(train.net) == {"residual-8", "plain-8", "procrustes_authors-13"}
    assert train[train.model == "procrustes_authors"].procrustes_deviation.notna().all()
    band = pd.read_csv(out / "norm_final.csv")
    spectra = pd.read_csv(out / "spectra_final.csv")
    data = study.load_data(spec)
    for net, g in band.groupby("net"):
        model, depth = net.rsplit("-", 1)
        found = unravel.find_units(study.build_model({**spec["models"][model], "depth": int(depth)}, data))
        assert sorted(g.unit.unique()) == [u.index for u in found]
        assert (g.groupby("unit").size() == 3).all()  # every probe example
    assert ((band.s_min <= band.s_max) & band.within_band.between(0, 1)).all()
    # the same singular values as the spectra summary's
    both = band.merge(spectra, on=["net", "seed", "unit", "example"])
    assert len(both) == len(band) and np.allclose(both.s_max, both["max"]) and np.allclose(both.s_min, both["min"])
    ratios = pd.read_csv(out / "gradient_ratios.csv")
    assert len(ratios) == sum(len(g.unit.unique()) for _, g in band.groupby("net"))
    assert (ratios.ratio_min <= ratios.ratio_median + 1e-12).all() and (ratios.ratio_median <= ratios.ratio_max + 1e-12).all()
    assert ((ratios.ratio >= ratios.ratio_min - 1e-9) & (ratios.ratio <= ratios.ratio_max + 1e-9)).all()
    authors = ratios[ratios.model == "procrustes_authors"]
    assert authors[authors.transition].name.tolist() == ["stage2.0", "stage3.0"]
    assert (pd.read_csv(out / "costs.csv").gradient_ratios_s > 0).all()
