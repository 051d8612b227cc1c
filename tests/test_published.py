"""The published study results (``docs/_static/studies/``) and the README agree with each other."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "docs" / "_static" / "studies"
FOLDERS = sorted(f for f in STUDIES.iterdir() if (f / "summary.json").is_file())


def _publish_module():
    spec = importlib.util.spec_from_file_location("publish_study", ROOT / "docs" / "publish_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_verdict_table_is_the_published_one():
    publish = _publish_module()
    readme = (ROOT / "README.md").read_text()
    table = readme.split(publish.START, 1)[1].split(publish.END, 1)[0].strip()
    assert table == publish.readme_table(STUDIES), "run `python docs/publish_study.py --readme`"


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_published_runs_are_full_committed_and_tabled(folder):
    publish = _publish_module()
    summary = json.loads((folder / "summary.json").read_text())
    env = json.loads((folder / "environment.json").read_text())
    assert not yaml.safe_load((folder / "config.yaml").read_text()).get("quick"), "a quick run is published"
    assert env.get("git_revision") and env.get("git_dirty") is False, "published from uncommitted code"
    assert summary["study"] == folder.name
    assert (folder / "verdicts.md").read_text() == publish.verdict_table(summary, env, folder)
    for claim in summary["claims"]:
        assert claim["verdict"] in ("supported", "contradicted", "inconclusive")


def test_a_run_without_git_is_tied_to_a_commit_by_its_source_hash(tmp_path):
    """A run made from a copy without git records only ``source_hash``; ``--revision`` accepts it
    when the commit's sources hash the same, and refuses otherwise."""
    import subprocess
    import tarfile

    from unravel.study.environment import source_hash

    publish = _publish_module()
    full, committed = publish.committed_source_hash("HEAD")
    tar = tmp_path / "head.tar"
    tar.write_bytes(subprocess.run(["git", "archive", "--format=tar", full, "unravel", "studies"], cwd=ROOT, check=True,
                                   capture_output=True).stdout)
    with tarfile.open(tar) as t:
        t.extractall(tmp_path / "copy", filter="data")
    # the copy's hash, computed as a run computes it, equals the commit's, computed from git
    assert source_hash(tmp_path / "copy" / "unravel") == committed
    (tmp_path / "copy" / "unravel" / "lm.py").write_text("# changed\n", encoding="utf-8")
    assert source_hash(tmp_path / "copy" / "unravel") != committed

    env = publish._provenance(tmp_path, {"git_revision": None, "source_hash": committed}, "HEAD", False)
    assert env["git_revision"] == full and env["git_dirty"] is False and "source_hash" in env["revision_from"]
    with pytest.raises(SystemExit, match="differ from unravel/"):
        publish._provenance(tmp_path, {"git_revision": None, "source_hash": "0" * 64}, "HEAD", False)
    # a copy with an older .git: the run read a stale, dirty revision; the sources decide
    env = publish._provenance(tmp_path, {"git_revision": "f" * 40, "git_dirty": True, "source_hash": committed},
                              "HEAD", False)
    assert env["git_revision"] == full and env["git_dirty"] is False and "ffffffffff" in env["revision_from"]
    with pytest.raises(SystemExit, match="neither a git revision nor a source_hash"):
        publish._provenance(tmp_path, {"git_revision": None}, "HEAD", False)
    with pytest.raises(SystemExit, match="not a commit"):
        publish._provenance(tmp_path, {"git_revision": None, "source_hash": committed}, "no-such-commit", False)


def test_tables_list_claims_only():
    publish = _publish_module()
    assert {"exponential-decay", "plain-farther", "procrustes-transitions", "procrustes-near-one",
            "projection-units-conv"} <= publish.check_ids()
    summary = {"claims": [{"id": "mean-length", "verdict": "supported"}, {"id": "plain-farther", "verdict": "supported"},
                          {"id": "x", "kind": "check", "verdict": "supported"}]}
    assert [c["id"] for c in publish.claims_only(summary)] == ["mean-length"]
    for folder in FOLDERS:
        table = (folder / "verdicts.md").read_text()
        summary = json.loads((folder / "summary.json").read_text())
        for c in summary["claims"]:
            if c["id"] in publish.check_ids():
                assert f"| {c['statement']} |" not in table


def test_publishing_refuses_a_run_without_a_preregistration_committed_before_it(tmp_path):
    import subprocess

    publish = _publish_module()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    env = {"git_revision": head, "git_dirty": False}
    with pytest.raises(SystemExit, match="no pre-registration"):
        publish.check_preregistration(tmp_path, {"claims": []}, env)
    with pytest.raises(SystemExit, match="differ from the study's pre-registration"):
        publish.check_preregistration(tmp_path, {"preregistration": {"commit": head, "hash": "x", "matches": False}},
                                      env)
    with pytest.raises(SystemExit, match="not committed"):
        publish.check_preregistration(tmp_path, {"preregistration": {"commit": None, "hash": "x", "matches": True}},
                                      env)
    parent = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # a pre-registration committed after the run's revision: not the contract of that run
    with pytest.raises(SystemExit, match="not an ancestor"):
        publish.check_preregistration(tmp_path, {"preregistration": {"commit": head, "hash": "x", "matches": True}},
                                      {"git_revision": parent, "git_dirty": False})
    publish.check_preregistration(tmp_path, {"preregistration": {"commit": parent, "hash": "x", "matches": True}}, env)
