"""Each study's narrative page lives in its folder (``studies/<folder>/<study>.md``, beside the
spec of the same name) and the studies page of the docs includes every one of them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
DOCS = ROOT / "docs"
INCLUDE = re.compile(r"^```\{include\}\s+(\S+)\s*$", re.M)


def _folders():
    return [p for p in sorted(STUDIES.iterdir()) if p.is_dir() and not p.name.startswith(("_", "."))]


def _pages(folder):
    return sorted(p for p in folder.glob("*.md") if p.with_suffix(".yaml").is_file())


def test_every_study_folder_has_a_narrative_page_beside_a_spec():
    missing = [f.name for f in _folders() if not _pages(f)]
    assert not missing, f"study folders without a narrative page <study>.md beside <study>.yaml: {missing}"


def test_every_spec_is_described_on_its_folders_pages():
    for folder in _folders():
        text = "\n".join(p.read_text() for p in _pages(folder))
        for spec in folder.glob("*.yaml"):
            assert re.search(rf"(?<![\w-]){re.escape(spec.stem)}(?![\w-])", text), \
                f"{spec.relative_to(ROOT)} is not described on the narrative pages of {folder.name}/"


def test_studies_page_includes_every_narrative_page_and_nothing_else():
    included = [(DOCS / rel).resolve() for rel in INCLUDE.findall((DOCS / "studies.md").read_text())]
    pages = [p.resolve() for f in _folders() for p in _pages(f)]
    assert sorted(included) == sorted(pages)
    assert len(set(included)) == len(included), "a narrative page is included twice"


def test_narrative_paths_are_relative_to_docs_and_exist():
    """The pages are included into docs/studies.md, so their figures, tables and files resolve
    from docs/ (a page that moved without its paths would show broken figures)."""
    pattern = re.compile(r"(?:\]\(|\{include\}\s+)(_static/[^)\s]+)")
    for folder in _folders():
        for page in _pages(folder):
            paths = pattern.findall(page.read_text())
            missing = [p for p in paths if not (DOCS / p).exists()]
            assert not missing, f"{page.relative_to(ROOT)}: {missing}"
