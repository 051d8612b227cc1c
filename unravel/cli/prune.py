"""``unravel prune MODEL``: choose units to remove under a budget and write the smaller model."""

from __future__ import annotations

import sys

from .._io import check_folder, write_atomic, write_text

from ..errors import ArgumentError
from .figures import add_plot, draw
from .loading import add_model_args, load
from .options import _count, _nonnegative_float, _positive_float

__all__: list = []


def _cmd_prune(args):
    from .. import prune, train
    from ..units import find_units

    out = check_folder(args.out, "--out folder")  # before pruning, not after
    if args.budget is None and args.max_units is None:
        raise ArgumentError("give --budget (the largest increase of --metric allowed), --max-units, or both")
    budget = float("inf") if args.budget is None else args.budget
    run = load(args)
    model, d, tokens = run.model, run.data, run.tokens
    print(f"selecting on the {run.split} split ({len(run.scored):,}); the report's test numbers are on the test "
          f"split ({len(d.test):,})" + (": the same data, so optimistic (--split train selects on other data)"
                                        if run.split in ("test", "all") else ""), file=sys.stderr)
    sel = prune.select(model, run.scored, budget=budget, strategy=args.strategy, metric=args.metric,
                       group="module" if args.group == "layer" else "unit", max_units=args.max_units,
                       batch_size=args.batch_size, next_token=tokens, progress=not args.no_progress)
    pruned = prune.remove(model, sel.units)
    test = {"before": prune.quality(model, d, "test", next_token=tokens, batch_size=args.batch_size)}
    test["after"] = prune.quality(pruned, d, "test", next_token=tokens, batch_size=args.batch_size)
    healing = None
    if args.heal:
        h = prune.heal(pruned, d, steps=args.heal, lr=args.heal_lr, next_token=tokens, seed=args.seed,
                       progress=not args.no_progress)
        healing = (h, test["after"], prune.quality(pruned, d, "test", next_token=tokens))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "selection.csv", lambda tmp: sel.frame.to_csv(tmp, index=False), "selection")
    if prune.hf.is_hf(pruned):
        pruned.save_pretrained(out / "model")
        saved = out / "model"
    else:
        meta = {"model": args.model, "data": args.data, "depth": args.depth, "width": args.width, "seed": args.seed,
                "removed": list(sel.names), "strategy": args.strategy, "metric": args.metric, "budget": args.budget}
        saved = train.save(pruned, out / "model.pt", {k: v for k, v in meta.items() if v is not None})
    units = find_units(model)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    write_text(out / "report.md", _prune_report(args, run, sel, len(units), before, after, saved, test, healing),
               "report")
    last = sel.frame[sel.frame.units_removed == len(sel.units)].iloc[-1] if sel.units else sel.frame.iloc[0]
    limit = "" if args.budget is None else f" (budget +{args.budget:g})"
    print(f"removed {len(sel.units)} of {len(units)} units ({', '.join(sel.names) or 'none'}): {args.metric} on the "
          f"{run.split} split {sel.baseline[args.metric]:.4g} -> {last[args.metric]:.4g}{limit}; test error "
          f"{test['before']['error']:.4g} -> {test['after']['error']:.4g}; parameters {before:,} -> {after:,}")
    if healing:
        print(_healing_line(*healing))
    if args.plot:
        draw("prune", sel.frame, args.plot, metric=args.metric,
             reference=None if args.budget is None else sel.baseline[args.metric] + args.budget)
    print(f"wrote {saved}, {out / 'selection.csv'} and {out / 'report.md'}")
    return 0


def _healing_line(h, before, after) -> str:
    return (f"healed {h.steps} steps (Adam, lr {h.lr:g}, batch {h.batch_size}) in {h.seconds:.1f} s: training loss "
            f"{h.loss_before:.4g} -> {h.loss_after:.4g} (first {h.examples} training examples); test error "
            f"{before['error']:.4g} -> {after['error']:.4g}, test loss {before['loss']:.4g} -> {after['loss']:.4g}")


def _prune_report(args, run, sel, n_units, before, after, saved, test, healing=None) -> str:
    f = sel.frame
    budget = "none (--max-units only)" if args.budget is None else f"+{sel.budget:g} over the unlesioned model"
    cols = ["step", "units_removed", "removed", "error", "loss", "within_budget", "score"]
    lines = [f"# unravel prune: {args.model} on {args.data}", "",
             f"- strategy: `{sel.strategy}` (candidates: {args.group}s), metric: {sel.metric}, budget: {budget}",
             f"- selected on the {run.split} split ({len(run.scored):,}); the table below is on it",
             f"- unlesioned: error {sel.baseline['error']:.4f}, loss {sel.baseline['loss']:.4f}",
             f"- test split ({len(run.data.test):,}): error {test['before']['error']:.4f} -> "
             f"{test['after']['error']:.4f}, loss {test['before']['loss']:.4f} -> {test['after']['loss']:.4f}",
             f"- removed {len(sel.units)} of {n_units} units: {', '.join(sel.names) or 'none'}",
             f"- parameters: {before:,} -> {after:,} ({after / max(before, 1):.1%})",
             f"- pruned model: `{saved}`" + (" (load it with `unravel.prune.load(path, model)`, `model` the "
                                            "unpruned architecture)" if str(saved).endswith(".pt") else
                                            " (load it with `unravel.prune.from_pretrained(path)`)"),
             *([f"- {_healing_line(*healing)}; the saved model is the healed one"] if healing else []),
             "", "## Quality against units removed (before healing)" if healing else "## Quality against units removed",
             "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in f.iterrows():
        cells = [str(r.step), str(r.units_removed), r.removed or "-", f"{r.error:.4f}", f"{r.loss:.4f}",
                 "yes" if r.within_budget else "no", "" if r.score != r.score else f"{r.score:.4g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add(sub) -> None:
    """The ``prune`` command's parser."""
    q = sub.add_parser("prune", help="choose units to remove under an error budget and write the smaller model")
    add_model_args(q)
    q.add_argument("--budget", type=_nonnegative_float, default=None,
                   help="the largest increase of --metric over the unlesioned model (0.01: one point of error); "
                        "needed unless --max-units is given")
    q.add_argument("--strategy", choices=["greedy", "block_influence", "angular", "gradient_share"], default="greedy")
    q.add_argument("--metric", choices=["error", "loss"], default="error")
    q.add_argument("--group", choices=["unit", "layer"], default="unit",
                   help="candidates: single units, or all units of one layer (a transformer layer)")
    q.add_argument("--max-units", type=_count(1), default=None, help="remove at most this many candidates")
    q.add_argument("--batch-size", type=_count(1), default=256)
    q.add_argument("--heal", type=_count(0), default=0, metavar="STEPS",
                   help="fine-tune the pruned model for this many Adam steps on the training split (default 0: none)")
    q.add_argument("--heal-lr", type=_positive_float, default=1e-4, help="learning rate of --heal (default 1e-4)")
    q.add_argument("--out", default="pruned", help="folder for the pruned model, selection.csv and report.md "
                                                   "(default pruned)")
    add_plot(q)
    q.set_defaults(func=_cmd_prune)
