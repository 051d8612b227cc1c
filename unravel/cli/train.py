"""``unravel train MODEL``: train a model on a dataset and save it."""

from __future__ import annotations

from .loading import add_model_args, check
from .options import _count, _existing_file, _positive_float

__all__: list = []


def _cmd_train(args):
    from .. import train, units
    from .._io import check_file
    from .loading import load_data
    from .weights import build_with_weights

    options = check(args)
    if args.data in ("token_ids", "stdlib"):
        from ..errors import ArgumentError

        raise ArgumentError(f"unravel train trains classifiers, not on the token ids of {args.data}: train a "
                            "language model with `unravel lm train`")
    if args.save:
        check_file(args.save, "--save checkpoint")  # before training, not after
    d = load_data(args)
    model, _ = build_with_weights(args, d, options)
    print(f"{args.model} on {d!r}")
    print(units.unit_table(model).to_string(index=False))
    hist = train.fit(model, d, epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                     progress=not args.no_progress)
    last = hist[-1]
    print(f"after {last['epoch']} epochs: train error {last['train_error']:.3f}, test error "
          f"{last['test_error']:.3f} (chance {1 - 1 / d.num_classes:.3f})")
    if args.save:
        train.save(model, args.save, {"model": args.model, "data": args.data, "epochs": args.epochs})
        print(f"saved {args.save} (measure it with --checkpoint {args.save})")
    return 0


def add(sub) -> None:
    """The ``train`` command's parser."""
    from .. import train
    q = sub.add_parser("train", help="train a model (a reference model or one of yours) and save it")
    add_model_args(q, analyses=False)
    q.add_argument("--checkpoint", type=_existing_file, default=None, help="start from these weights (fine-tune)")
    q.add_argument("--pretrained", action="store_true", help="torchvision:/timm: start from the library's weights")
    q.add_argument("--epochs", type=_count(1), default=10)
    q.add_argument("--optimizer", choices=train.OPTIMIZERS, default="adam")
    q.add_argument("--lr", type=_positive_float, default=None)
    q.add_argument("--save", default=None, help="write a checkpoint here")
    q.set_defaults(func=_cmd_train)
