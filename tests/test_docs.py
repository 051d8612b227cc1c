"""Checks of the built documentation site (``make docs`` builds it; ``.ci/run`` builds it first)."""

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
PAGES = ["index.html", "getting-started.html", "concepts.html", "studies.html", "api.html", "changelog.html",
         "howto/index.html", "howto/own-model.html", "howto/torchvision.html", "howto/timm.html",
         "howto/transformers.html", "howto/huggingface.html", "howto/multi-device.html", "howto/coverage.html",
         "howto/data.html", "howto/gpu.html", "howto/scale-out.html", "howto/resume.html", "howto/procrustes.html",
         "howto/prune.html",
         "auto_examples/index.html"]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))

pytestmark = pytest.mark.skipif(not (SITE / "index.html").is_file(),
                                reason="the site is not built: run `make docs` (.ci/run does, before the tests)")


class _Parsed:
    """Links, images and ids of a page (regular expressions: Sphinx writes regular HTML, and
    an HTML parser is ten times slower over the whole site)."""

    def __init__(self, text):
        self.links = re.findall(r'<a\b[^>]*?\shref="([^"]*)"', text)
        self.images = re.findall(r'<img\b[^>]*?\ssrc="([^"]*)"', text)
        self.ids = set(re.findall(r'\sid="([^"]*)"', text))


def _parse(path):
    return _Parsed(path.read_text(errors="replace"))


def test_every_page_present():
    missing = [p for p in PAGES if not (SITE / p).is_file()]
    assert not missing, missing


def test_every_gallery_example_has_its_figures():
    assert EXAMPLES
    for name in EXAMPLES:
        page = SITE / "auto_examples" / f"{name}.html"
        assert page.is_file(), name
        images = [src for src in _parse(page).images if "sphx_glr_" + name in src]
        assert images, f"{name} produced no figure"
        for src in images:
            assert (page.parent / unquote(src)).is_file(), src


def _public_modules():
    """unravel and every module its ``__all__`` names, recursively: ``[(module, [(name, obj)])]``,
    walked as docs/_ext/public_api.py walks them (but written independently of it)."""
    import inspect

    import unravel

    walk, queue, seen = [], [unravel], set()
    while queue:
        module = queue.pop(0)
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        entries = []
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) and obj.__name__.startswith("unravel."):
                queue.append(obj)
            else:
                entries.append((name, obj))
        walk.append((module, entries))
    return walk


def test_api_reference_documents_every_public_name():
    walk = _public_modules()
    assert len(walk) > 1 and all(entries for _, entries in walk[1:])
    # an object exported by several public modules (a re-export) is described once, under any of them
    anchors = {}
    for module, entries in walk:
        for name, obj in entries:
            if not isinstance(obj, (int, float, str, bytes, bool, type(None))):
                anchors.setdefault(id(obj), set()).add(f"{module.__name__}.{name}")
    html = (SITE / "api.html").read_text()
    ids = set(re.findall(r'\sid="([^"]*)"', html))
    missing_modules = [m.__name__ for m, _ in walk if f"module-{m.__name__}" not in ids]
    assert not missing_modules, f"no section for public modules {missing_modules}"
    missing = []
    for module, entries in walk:
        for name, obj in entries:
            own = f"{module.__name__}.{name}"
            if not ({own} | anchors.get(id(obj), set())) & ids:
                missing.append(own)
    assert not missing, f"api.html does not document {missing}"
    # and nothing is described twice: every anchor of the page is unique
    all_ids = re.findall(r'\sid="(unravel\.[^"]*)"', html)
    assert len(all_ids) == len(set(all_ids)), sorted({i for i in all_ids if all_ids.count(i) > 1})


def test_no_broken_internal_link_or_missing_image():
    broken = []
    ids_cache = {}
    for page in SITE.rglob("*.html"):
        parsed = _parse(page)
        for src in parsed.images:
            if urlparse(src).scheme in ("http", "https", "data"):
                continue
            if not (page.parent / unquote(src.split("#")[0])).is_file():
                broken.append((str(page.relative_to(SITE)), src))
        for href in parsed.links:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if url.path and not target.exists():
                broken.append((str(page.relative_to(SITE)), href))
                continue
            if url.fragment and target.suffix == ".html":
                ids = ids_cache.setdefault(target, _parse(target).ids)
                if url.fragment not in ids:
                    broken.append((str(page.relative_to(SITE)), href))
    assert not broken, broken[:20]


def test_no_page_loads_scripts_or_styles_from_the_network():
    """The site works offline: every script and style sheet (MathJax included) is a local file."""
    remote = re.compile(r'<script\b[^>]*?\ssrc="(?:https?:)?//[^"]*"|<link\b[^>]*?\shref="(?:https?:)?//[^"]*"')
    found = []
    for page in SITE.rglob("*.html"):
        for tag in remote.findall(page.read_text(errors="replace")):
            if 'rel="canonical"' not in tag and 'rel="alternate"' not in tag:
                found.append((str(page.relative_to(SITE)), tag))
    for sheet in (SITE / "_static").rglob("*.css"):
        found += [(str(sheet.relative_to(SITE)), m) for m in
                  re.findall(r'@import\s+(?:url\()?["\']?(?:https?:)?//[^"\')\s]*', sheet.read_text(errors="replace"))]
    assert not found, found[:20]
    concepts = (SITE / "concepts.html").read_text()
    scripts = re.findall(r'<script\b[^>]*?\ssrc="([^"]*mathjax[^"]*)"', concepts, re.IGNORECASE)
    assert scripts, "concepts.html loads no MathJax"
    for src in scripts:
        assert (SITE / unquote(src.split("?")[0])).is_file(), src


def _chromium():
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on PATH (chromium, chromium-browser, google-chrome)")
def test_math_renders_offline_in_headless_chromium(tmp_path):
    """concepts.html from file://, with every network request refused: MathJax typesets each formula."""
    import subprocess

    page = SITE / "concepts.html"
    formulas = len(re.findall(r'<(?:span|div) class="math notranslate\b', page.read_text()))
    assert formulas >= 10
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        # no network: no proxy reachable and no host name resolves
        "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=20000", "--dump-dom", page.as_uri(),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    dom = run.stdout
    assert run.returncode == 0 and "</html>" in dom, run.stderr[-2000:]
    rendered = re.findall(r'<mjx-container\b[^>]*>', dom)
    assert len(rendered) >= formulas, f"{len(rendered)} of {formulas} formulas typeset:\n{run.stderr[-2000:]}"
    assert "<mjx-merror" not in dom, "MathJax could not typeset a formula"
    # what is left inside the math elements is MathJax output, not TeX source
    leftovers = [m for m in re.findall(r'<(?:span|div) class="math notranslate\b[^>]*>(.*?)</(?:span|div)>', dom, re.S)
                 if "\\(" in m or "\\[" in m or "$$" in m]
    assert not leftovers, leftovers[:3]
