"""``unravel paths``: gradient magnitude by path length on a probe batch."""

from __future__ import annotations

from .options import _count, _new_file, _prepare, _setup, _write, _model_args

__all__: list = []


def _cmd_paths(args):
    from .. import attribution

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


def add(sub) -> None:
    """The ``paths`` command's parser."""
    q = sub.add_parser("paths", help="gradient magnitude by path length on a probe batch")
    _model_args(q, 5)
    q.add_argument("--method", choices=["exact", "sample"], default="exact")
    q.add_argument("--wrt", choices=["input", "units"], default="input")
    q.add_argument("--batch", type=_count(1), default=128, help="probe batch size (default 128)")
    q.add_argument("--num-samples", type=_count(1), default=100, help="paths per length for --method sample")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    q.set_defaults(func=_cmd_paths)
