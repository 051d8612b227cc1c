"""The shallow-subnetwork-first study: its claims on synthetic trials with known effects (each must
come out supported, contradicted and inconclusive where the data say so), and the study end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from unravel import study, tracking
from unravel.errors import SpecError
from unravel.study.stats import Trials
from unravel.studies.ssf_dynamics import claims

B = 100
SEEDS = (0, 1, 2)
TIMES = [0, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _curve(half, start=0.9, end=0.1):
    """An error curve over TIMES that crosses half its fall at time ``half`` (linear before)."""
    return [start - (start - end) * min(1.0, 0.5 * t / half) if t <= half else
            end + (start - end) * 0.5 * math.exp(-(t - half) * 20) for t in TIMES]


def _subnets(halves, seeds=SEEDS, jitter=0.0, n=500):
    """Subnetwork trials: per seed and size, two draws whose curves cross half their fall at
    ``halves[size]`` (plus ``jitter * seed``), with per-example flags behind every error."""
    rng = np.random.default_rng(0)
    rows, items = [], []
    for s in seeds:
        for k, half in halves.items():
            for d in range(2):
                for t, e in zip(TIMES, _curve(half + jitter * s)):
                    w = rng.random(n) < e
                    rows.append({"seed": s, "epochs": t, "subnetwork_units": k, "draw": d, "error": w.mean()})
                    items.append(w)
    return Trials(pd.DataFrame(rows), np.array(items), draws=["subnetwork_units"], cluster="draw")


# ------------------------------------------------------------------------------------------
# Helpers


def test_half_way_time_and_total_variation_by_hand():
    assert claims.half_way_time([0, 1, 2], [1.0, 0.5, 0.0]) == pytest.approx(1.0)
    assert claims.half_way_time([2, 0, 1], [0.0, 1.0, 0.8]) == pytest.approx(1 + 0.3 / 0.8)  # unsorted times
    assert math.isnan(claims.half_way_time([0, 1], [0.3, 0.3]))
    assert claims.total_variation([1, 0], [0, 1]) == 1.0
    assert claims.total_variation([2, 2], [1, 1]) == 0.0  # normalised first
    assert claims.total_variation([0.2, 0.8], [0.5, 0.5]) == pytest.approx(0.3)
    assert math.isnan(claims.total_variation([0, 0], [1, 0]))


# ------------------------------------------------------------------------------------------
# Subnetworks and shallow nets: half-way times


def test_subnetworks_first_all_three_verdicts():
    first = claims.claim_subnetworks_first(_subnets({2: 0.05, 9: 0.5}), n_boot=B)
    assert first["verdict"] == "supported" and first["estimate"] == pytest.approx(0.45, abs=0.02)
    assert first["measured"]["half_way_epochs_by_units"][2] == pytest.approx(0.05, abs=0.01)
    late = claims.claim_subnetworks_first(_subnets({2: 0.5, 9: 0.05}), n_boot=B)
    assert late["verdict"] == "contradicted" and late["estimate"] < 0
    # the seeds disagree: +0.4, 0, -0.4 epochs
    mixed = claims.claim_subnetworks_first(_subnets({2: 0.5, 9: 0.1}, jitter=0.4), n_boot=B)
    assert mixed["verdict"] == "inconclusive" and mixed["ci"][0] < 0 < mixed["ci"][1]
    # a subnetwork whose error never falls: undefined, so inconclusive
    t = _subnets({2: 0.05, 9: 0.5})
    flat = t.frame.assign(error=np.where(t.frame.subnetwork_units == 2, 0.9, t.frame.error))
    never = claims.claim_subnetworks_first(Trials(flat, None, draws=["subnetwork_units"], cluster="draw"), n_boot=B)
    assert never["verdict"] == "inconclusive" and never["estimate"] is None
    # one seed decides nothing, however many examples
    one = claims.claim_subnetworks_first(_subnets({2: 0.05, 9: 0.5}, seeds=(0,)), n_boot=B)
    assert one["verdict"] == "inconclusive" and "one training seed" in one["why"]


def test_shallow_nets_first_both_ways():
    def nets(halves, jitter=0.0):
        rows = [{"seed": s, "epochs": t, "units": k, "error": e} for s in SEEDS for k, h in halves.items()
                for t, e in zip(TIMES, _curve(h + jitter * s * (k == 9)))]
        return Trials(pd.DataFrame(rows))

    # identical seeds: nothing varies, so nothing is decided
    same = claims.claim_shallow_nets_first(nets({3: 0.05, 6: 0.08, 9: 0.5}), n_boot=B)
    assert same["verdict"] == "inconclusive" and "no variation" in same["why"]
    assert claims.claim_shallow_nets_first(nets({3: 0.05, 6: 0.08, 9: 0.5}, jitter=0.02),
                                           n_boot=B)["verdict"] == "supported"
    c = claims.claim_shallow_nets_first(nets({3: 0.5, 9: 0.05}, jitter=0.01), n_boot=B)
    assert c["verdict"] == "contradicted" and c["estimate"] == pytest.approx(-0.44, abs=0.02)
    c = claims.claim_shallow_nets_first(nets({3: 0.1, 9: 0.05}, jitter=0.1), n_boot=B)  # -0.05, 0.05, 0.15
    assert c["verdict"] == "inconclusive"
    c = claims.claim_shallow_nets_first(nets({3: 0.1, 9: 0.5}), n_boot=B, requires=[(False, "the net did not train")])
    assert c["verdict"] == "inconclusive" and c["why"] == "the net did not train"


# ------------------------------------------------------------------------------------------
# The gradient: mean path length over training


def test_short_paths_early_against_the_margin():
    def records(first, last, jitter=0.0):
        return Trials(pd.DataFrame([{"seed": s, "epochs": t, "mean_length": m + jitter * s * (t > 0), "units": 10}
                                    for s in SEEDS for t, m in ((0, first), (0.5, (first + last) / 2), (8, last))]))

    c = claims.claim_short_paths_early(records(3.0, 5.0, jitter=0.05), n_boot=B)
    assert c["verdict"] == "supported" and c["estimate"] == pytest.approx(0.205)
    assert claims.claim_short_paths_early(records(5.0, 3.0, jitter=0.05), n_boot=B)["verdict"] == "contradicted"
    # a real but small move: 0.3 of a unit in 10 is below the 0.05 margin
    assert claims.claim_short_paths_early(records(3.0, 3.3, jitter=0.02), n_boot=B)["verdict"] == "contradicted"
    assert claims.claim_short_paths_early(records(3.0, 3.5, jitter=0.5), n_boot=B)["verdict"] == "inconclusive"


# ------------------------------------------------------------------------------------------
# Histograms compared: one margin for "differ" and "alike"


def _hists(shapes, seeds=SEEDS, noise=0.0, units=9):
    """Histogram rows: per model a base shape over lengths 0..units, the same at every step,
    perturbed per seed by ``noise`` (deterministic)."""
    rows = []
    for s in seeds:
        rng = np.random.default_rng(s)
        for model, shape in shapes.items():
            p = np.asarray(shape, float) * (1 + noise * rng.standard_normal(len(shape))).clip(0)
            p = p / p.sum()
            rows += [{"seed": s, "model": model, "step": step, "length": k, "share": v,
                      "units": units if model != "odd" else units + 1}
                     for step in (0, 1, 2, 4) for k, v in enumerate(p)]
    return Trials(pd.DataFrame(rows))


BASE = [0.0, 0.1, 0.2, 0.25, 0.2, 0.12, 0.08, 0.03, 0.015, 0.005]


def test_histograms_one_margin_for_differ_and_alike():
    shifted = [0.0] + BASE[:-1]  # one length shorter: TV about 0.2
    near = [v + (0.01 if k == 3 else 0) for k, v in enumerate(BASE)]  # TV about 0.005
    for other, differ, alike in [(shifted, "supported", "contradicted"), (near, "contradicted", "supported")]:
        t = _hists({"resnet": BASE, "densenet": other, "se_resnet": other}, noise=0.02)
        d = claims.claim_histograms_differ(Trials(t.frame[t.frame.model != "se_resnet"]), n_boot=B)
        a = claims.claim_histograms_alike(Trials(t.frame[t.frame.model != "densenet"]), n_boot=B)
        assert (d["verdict"], a["verdict"]) == (differ, alike), (d["why"], a["why"])
        assert d["margin"] == a["margin"] == claims.TV_MARGIN
    p, q = np.array(BASE), np.array(shifted)
    tv = 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()
    t = _hists({"resnet": BASE, "densenet": shifted})
    c = claims.claim_histograms_differ(t, n_boot=B)
    assert c["estimate"] == pytest.approx(tv) and c["measured"]["tv_by_step"] == {s: pytest.approx(tv, abs=1e-4)
                                                                                  for s in (0, 1, 2, 4)}
    assert c["measured"]["mean_length_over_units"]["densenet"] > c["measured"]["mean_length_over_units"]["resnet"]


def test_histogram_claims_refuse_to_decide_what_they_cannot():
    # seeds alone move the ResNet's histogram by more than the margin: no verdict either way
    noisy = _hists({"resnet": BASE, "se_resnet": BASE}, noise=1.0)
    c = claims.claim_histograms_alike(noisy, n_boot=B)
    assert c["measured"]["resnet_between_seeds_tv"] >= claims.TV_MARGIN
    assert c["verdict"] == "inconclusive" and "differ between seeds" in c["why"]
    # different numbers of units: lengths cannot be compared one by one
    c = claims.claim_histograms_differ(_hists({"resnet": BASE, "odd": BASE + [0.0]}), "resnet", "odd", n_boot=B)
    assert c["verdict"] == "inconclusive" and "as many units" in c["why"]
    one = claims.claim_histograms_alike(_hists({"resnet": BASE, "se_resnet": BASE}, seeds=(0,)), n_boot=B)
    assert one["verdict"] == "inconclusive" and "one training seed" in one["why"]


# ------------------------------------------------------------------------------------------
# The study


def _tiny(**analysis):
    return {"kind": "ssf-dynamics", "name": "ssf-tiny", "data": "mnist1d", "data_options": {"num_samples": 400},
            "models": {"resnet": {"name": "resnet_cifar", "depth": 14, "width": 3},
                       "densenet": {"name": "densenet_bc", "depth": 16, "growth": 4},
                       "se_resnet": {"name": "se_resnet_cifar", "depth": 14, "width": 3}},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.003},
            "analysis": {"probe_size": 16, "subnetwork_samples": 2, "calibration_examples": 64, "eval_examples": 40,
                         "shallow_depths": [8], "n_boot": 20, **analysis},
            "seeds": [0, 1]}


@pytest.mark.slow
def test_ssf_study_end_to_end(tmp_path):
    folder = study.run_study(_tiny(), tmp_path, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    ids = [c["id"] for c in summary["claims"]]
    assert ids == ["subnetworks-first", "shallow-nets-first", "short-paths-early", "dense-differs", "se-alike"]
    for c in summary["claims"]:
        assert c["verdict"] in study.VERDICTS and c["seeds"] == [0, 1] and c["paper"]["where"].endswith("abstract")
        assert c["measured"]["models"]["resnet"] == {"units": 6, "parameters": c["measured"]["models"]["resnet"][
            "parameters"]}
    # records at log-spaced steps: 320 training examples in batches of 64 are 5 steps per epoch
    steps = tracking.log_spaced_steps(5, 2)
    paths = pd.read_csv(folder / "paths.csv")
    assert sorted(paths.step.unique()) == steps == [0, 1, 2, 4, 5, 10]
    assert set(paths.group) == {"all", "units", "stem", "head", "between"}
    units = paths[paths.group == "units"]
    assert (units[units.length == 0].share == 0).all()
    head = paths[paths.group == "head"]
    assert (head[head.length > 0].share == 0).all()
    assert set(paths[paths.group == "between"].model) == {"densenet"}  # its transitions
    assert np.allclose(paths.epochs, paths.step / 5)
    subs = pd.read_csv(folder / "subnetworks.csv")
    res = subs[subs.model == "resnet"]
    # sizes 2, 3 (0.5 of 6), 4 (0.75 of 6, rounded half to even), 6; two draws each, one whole net
    assert sorted(res.subnetwork_units.unique()) == [2, 3, 4, 6]
    assert len(res) == 2 * len(steps) * (3 * 2 + 1) and set(subs[subs.model != "resnet"].subnetwork_units) == {6}
    items = study.runner.read_items(folder / "subnetworks_items.npz")
    assert items.shape == (len(subs), 40) and np.allclose(items.mean(1), subs.error)
    shallow = pd.read_csv(folder / "shallow_nets.csv")
    assert sorted(shallow.units.unique()) == [3, 6] and sorted(shallow.model.unique()) == ["resnet", "resnet-8"]
    cost = pd.read_csv(folder / "record_cost.csv")
    assert (cost[cost.model != "resnet-8"].histogram_overhead > 0).all()
    for fig in ("mean_length", "heatmap_resnet", "heatmap_densenet", "groups_resnet", "subnetworks_resnet",
                "shallow_nets", "histogram_distance"):
        assert (folder / f"{fig}.png").stat().st_size > 1000


def test_ssf_study_with_a_resnet_alone(tmp_path):
    """The kind without its optional nets: the ResNet's claims only, in the default suite."""
    spec = _tiny(shallow_depths=[8])
    spec["models"] = {"resnet": spec["models"]["resnet"]}
    spec["train"]["epochs"] = 1
    folder = study.run_study(spec, tmp_path, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["id"] for c in summary["claims"]] == ["subnetworks-first", "shallow-nets-first", "short-paths-early"]
    assert sorted(pd.read_csv(folder / "paths.csv").step.unique()) == [0, 1, 2, 4, 5]
    assert not (folder / "histogram_distance.csv").exists()


def test_ssf_spec_checks_its_settings():
    spec = study.load_spec("ssf-dynamics")
    a = study.parse_spec(spec).analysis
    assert a.probe_size == spec["train"]["batch_size"]  # the probe's batch statistics are training's
    assert a.shallow_depths and max(a.shallow_depths) < spec["models"]["resnet"]["depth"]
    with pytest.raises(SpecError, match="analysis.log_base"):
        study.validate_spec({**_tiny(), "analysis": {"log_base": 1}})
    with pytest.raises(SpecError, match=r"analysis.shallow_depths\[0\]"):
        study.validate_spec({**_tiny(), "analysis": {"shallow_depths": [0]}})
