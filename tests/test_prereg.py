"""Pre-registration: every full study fixes its claims' definitions and five seeds in its spec,
the committed pre-registration matches them, a run uses and records them, and an amendment keeps
the original verdict beside the new one."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from unravel import study
from unravel.errors import SpecError
from unravel.study.claims import judge
from unravel.study.prereg import (definitions, parse_claims, preregistered, preregistration_hash,
                                  preregistration_path, preregistration_record, write_preregistration)
from unravel.study.runner import spec_file
from unravel.study.stats import Trials

ROOT = Path(__file__).resolve().parents[1]
FULL = [n for n in study.list_studies() if n != "quickstart"]


def _defn(**kw):
    return {"statement": "X is small", "statistic": "x", "margin": 0.5, "direction": "below",
            "motivation": "the paper: 0.4", **kw}


@pytest.mark.parametrize("name", FULL)
def test_every_full_study_is_preregistered_with_five_seeds(name):
    path = spec_file(name)
    spec = study.load_spec(name)
    checked = study.parse_spec(spec)
    assert len(checked.seeds) == 5 and checked.correction == "holm" and checked.claims
    stored = json.loads(preregistration_path(path).read_text())
    assert stored["hash"] == preregistration_hash(spec), "run `unravel study preregister NAME` and commit it"
    for cid, d in checked.claims.items():
        assert d["motivation"] and d["statement"] and d["direction"] in ("above", "below", "within"), cid
    rec = preregistration_record(spec, path)
    assert rec["matches"] and rec["hash"] == stored["hash"]
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(preregistration_path(path))], cwd=ROOT,
                             capture_output=True).returncode == 0
    assert tracked, "the pre-registration file must be committed"


def test_hash_covers_exactly_the_preregistered_fields():
    base = {"seeds": [0, 1, 2, 3, 4], "claims": {"x": _defn()}, "analysis": {"ks": [1, 2]}, "train": {"epochs": 3}}
    h = preregistration_hash(base)
    assert preregistration_hash({**base, "train": {"epochs": 30}, "title": "other"}) == h
    for changed in ({"seeds": [0, 1, 2]}, {"claims": {"x": _defn(margin=0.6)}}, {"analysis": {"ks": [1, 3]}},
                    {"correction": "none"}):
        assert preregistration_hash({**base, **changed}) != h
    assert sorted(preregistered(base)) == ["analysis", "claims", "correction", "seeds"]


def test_definitions_are_checked():
    with pytest.raises(SpecError, match="claims.x.motivation"):
        parse_claims({"x": {k: v for k, v in _defn().items() if k != "motivation"}})
    with pytest.raises(SpecError, match="claims.x.direction"):
        parse_claims({"x": _defn(direction="under")})
    with pytest.raises(SpecError, match="claims.x.range"):
        parse_claims({"x": _defn(range=[1, 0])})
    with pytest.raises(SpecError, match="claims.x.colour"):
        parse_claims({"x": _defn(colour="red")})
    with pytest.raises(SpecError, match="amended.reason"):
        parse_claims({"x": _defn(amended={"date": "2026-12-08", "original": {"margin": 0.3}})})


def _small():
    return Trials(pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "error": [0.1, 0.2, 0.15, 0.2, 0.1, 0.25]}))


def _judge(**kw):
    return judge("x", "X is small", "here", lambda g: g.error.mean(), _small(), margin=0.9, direction="below",
                 effect="x", n_boot=50, **kw)


def test_a_run_decides_with_the_preregistered_definition():
    assert _judge()["verdict"] == "supported"  # the code's own margin, 0.9
    with definitions({"x": parse_claims({"x": _defn(margin=0.05, range=[0, 1])})["x"]}):
        c = _judge()
    assert c["margin"] == 0.05 and c["verdict"] == "contradicted" and c["range"] == [0, 1] and c["preregistered"]
    with definitions({"x": parse_claims({"x": _defn(direction="above")})["x"]}), pytest.raises(ValueError,
                                                                                               match="disagree"):
        _judge()
    with definitions({"y": parse_claims({"y": _defn()})["y"]}):
        assert _judge()["preregistered"] is False
    # a check by definition, and a minimum scale the claim does not reach
    with definitions({"x": parse_claims({"x": _defn(check=True, min_scale={"depth": 110})})["x"]}):
        c = _judge(scale={"depth": 32})
    assert c["kind"] == "check" and c["verdict"] == "inconclusive" and "depth >= 110" in c["why"]


def test_an_amendment_shows_the_original_verdict_beside_the_new():
    d = parse_claims({"x": _defn(margin=0.05, amended={"date": "2026-12-08", "reason": "a typo in the margin",
                                                       "original": {"margin": 0.9}})})
    with definitions(d):
        c = _judge()
    assert c["verdict"] == "contradicted" and c["amendment"]["original_verdict"] == "supported"
    assert c["amendment"]["original_margin"] == 0.9 and c["amendment"]["reason"] == "a typo in the margin"
    from unravel.study.report import _verdict_cell
    assert "amended 2026-12-08" in _verdict_cell(c) and "**supported**" in _verdict_cell(c)


def test_preregister_writes_the_file_and_a_run_records_it(tmp_path):
    spec = {"name": "tiny", "kind": "veit-paths", "data": "synthetic",
            "data_options": {"num_samples": 64, "input_shape": [1, 8]},
            "models": {"residual": {"name": "resmlp", "depth": 3, "width": 4}}, "train": {"epochs": 1},
            "analysis": {"probe_size": 4, "num_samples": 2, "sample_batches": 1, "sample_batch": 2, "n_boot": 10}, "seeds": [0, 1],
            "claims": {"mean-length": _defn(direction="below", margin=0.8, range=[0, 2], min_scale={"units": 27})}}
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = write_preregistration(spec, path)
    assert json.loads(out.read_text())["hash"] == preregistration_hash(spec)
    rec = preregistration_record(spec, path)
    assert rec["matches"] and rec["commit"] is None  # written, not committed
    spec2 = {**spec, "seeds": [0, 1, 2]}
    assert not preregistration_record(spec2, path)["matches"]
    folder = study.run_study(path, tmp_path / "out", progress=False, cache=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["preregistration"]["matches"] and summary["correction"] == "holm"
    ids = {c["id"]: c for c in summary["claims"]}
    assert ids["mean-length"]["preregistered"] is True and "units >= 27" in ids["mean-length"]["why"]
    assert all(c.get("preregistered") is False for cid, c in ids.items() if cid != "mean-length")
    assert [c["id"] for c in summary["checks"]] == ["exponential-decay"]
    for c in summary["claims"] + summary["checks"]:
        assert "range" in c and "verdict_holm" in c or c["kind"] == "check"
        if c["estimate"] is not None and c["ci"][0] is not None:
            assert c["ci"][0] <= c["estimate"] <= c["ci"][1]
