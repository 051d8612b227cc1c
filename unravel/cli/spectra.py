"""``unravel spectra MODEL``: singular values of each unit's input-output Jacobian on a probe
batch (norm preservation, Zaeemzadeh et al. TPAMI 2021), summarised per unit."""

from __future__ import annotations

from .figures import add_plot, draw
from .loading import add_model_args, load
from .options import _count, _new_file, _write

__all__: list = []


def _cmd_spectra(args):
    from .. import jacobian

    run = load(args)
    x, _ = run.batch(args.batch)
    frame = jacobian.jacobian_spectra(run.model, x, top=args.top, method=args.method, generator=args.seed,
                                      progress=not args.no_progress)
    summary = jacobian.spectrum_summary(frame)
    _write(summary if args.per_example else _per_unit(summary), args.out)
    if args.plot:
        draw("spectra", summary, args.plot)
    return 0


def _per_unit(summary):
    """The median over examples of each unit's summary."""
    keys = [c for c in ("unit", "name", "kind", "projection") if c in summary.columns]
    values = ["dev", "mean_log", "within", "q05", "q50", "q95"]
    return summary.groupby(keys, sort=False)[[v for v in values if v in summary.columns]].median().reset_index()


def add(sub) -> None:
    """The ``spectra`` command's parser."""
    q = sub.add_parser("spectra", help="singular values of each unit's Jacobian on a probe batch (norm "
                                       "preservation), summarised per unit")
    add_model_args(q)
    q.add_argument("--batch", type=_count(1), default=8,
                   help="probe batch: the first this many examples of --split (default 8)")
    q.add_argument("--top", type=_count(1), default=None,
                   help="only the largest this many singular values (by Lanczos; needed for large units)")
    q.add_argument("--method", choices=["auto", "exact", "lanczos"], default="auto")
    q.add_argument("--per-example", action="store_true", help="one row per unit and example (default: per unit)")
    q.add_argument("--out", type=_new_file, default=None, help="write the frame as CSV (default: print it)")
    add_plot(q)
    q.set_defaults(func=_cmd_spectra)
