"""``unravel train``: train a reference model."""

from __future__ import annotations

from .options import _count, _positive_float, _setup, _model_args

__all__: list = []


def _cmd_train(args):
    from .. import train, units
    from .._io import check_file

    if args.save:
        check_file(args.save, "--save checkpoint")  # before training, not after
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


def add(sub) -> None:
    """The ``train`` command's parser."""
    from .. import train
    q = sub.add_parser("train", help="train a reference model and print its units and test error")
    _model_args(q, None)
    q.add_argument("--epochs", type=_count(1), default=10)
    q.add_argument("--optimizer", choices=train.OPTIMIZERS, default="adam")
    q.add_argument("--lr", type=_positive_float, default=None)
    q.add_argument("--save", default=None, help="write a checkpoint here")
    q.set_defaults(func=_cmd_train)
