"""The demo (`make demo`, the quickstart study): it judges the full studies' claims by their own
pre-registered definitions, gated by the scale each needs, and none of its verdicts is the opposite
of the published full study's for the same claim."""

import json
from pathlib import Path

import pytest

from unravel import study

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "_static" / "studies"
OPPOSITE = {("supported", "contradicted"), ("contradicted", "supported")}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _definitions(name):
    return study.parse_spec(study.load_spec(name)).claims


def test_demo_uses_the_full_studies_definitions_and_gates_by_scale():
    demo = _definitions("quickstart")
    full = {}
    for name in ("veit-lesion", "veit-paths", "norm-preservation"):
        full.update(_definitions(name))
    assert set(demo) == set(full)
    for cid, d in demo.items():
        for key in ("margin", "direction", "range", "check", "min_scale"):
            assert d[key] == full[cid][key], (cid, key)
    # the norm claims by depth: the demo's nets are far shallower than the claims concern
    depths = study.parse_spec(study.load_spec("quickstart")).analysis.studies["norm-preservation"].analysis.depths
    assert max(depths) < demo["identity-near-one"]["min_scale"]["depth"]
    assert len(study.parse_spec(study.load_spec("quickstart")).seeds) >= 2


def opposite_verdicts(summary: dict) -> list:
    """The claims of ``summary`` whose verdict is the opposite of the published full study's."""
    published = {}
    for f in PUBLISHED.glob("*/summary.json"):
        s = json.loads(f.read_text())
        if s["study"] in ("veit-lesion", "veit-paths", "norm-preservation"):
            published.update({c["id"]: c["verdict"] for c in s["claims"]})
    return [(c["id"], c["verdict"], published[c["id"]]) for c in summary["claims"] + summary.get("checks", [])
            if (c["verdict"], published.get(c["id"])) in OPPOSITE]


def test_opposite_verdicts_are_found():
    fake = {"claims": [{"id": "transition-farther", "verdict": "contradicted"},
                       {"id": "single-deletions", "verdict": "supported"}]}
    assert opposite_verdicts(fake) == [("transition-farther", "contradicted", "supported")]


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [None, [3, 4, 5]])
def test_demo_never_contradicts_the_published_studies(seeds, tmp_path):
    folder = study.run_study("quickstart", tmp_path, seeds=seeds, progress=False, cache=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert opposite_verdicts(summary) == []
    # the seeds are part of the contract: a run on other seeds is recorded as not the registered run
    assert summary["preregistration"]["matches"] == (seeds is None)
    # the nets trained well above chance (MNIST-1D: 10 classes)
    for c in summary["claims"]:
        base = c["measured"].get("baseline_error")
        if base is not None:
            assert base < 0.45, (c["id"], base)


def test_demo_runs_on_one_thread_unless_told(monkeypatch):
    # on a shared 2-core machine a second torch thread spins waiting for the first: the demo's
    # tiny nets took 80 times longer per epoch that way
    import torch

    from unravel.cli import main
    from unravel.cli import study as cli_study

    seen = []
    monkeypatch.setattr(cli_study, "_cmd_study_run", lambda args: seen.append((torch.get_num_threads(), args.study)) or 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["demo", "--no-progress"]) == 0
        assert main(["demo", "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, "quickstart"), (2, "quickstart")]
