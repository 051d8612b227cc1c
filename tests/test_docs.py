"""Checks of the built documentation site (``make docs`` builds it; ``.ci/run`` builds it first)."""

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
PAGES = ["index.html", "getting-started.html", "concepts.html", "studies.html", "api.html", "changelog.html",
         "howto/index.html", "howto/own-model.html", "howto/torchvision.html", "howto/transformers.html",
         "howto/data.html", "howto/gpu.html", "howto/scale-out.html", "howto/resume.html",
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


def test_api_reference_documents_every_public_name():
    import unravel
    from unravel import attribution, data, graph, lesion, models, plots, train, units

    html = (SITE / "api.html").read_text()
    for module in (units, graph, lesion, attribution, models, data, train, plots):
        for name in module.__all__:
            assert f'id="{module.__name__}.{name}"' in html or f'id="unravel.models.{name}"' in html, \
                f"{module.__name__}.{name}"
    assert 'id="unravel.unravel"' in html or "unravel.graph.unravel" in html
    assert unravel.__version__


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
