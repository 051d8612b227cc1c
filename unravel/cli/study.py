"""``unravel study``: run or list the studies; demo runs the quickstart."""

from __future__ import annotations

from .options import _count

__all__: list = []


def _cmd_study_list(args):
    import yaml

    from .. import study

    for name, path in sorted(study.list_studies().items()):
        title = (yaml.safe_load(path.read_text()) or {}).get("title", "")
        print(f"{name:20s} {title}")
    return 0


def _cmd_study_run(args):
    import json

    from .. import study

    folder = study.run_study(args.study, out=args.out, quick=args.quick, device=args.device, seed=args.seed,
                             seeds=getattr(args, "seeds", None), progress=not args.no_progress,
                             cache=not getattr(args, "no_cache", False))
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("quick"):
        print("smoke run of the pipeline (--quick): tiny models, one seed; its verdicts are not evidence")
    for c in summary["claims"]:
        lo, hi = ("n/a" if v is None else f"{v:.3g}" for v in c["ci"])
        est = "n/a" if c["estimate"] is None else f"{c['estimate']:.3g}"
        print(f"[{c['verdict']:>12s}] {c['statement']}: {est} [{lo}, {hi}] ({c['direction']} {c['margin']:g}"
              f"{'; ' + c['why'] if c['verdict'] == 'inconclusive' else ''})")
    for c in summary.get("checks", []):
        state = {"supported": "passed", "contradicted": "FAILED"}.get(c["verdict"], "not settled")
        print(f"[check {state:>11s}] {c['statement']}")
    print(f"results: {folder}  (report: {folder / 'report.md'})")
    return 0


def _cmd_study_preregister(args):
    from .. import study
    from ..study.prereg import write_preregistration
    from ..study.runner import spec_file

    path = spec_file(args.study)
    if path is None:
        from ..errors import SpecError

        raise SpecError(f"no spec file for study {args.study!r}; studies: {', '.join(study.list_studies())}")
    spec = study.load_spec(path)
    if not spec.get("claims"):
        from ..errors import SpecError

        raise SpecError(f"{path}: the spec defines no claims (a 'claims:' section) to pre-register")
    out = write_preregistration(spec, path)
    print(f"pre-registration of {spec['name']} -> {out} (commit it before the run: it is the contract)")
    return 0


def _cmd_demo(args):
    import torch

    # The demo's nets are tiny: one thread is as fast as two, and on a busy machine a second
    # thread spins waiting for the first (the demo once took 6.7 CPU-minutes that way).
    torch.set_num_threads(args.threads)
    args.study, args.seed, args.device = "quickstart", None, "cpu"
    return _cmd_study_run(args)


# ------------------------------------------------------------------------------------------
# The parser


def add(sub) -> None:
    """The ``study`` command's parser."""
    q = sub.add_parser("study", help="run or list the studies that test published claims")
    ssub = q.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    r = ssub.add_parser("run", help="run a study by name, YAML spec file or study folder")
    r.add_argument("study", help="a study name (see `unravel study list`), a path to a YAML spec, or a study folder "
                   "(its specs and the code that registers its kind)")
    r.add_argument("--quick", action="store_true", help="tiny models and few epochs: a smoke run")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    r.add_argument("--out", default="results", help="parent folder of the results (default results)")
    seeds = r.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_count(0), default=None, help="run this one training seed instead of the spec's")
    seeds.add_argument("--seeds", type=_count(0), nargs="+", default=None, metavar="SEED",
                       help="run these training seeds instead of the spec's")
    r.add_argument("--no-cache", action="store_true", help="train every model again instead of reusing the models "
                   "trained before with the same settings and code (kept in $UNRAVEL_CACHE or ~/.cache/unravel)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_study_run)
    pre = ssub.add_parser("preregister", help="write a study's pre-registration (its claims' definitions, seeds, "
                          "correction and analysis, hashed) beside its spec")
    pre.add_argument("study", help="a study name or a path to its YAML spec")
    pre.set_defaults(func=_cmd_study_preregister)
    lst = ssub.add_parser("list", help="list the shipped studies")
    lst.set_defaults(func=_cmd_study_list)


def add_demo(sub) -> None:
    """The ``demo`` command's parser."""
    q = sub.add_parser("demo", help="run the quickstart study (what `make demo` runs)")
    q.add_argument("--quick", action="store_true", help="a smoke run: tiny models, one epoch")
    q.add_argument("--out", default="results", help="parent folder of the results (default results)")
    q.add_argument("--seeds", type=_count(0), nargs="+", default=None, metavar="SEED",
                   help="training seeds (default: the quickstart spec's)")
    q.add_argument("--no-cache", action="store_true", help="train every model again")
    q.add_argument("--threads", type=_count(1), default=1,
                   help="CPU threads for torch (default 1: the demo's nets are too small to gain from more)")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_demo)
