"""Copy a finished study's results folder into the docs, with its verdict table.

    python docs/publish_study.py results/full/veit-lesion/<stamp> [more folders...]
    python docs/publish_study.py --readme     # only rewrite the README's verdict table
    python docs/publish_study.py FOLDER --revision REV   # a run made from a copy without git


Each folder goes to ``docs/_static/studies/<study>/``: figures (PNG), tidy CSVs, per-example
outcomes (``*_items.npz``), ``summary.json``, ``config.yaml``, ``environment.json``, ``report.md``,
and ``verdicts.md``, the table of claims that the study's narrative page (``studies/<folder>/<study>.md``,
included by ``docs/studies.md``) includes (the paper's figure beside ours). It refuses a quick run and a run whose code had local changes, so that every number
in the docs comes from a committed revision. After publishing it rewrites the README's verdict
table (between the ``verdicts:start``/``verdicts:end`` markers) from every published
``summary.json``, so the README and the studies page never disagree (``tests/test_docs.py``
checks it). A run made from a copy of the tree without git (a GPU machine, a cluster node)
records no revision (or the stale one of a copied ``.git``), but always its ``source_hash``:
``--revision REV`` publishes it once the sources of ``unravel/`` at commit REV hash the same,
and records REV with how it was checked.

A run must carry its pre-registration record (``summary.json``'s ``preregistration: {commit,
hash, matches}``): the script refuses a run whose claim definitions differ from the study's
pre-registration, or whose pre-registration was not committed before the run's revision (an
ancestor of it, or the same commit). The tables list claims only; checks stay in the report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KEEP = ("*.png", "*.csv", "*_items.npz", "summary.json", "config.yaml", "environment.json", "report.md")


def _fmt(v):
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def check_ids() -> set:
    """The ids the studies' specs define as checks (``check: true``): how a summary written before
    checks were kept apart is read."""
    ids = set()
    for spec in (HERE.parent / "studies").glob("*/*.yaml"):
        for cid, d in ((yaml.safe_load(spec.read_text()) or {}).get("claims") or {}).items():
            if (d or {}).get("check"):
                ids.add(cid)
    return ids


def claims_only(summary: dict) -> list:
    """The claims of a summary, without its checks (what holds by construction: not evidence)."""
    checks = check_ids()
    return [c for c in summary["claims"] if c.get("kind", "claim") == "claim" and c["id"] not in checks]


def _verdict(c) -> str:
    holm = c.get("verdict_holm")
    return f"**{c['verdict']}**" + (f" (Holm: {holm})" if holm and holm != c["verdict"] else "")


def verdict_table(summary: dict, env: dict, folder: Path | None = None) -> str:
    """The Markdown table of a study's claims."""
    lines = ["| claim | the paper | ours: estimate [95% CI] | claim holds if | verdict |", "|---|---|---|---|---|"]
    for c in claims_only(summary):
        p = c.get("paper") or {}
        paper = (f"**{_fmt(p['value'])}**; " if p.get("value") is not None else "") + p.get("note", "n/a")
        if p.get("where"):
            paper += f" ({p['where'].split(', ')[-1] if ', ' in p['where'] else p['where']})"
        ours = f"{c['effect']}: {_fmt(c['estimate'])} [{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]"
        why = "" if c["verdict"] != "inconclusive" else f" ({c['why']})"
        cells = [c["statement"], paper, ours, f"{c['direction']} {c['margin']:g}", f"{_verdict(c)}{why}"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    rev = (env.get("git_revision") or "unknown")[:10]
    took = f"; this run {summary['seconds'] / 60:.0f} min" if summary.get("seconds") else ""
    train = Path(folder or ".") / "train.csv"
    if folder is not None and train.is_file():
        import pandas as pd

        hist = pd.read_csv(train)
        # epoch rows hold each epoch's seconds; step rows (a language model's) the seconds so far
        seconds = hist.groupby("seed").seconds.max().sum() if "step" in hist else hist.seconds.sum()
        took += (f"; training its models took {seconds / 60:.0f} min, recorded when each was "
                 "trained (models trained before with the same settings and code come from the cache)")
    where = (f"{env['cuda']} GPU ({env.get('cpu_count')} CPU cores)" if env.get("cuda") else
             f"{env.get('device')} ({env.get('cpu_count')} cores, torch threads: {env.get('torch_threads')})")
    lines += ["", f"*Seeds {summary['seeds']}; {where}{took}; unravel revision `{rev}`; run {env.get('date')}.*", ""]
    return "\n".join(lines)


def committed_source_hash(revision: str) -> tuple[str, str]:
    """``(full commit, source hash)`` of ``unravel/`` and ``studies/`` at a commit, hashed as
    ``unravel.study.environment.source_hash`` hashes a working copy."""
    sys.path.insert(0, str(HERE.parent))
    from unravel.study.environment import hash_sources

    root = HERE.parent
    try:
        full = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        # studies/ joined unravel/ as a source tree with the house layout; older commits have none
        trees = [p for p in ("unravel", "studies")
                 if subprocess.run(["git", "cat-file", "-e", f"{full}:{p}"], cwd=root, capture_output=True).returncode == 0]
        tar = subprocess.run(["git", "archive", "--format=tar", full, *trees], cwd=root, check=True,
                             capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"--revision {revision!r}: not a commit of this repository ({e.stderr.strip()})") from None
    import io

    items = []
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.endswith((".py", ".yaml")) and "__pycache__" not in m.name:
                top, rel = m.name.split("/", 1)
                items.append((rel if top == "unravel" else f"{top}/{rel}", t.extractfile(m).read()))
    return full, hash_sources(items)


def _provenance(folder: Path, env: dict, revision: str | None, force: bool) -> dict:
    """The environment to publish. With ``revision``, the run's recorded ``source_hash`` must
    equal that commit's: the sources decide, not the run's own git reading (a copy of the tree
    sent to another machine can carry an older ``.git``, or none)."""
    if revision is None:
        return env
    recorded = env.get("source_hash")
    if recorded is None:
        if (env.get("git_revision") or "").startswith(revision) and env.get("git_dirty") is False:
            return env
        raise SystemExit(f"{folder}: the run recorded neither a git revision nor a source_hash; it cannot be tied "
                         f"to {revision}")
    full, committed = committed_source_hash(revision)
    if committed != recorded and not force:
        raise SystemExit(f"{folder}: its sources (source_hash {recorded[:12]}) differ from unravel/ at {full[:10]} "
                         f"({committed[:12]}); give the commit the run was made from")
    seen = env.get("git_revision")
    return {**env, "git_revision": full, "git_dirty": committed != recorded,
            "revision_from": f"source_hash of unravel/ equals that of commit {full[:10]} (checked when published)"
                             + (f"; the run itself read git revision {seen[:10]}"
                                f"{' with local changes' if env.get('git_dirty') else ''} from the copy it ran in"
                                if seen and not seen.startswith(full) else "")}


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)


def check_preregistration(folder: Path, summary: dict, env: dict) -> None:
    """Refuse a run without a matching pre-registration committed before the run's revision."""
    p = summary.get("preregistration")
    if not p:
        raise SystemExit(f"{folder}: the run records no pre-registration; run `unravel study preregister NAME`, "
                         "commit the file, and run the study again")
    if not p.get("matches"):
        raise SystemExit(f"{folder}: the run's claim definitions (hash {str(p.get('hash'))[:12]}) differ from the "
                         "study's pre-registration: a change after seeing data is an amendment (date, reason) in the "
                         "spec, pre-registered again before the run")
    rev = env.get("git_revision")
    if not p.get("commit") or not rev:
        raise SystemExit(f"{folder}: the pre-registration was not committed when the run was made")
    if _git("merge-base", "--is-ancestor", p["commit"], rev).returncode != 0:
        raise SystemExit(f"{folder}: the pre-registration commit {p['commit'][:10]} is not an ancestor of the run's "
                         f"revision {rev[:10]}: it was not committed before the run")


def publish(folder: Path, force: bool = False, revision: str | None = None) -> Path:
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    env = json.loads((folder / "environment.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    if config.get("quick") and not force:
        raise SystemExit(f"{folder}: a quick run; the docs show full runs (--force to publish anyway)")
    if not env.get("git_revision") and revision is None and not force:
        raise SystemExit(f"{folder}: the run recorded no git revision (made from a copy without git); give "
                         "--revision COMMIT, the commit it was made from (its source_hash is checked)")
    if env.get("git_dirty") and env.get("source_hash") and revision is None and not force:
        raise SystemExit(f"{folder}: run with local changes to the code, or from a copy whose .git is not its "
                         "revision; give --revision COMMIT if it was made from a commit (its source_hash is checked)")
    env = _provenance(folder, env, revision, force)
    if env.get("git_dirty") and not force:
        raise SystemExit(f"{folder}: run with local changes to the code; re-run on a committed revision")
    if not force:
        check_preregistration(folder, summary, env)
    dest = HERE / "_static" / "studies" / summary["study"]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for pattern in KEEP:
        for f in folder.glob(pattern):
            shutil.copy2(f, dest / f.name)
    (dest / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    if env.get("revision_from"):  # the report names the revision the run read; name the one checked
        report = dest / "report.md"
        if report.is_file():
            lines = [f"Code: git revision `{env['git_revision']}`: {env['revision_from']}." if line.startswith("Code: ")
                     else line for line in report.read_text().splitlines()]
            report.write_text("\n".join(lines) + "\n")
    (dest / "verdicts.md").write_text(verdict_table(summary, env, folder))
    return dest


#: The order of the studies in the README's table (others follow, by name).
ORDER = ("veit-lesion", "veit-paths", "lm-ensemble", "lm-ensemble-gpu", "ssf-dynamics", "norm-preservation")
START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"


def readme_table(studies: Path | None = None) -> str:
    """The README's table of every published study's claims (one row per claim)."""
    studies = Path(studies or HERE / "_static" / "studies")
    folders = sorted((f for f in studies.iterdir() if (f / "summary.json").is_file()),
                     key=lambda f: (ORDER.index(f.name) if f.name in ORDER else len(ORDER), f.name))
    lines = ["| study | claim | estimate [95% CI] | claim holds if | verdict |", "|---|---|---|---|---|"]
    for f in folders:
        summary = json.loads((f / "summary.json").read_text())
        env = json.loads((f / "environment.json").read_text())
        seeds = ", ".join(str(s) for s in summary["seeds"])
        label = f"{summary['study']} (seeds {seeds}; `{(env.get('git_revision') or 'unknown')[:7]}`)"
        for i, c in enumerate(claims_only(summary)):
            cells = [label if i == 0 else "", c["statement"], f"{_fmt(c['estimate'])} [{_fmt(c['ci'][0])}, "
                     f"{_fmt(c['ci'][1])}]", f"{c['direction']} {c['margin']:g}", _verdict(c)]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def update_readme(readme: Path | None = None) -> Path:
    """Rewrite the table between the markers of the README from the published summaries."""
    readme = Path(readme or HERE.parent / "README.md")
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers to put the verdict table between")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{readme_table()}\n{END}{tail}")
    return readme


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--readme", action="store_true", help="only rewrite the README's verdict table")
    parser.add_argument("--force", action="store_true", help="publish a quick or locally changed run anyway")
    parser.add_argument("--revision", default=None, metavar="COMMIT",
                        help="the commit a run without a git revision was made from (its source_hash is checked)")
    args = parser.parse_args(argv)
    if not args.folders and not args.readme:
        parser.error("give the results folders to publish, or --readme")
    for f in args.folders:
        print(f"{f} -> {publish(f, args.force, args.revision)}")
    print(f"verdict table -> {update_readme()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
