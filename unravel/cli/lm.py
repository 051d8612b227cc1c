"""``unravel lm``: the language model trained here."""

from __future__ import annotations

from .options import _count

__all__: list = []


def _cmd_lm_train(args):
    from .. import lm
    from .._io import check_folder

    if args.save:
        check_folder(args.save, "--save folder")  # before training, not after
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


def add(sub) -> None:
    """The ``lm`` command's parser."""
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
