"""``unravel lesion``: a lesion study on a trained model."""

from __future__ import annotations

from ..errors import ArgumentError
from .options import _count, _ks, _new_file, _prepare, _setup, _write, _model_args

__all__: list = []


def _cmd_lesion(args):
    from .. import data as data_mod, sweeps
    from ..units import find_units

    if args.kind != "delete_each":  # sizes checked before training, not after
        sweeps.run.check_count(len(args.ks) * args.samples_per_k)
        if args.kind == "reorder_random" and max(args.ks) > sweeps.lesions.MAX_SWAPS:
            raise ArgumentError(f"--ks: at most {sweeps.lesions.MAX_SWAPS:,} swaps per variant")
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
        frame = sweeps.delete_each(model, d, **common)
    else:
        fn = sweeps.delete_random if args.kind == "delete_random" else sweeps.reorder_random
        frame = fn(model, d, ks=list(args.ks), samples_per_k=args.samples_per_k, seed=args.seed, **common)
    _write(frame, args.out)
    return 0


def add(sub) -> None:
    """The ``lesion`` command's parser."""
    q = sub.add_parser("lesion", help="a lesion study (Veit et al. Fig. 3 and 5) on a trained model")
    _model_args(q, 5)
    q.add_argument("--kind", choices=["delete_each", "delete_random", "reorder_random"], default="delete_each")
    q.add_argument("--ks", type=_ks, default=(1, 2, 4, 8), help="comma-separated k values (default 1,2,4,8)")
    q.add_argument("--samples-per-k", type=_count(1), default=5)
    q.add_argument("--results", default=None, help="CSV to append finished variants to (resumable)")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_lesion)
