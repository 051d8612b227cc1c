"""The ``unravel`` command line: ``unravel demo``, ``unravel units``, ``unravel train``.

Bad input is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "MODELS"]


def _model(name: str, data):
    """Build a named reference model sized for ``data``."""
    from . import models

    shape = data.input_shape
    flat = 1
    for s in shape:
        flat *= s
    builders = {
        "resmlp": lambda: models.resmlp(flat, data.num_classes, width=64, depth=6),
        "plain_mlp": lambda: models.plain_mlp(flat, data.num_classes, width=64, depth=6),
        "resnet1d": lambda: models.resnet1d(num_classes=data.num_classes, in_channels=shape[0]),
        "plain1d": lambda: models.plain1d(num_classes=data.num_classes, in_channels=shape[0]),
        "resnet_cifar20": lambda: models.resnet_cifar(20, num_classes=data.num_classes, in_channels=shape[0]),
        "plain_cifar20": lambda: models.plain_cifar(20, num_classes=data.num_classes, in_channels=shape[0]),
    }
    if name not in builders:
        raise _UsageError(f"unknown model {name!r}; available: {', '.join(builders)}")
    needs = {"resnet1d": 2, "plain1d": 2, "resnet_cifar20": 3, "plain_cifar20": 3}
    if name in needs and len(shape) != needs[name]:
        raise _UsageError(f"model {name!r} needs inputs with {needs[name] - 1} spatial dimension(s); "
                          f"dataset {data.name!r} has input shape {shape}")
    return builders[name]()


MODELS = ("resmlp", "plain_mlp", "resnet1d", "plain1d", "resnet_cifar20", "plain_cifar20")


class _UsageError(Exception):
    pass


def _data(name: str, root: str | None):
    from . import data

    if name not in data.DATASETS:
        raise _UsageError(f"unknown dataset {name!r}; available: {', '.join(data.DATASETS)}")
    if name == "cifar10":
        if not root:
            raise _UsageError("dataset 'cifar10' needs --data-root, the folder of the python batch files")
        try:
            return data.cifar10(root)
        except FileNotFoundError as e:
            raise _UsageError(str(e)) from None
    return data.load(name)


def _train(args) -> int:
    import torch

    from . import train, units

    data = _data(args.data, args.data_root)
    torch.manual_seed(args.seed)
    model = _model(args.model, data)
    print(f"{args.model} on {data!r}")
    print(units.unit_table(model).to_string(index=False))
    hist = train.fit(model, data, epochs=args.epochs, optimizer=args.optimizer, seed=args.seed,
                     progress=not args.no_progress)
    last = hist[-1]
    print(f"after {last['epoch']} epochs: train error {last['train_error']:.3f}, "
          f"test error {last['test_error']:.3f} (chance {1 - 1 / data.num_classes:.3f})")
    if args.save:
        train.save(model, args.save, {"model": args.model, "data": args.data, "epochs": args.epochs})
        print(f"saved {args.save}")
    return 0


def _units(args) -> int:
    from . import units

    data = _data(args.data, args.data_root)
    print(units.unit_table(_model(args.model, data)).to_string(index=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unravel", description="The unraveled-ensemble analysis of residual networks.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, model="resmlp", epochs=None):
        q.add_argument("--model", default=model, help=f"one of: {', '.join(MODELS)} (default {model})")
        q.add_argument("--data", default="mnist1d", help="mnist1d, digits, synthetic or cifar10 (default mnist1d)")
        q.add_argument("--data-root", default=None, help="folder of local files (cifar10)")
        if epochs is not None:
            q.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
            q.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--save", default=None, help="write a checkpoint here")
            q.add_argument("--no-progress", action="store_true", help="no progress bar")

    q = sub.add_parser("demo", help="train a small residual MLP on MNIST-1D; print its units and test error")
    common(q, epochs=15)
    q.set_defaults(func=_train)
    q = sub.add_parser("train", help="train a reference model on a dataset")
    common(q, epochs=10)
    q.set_defaults(func=_train)
    q = sub.add_parser("units", help="print the residual units of a reference model")
    common(q)
    q.set_defaults(func=_units)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (_UsageError, ValueError, FileNotFoundError) as e:
        print(f"unravel: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
