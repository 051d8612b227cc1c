"""``unravel paths MODEL``: gradient magnitude by path length on a probe batch (Veit et al. Fig. 6)."""

from __future__ import annotations

from .figures import add_plot, draw
from .loading import add_model_args, load
from .options import _count, _new_file, _write
from .scoring import add_group, attribution_options

__all__: list = []


def _cmd_paths(args):
    from .. import attribution

    run = load(args)
    x, y = run.batch(args.batch)
    options = attribution_options(args, run)
    res = attribution.path_length_gradients(run.model, x, y, method=args.method, wrt=args.wrt, num_samples=args.num_samples,
             generator=args.seed, progress=not args.no_progress, **options)
    eff = res.effective_paths(0.9)
    _write(res.to_frame(), args.out)
    print(f"gradient-weighted mean length {res.mean_length:.2f} of {len(res.lengths) - 1} units; 90% of the "
          f"magnitude in lengths {eff['lengths'][0]}..{eff['lengths'][1]} ({eff['fraction_of_paths']:.3g} of all paths)")
    if args.plot:
        draw("paths", res.to_frame(), args.plot, window=eff["lengths"])
    return 0


def add(sub) -> None:
    """The ``paths`` command's parser."""
    q = sub.add_parser("paths", help="gradient magnitude by path length on a probe batch (Veit et al. Fig. 6)")
    add_model_args(q)
    q.add_argument("--method", choices=["exact", "sample"], default="exact")
    q.add_argument("--wrt", choices=["input", "units"], default="input")
    add_group(q)
    q.add_argument("--batch", type=_count(1), default=128,
                   help="probe batch: the first this many examples of --split (default 128)")
    q.add_argument("--num-samples", type=_count(1), default=100, help="paths per length for --method sample")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    add_plot(q)
    q.set_defaults(func=_cmd_paths)
