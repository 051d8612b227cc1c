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
