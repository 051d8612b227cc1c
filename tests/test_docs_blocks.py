"""Every code block of README.md and docs/**/*.md runs (issue 26).

A page's ```python blocks run in order in one namespace, in a fresh folder; its ```bash blocks
run their ``unravel ...`` lines through the CLI in-process, in the same folder (so a block can
make the model folder a later command names). A block needing what a test machine lacks (a GPU,
hours, the network) is marked in the Markdown, visibly, by ``<!-- no-run: REASON -->`` on the
line before it; this test honours and counts the marks, and a shell block with a command it
cannot run must carry one.
"""

import linecache
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
PAGES = [p for p in PAGES if "_build" not in p.parts and "_static" not in p.parts]
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
MARK = re.compile(r"^<!--\s*no-run:\s*(\S.*?)\s*-->$")
PYTHON, SHELL = ("python", "py"), ("bash", "sh", "shell", "console")
#: The most blocks the docs may leave unrun: keep such exceptions few.
MAX_UNRUN = 10
#: A python block whose first line names a file (``# mynets.py``) is also written there, for a
#: later ``unravel ... mynets:build`` to import.
FILE = re.compile(r"^#\s*(\w+\.py)\b")


def blocks(path: Path):
    """``[(line, language, code, reason)]``: the page's python and shell blocks; ``reason`` is
    the no-run mark's, or None."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        before = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = MARK.match(before)
        if lang in PYTHON + SHELL:
            found.append((start + 1, "python" if lang in PYTHON else "shell", "\n".join(lines[start + 1:j]),
                          mark.group(1) if mark else None))
        i = j + 1
    return found


def _commands(code: str):
    """The shell block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    for line in joined.splitlines():
        words = shlex.split(line.lstrip("$ "), comments=True)
        if words:
            yield words


def _run_page(path: Path, tmp_path, monkeypatch):
    from unravel.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    ran = 0
    for line, lang, code, reason in blocks(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        if reason is not None:
            continue
        if lang == "python":
            named = FILE.match(code)
            if named:  # a fresh module: not one of that name imported earlier in this process
                (tmp_path / named.group(1)).write_text(code)
                monkeypatch.delitem(sys.modules, named.group(1)[:-3], raising=False)
            # the block's source, where tracebacks and nnsight's traces read it back
            linecache.cache[where] = (len(code), None, code.splitlines(True), where)
            exec(compile(code, where, "exec"), namespace)
        else:
            for words in _commands(code):
                assert words[0] == "unravel", (f"{where}: the docs test runs `unravel ...` commands only; mark "
                                               f"the block <!-- no-run: REASON --> to show `{' '.join(words)}`")
                assert main(words[1:]) == 0, f"{where}: {' '.join(words)}"
        ran += 1
    import matplotlib.pyplot as plt

    plt.close("all")
    return ran


@pytest.mark.parametrize("page", [p for p in PAGES if any(r is None for *_, r in blocks(p))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_runs(page, tmp_path, monkeypatch):
    assert _run_page(page, tmp_path, monkeypatch) > 0


def test_the_blocks_left_unrun_are_few_and_say_why():
    unrun = [(p.relative_to(ROOT), line, reason) for p in PAGES for line, _, _, reason in blocks(p) if reason]
    assert len(unrun) <= MAX_UNRUN, unrun
    assert all(len(reason) > 8 for *_, reason in unrun), unrun
    total = sum(len(blocks(p)) for p in PAGES)
    assert total >= 30 and len(unrun) < total / 4


def test_the_marks_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text\n\n```python\nx = 1\n```\n\n<!-- no-run: needs a GPU -->\n```bash\nmake gpu\n```\n"
                    "```text\nnot code\n```\n")
    found = blocks(page)
    assert [(lang, reason) for _, lang, _, reason in found] == [("python", None), ("shell", "needs a GPU")]
    assert list(_commands("unravel paths resmlp \\\n  --batch 4  # a comment\n$ unravel units")) == \
        [["unravel", "paths", "resmlp", "--batch", "4"], ["unravel", "units"]]
