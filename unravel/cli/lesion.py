"""``unravel lesion MODEL``: a lesion study (Veit et al. Fig. 3 and 5) on a model."""

from __future__ import annotations

from ..errors import ArgumentError
from .figures import add_plot, draw
from .loading import add_model_args, load
from .options import _count, _ks, _new_file, _write
from .scoring import add_group, sweep_options

__all__: list = []


def _cmd_lesion(args):
    from .. import sweeps

    if args.kind != "delete_each":  # sizes checked before training, not after
        sweeps.run.check_count(len(args.ks) * args.samples_per_k)
        if args.kind == "reorder_random" and max(args.ks) > sweeps.lesions.MAX_SWAPS:
            raise ArgumentError(f"--ks: at most {sweeps.lesions.MAX_SWAPS:,} swaps per variant")
    run = load(args, before_training=lambda model: _check_ks(args, model))
    common = dict(progress=not args.no_progress, results=args.results, **sweep_options(args, run))
    if args.kind == "delete_each":
        frame = sweeps.delete_each(run.model, run.scored, **common)
    else:
        fn = sweeps.delete_random if args.kind == "delete_random" else sweeps.reorder_random
        frame = fn(run.model, run.scored, ks=list(args.ks), samples_per_k=args.samples_per_k, seed=args.seed, **common)
    _write(frame, args.out)
    if args.plot:
        draw(args.kind, frame, args.plot)
    return 0


def _check_ks(args, model) -> None:
    from ..units import find_units
    from ..units.groups import unit_groups

    if args.kind == "delete_random":  # k deleted groups need k groups
        n = len(unit_groups(find_units(model), args.group))
        what = "units" if args.group == "unit" else f"groups ({args.group})"
        if max(args.ks) > n:
            raise ArgumentError(f"--ks {','.join(map(str, args.ks))}: model {args.model!r} has {n} {what}, so each "
                                f"k must lie in 1..{n}")


def add(sub) -> None:
    """The ``lesion`` command's parser."""
    q = sub.add_parser("lesion", help="a lesion study (Veit et al. Fig. 3 and 5): delete or reorder units and "
                                      "measure the error")
    add_model_args(q)
    q.add_argument("--kind", choices=["delete_each", "delete_random", "reorder_random"], default="delete_each")
    add_group(q)
    q.add_argument("--ks", type=_ks, default=(1, 2, 4, 8), help="comma-separated k values (default 1,2,4,8)")
    q.add_argument("--samples-per-k", type=_count(1), default=5)
    q.add_argument("--results", default=None, help="CSV to append finished variants to (resumable)")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    add_plot(q)
    q.set_defaults(func=_cmd_lesion)
