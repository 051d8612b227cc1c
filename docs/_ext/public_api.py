"""Sphinx extension: the API reference, generated from ``__all__`` at build time.

``docs/api.rst`` holds a ``.. public-api:: PACKAGE`` block; before the page is parsed (the
``source-read`` event) the block is replaced by reStructuredText with one section per public
module: the package itself, then every module that the package's ``__all__`` names (and, in turn,
every module that their ``__all__`` names: subpackages work the same way). Each section holds the
module's docstring and one autodoc directive per name in that module's ``__all__``.

Every object is documented once (so ``-W`` never meets a duplicate description): under the public
module that defines it (``obj.__module__``, or the public package above a private module that
defines it), otherwise under the deepest public module that exports it. A name whose object is
documented elsewhere (a re-export) gets a one-line cross-reference instead. Nothing generated is
written to disk; the page is re-read on every build so that a changed ``__all__`` shows at once.
Class members: an undocumented method that overrides another library's (``forward`` of a
``torch.nn.Module``) is left out rather than shown with the borrowed docstring.

The block's content optionally gives section titles and their order, one ``module: Title`` per
line; modules it does not name follow in ``__all__`` order, titled with their dotted name, and
lines naming modules that are not public are ignored (so the page survives a reorganisation)::

    .. public-api:: unravel

       unravel.units: Residual units
       unravel.graph: The unraveled graph
"""

import importlib
import inspect
import re
import sys
import types

from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

_BLOCK = re.compile(r"^\.\. public-api::[ \t]*(?P<package>\S+)[ \t]*\n(?P<body>(?:[ \t]+.*\n|[ \t]*\n)*)",
                    re.MULTILINE)
_PRIMITIVES = (int, float, complex, str, bytes, bool, type(None))
_SHORT_VALUE = 60


def public_modules(package_name):
    """The public modules of a package in walk order: ``[(module, [(name, obj), ...]), ...]``.

    The package first; a name in a module's ``__all__`` that is a module inside the package is a
    public module (visited after its parent); any other name is an entry of its module. Problems
    (a module without ``__all__``, a name in ``__all__`` that the module lacks) are warnings, which
    ``-W`` turns into a failed build.
    """
    root = importlib.import_module(package_name)
    walk, seen, queue = [], set(), [root]
    while queue:
        module = queue.pop(0)
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        names = getattr(module, "__all__", None)
        if names is None:
            logger.warning("public-api: public module %s has no __all__", module.__name__)
            names = []
        entries = []
        for name in names:
            try:
                obj = getattr(module, name)
            except AttributeError:
                logger.warning("public-api: %s.__all__ names %r, which it does not define", module.__name__, name)
                continue
            if isinstance(obj, types.ModuleType):
                if obj.__name__ == root.__name__ or obj.__name__.startswith(root.__name__ + "."):
                    queue.append(obj)
                else:
                    logger.warning("public-api: %s.__all__ names the outside module %s", module.__name__, obj.__name__)
                continue
            entries.append((name, obj))
        walk.append((module, entries))
    return walk


def _owners(walk):
    """For each non-primitive object, the ``(module name, name)`` that documents it (see the module docstring)."""
    candidates = {}
    for module, entries in walk:
        for name, obj in entries:
            if not isinstance(obj, _PRIMITIVES):
                candidates.setdefault(id(obj), (obj, []))[1].append((module.__name__, name))

    def score(obj, candidate):
        modname = candidate[0]
        home = getattr(obj, "__module__", None) or ""
        inside = home == modname or home.startswith(modname + ".")
        return (len(modname) if inside else -1, modname.count("."))

    owners = {}
    for key, (obj, places) in candidates.items():
        owners[key] = max(places, key=lambda place: score(obj, place))  # max keeps the first of ties
    return owners


def _directive(obj):
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if inspect.isroutine(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
        return "autofunction"
    return "autodata"


def _role(obj):
    if inspect.isclass(obj):
        return "exc" if issubclass(obj, BaseException) else "class"
    if inspect.isroutine(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
        return "func"
    return "data"


def _attr_doc(modname, name):
    try:
        return ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name))
    except PycodeError:
        return None


def _borrowed_doc(modname, name, obj):
    """The ``#:`` comment of a constant that ``modname`` re-exports from a private module (autodoc
    reads comments only from the documented module's own source)."""
    if _attr_doc(modname, name):
        return None
    root = modname.partition(".")[0]
    for other, module in sorted(sys.modules.items()):
        if (other == root or other.startswith(root + ".")) and other != modname \
                and getattr(module, name, None) is obj and (lines := _attr_doc(other, name)):
            return list(lines)
    return None


def _short_value(obj):
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - any failing repr just hides the value
        return False
    return len(text) <= _SHORT_VALUE and " at 0x" not in text and "\n" not in text


def _titles(body):
    titles = {}
    for line in body.splitlines():
        line = line.strip()
        if not line:
            continue
        modname, sep, title = line.partition(":")
        if not sep or not title.strip():
            logger.warning("public-api: expected 'module: Title', got %r", line)
            continue
        titles[modname.strip()] = title.strip()
    return titles


def generate(package_name, titles=None):
    """The reStructuredText of the API reference of ``package_name`` (sections underlined with ``-``)."""
    titles = titles or {}
    walk = public_modules(package_name)
    owners = _owners(walk)
    order = [m for m in titles if any(module.__name__ == m for module, _ in walk)]
    rank = {m: i for i, m in enumerate(order)}
    root, rest = walk[0], walk[1:]
    rest.sort(key=lambda item: rank.get(item[0].__name__, len(rank)))  # stable: __all__ order otherwise

    out = []
    for module, entries in [root, *rest]:
        modname = module.__name__
        title = titles.get(modname, f"``{modname}``")
        out += [title, "-" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
        elsewhere = []
        for name, obj in entries:
            owner = owners.get(id(obj), (modname, name)) if not isinstance(obj, _PRIMITIVES) else (modname, name)
            if owner != (modname, name):
                elsewhere.append(f":py:{_role(obj)}:`{name} <{owner[0]}.{owner[1]}>`")
                continue
            directive = _directive(obj)
            out.append(f".. {directive}:: {modname}.{name}")
            if directive == "autodata" and not _short_value(obj):
                out.append("   :no-value:")
            out.append("")
            if directive == "autodata" and (lines := _borrowed_doc(modname, name, obj)):
                out += ["   " + line if line.strip() else "" for line in lines] + [""]
        if elsewhere:
            out += [f"Also importable from ``{modname}``, documented with the module that defines it: "
                    + ", ".join(elsewhere) + ".", ""]
    return "\n".join(out) + "\n"


def _source_read(app, docname, source):
    text = source[0]
    if ".. public-api::" not in text:
        return

    def replace(match):
        return generate(match.group("package"), _titles(match.group("body"))) + "\n"

    source[0] = _BLOCK.sub(replace, text)


def _always_reread(app, env, added, changed, removed):
    # the page depends on every __all__ of the package, which Sphinx does not track
    return [docname for docname in env.found_docs
            if ".. public-api::" in _read(env.doc2path(docname))]


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def _defining_class(function):
    holder = sys.modules.get(getattr(function, "__module__", None) or "")
    path = function.__qualname__.split(".")[:-1]
    if not path or "<locals>" in path:
        return None
    for part in path:
        holder = getattr(holder, part, None)
    return holder if inspect.isclass(holder) else None


def _skip_member(app, what, name, obj, skip, options):
    """Methods without a docstring of their own: hide an override of another library's method (its
    docstring, say ``torch.nn.Module.forward``'s, would be borrowed), show any other (a public
    method such as ``unit_parts`` is API even undocumented: its signature at least)."""
    if what != "class" or name.startswith("_") or not inspect.isfunction(obj) or (obj.__doc__ or "").strip():
        return None
    cls = _defining_class(obj)
    if cls is None:
        return None
    root = cls.__module__.partition(".")[0]
    for base in cls.__mro__[1:]:
        if name in vars(base):
            return True if base.__module__.partition(".")[0] != root else None
    return False


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("source-read", _source_read)
    app.connect("env-get-outdated", _always_reread)
    app.connect("autodoc-skip-member", _skip_member)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
