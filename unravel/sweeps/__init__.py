"""Lesion sweeps: delete each unit, delete k random units, swap k random pairs (Veit et al. 2016,
Fig. 3 and 5), as tidy frames with one row per variant and a baseline row.

The engine computes the unlesioned states of a batch once and resumes each variant from the state
before its first changed unit; variants that resume at the same place share one forward, stacked
on the batch dimension. That assumes the model couples no samples in eval mode (true of BN in eval
mode, convolutions, attention within a sequence); it does not check it. Results equal the naive
loop (copy, lesion, full forward) to float tolerance; ``method="naive"`` is that loop. Sweeps run
on the model as it is: inside a lesion of the same model they refuse (a sweep's variants are
lesions of their own).

One module per job: :mod:`~unravel.sweeps.engine` (shared prefixes, stacked variants),
:mod:`~unravel.sweeps.run` (a sweep over variants, resumable and shardable;
:func:`run_variants` for variants of your own) and :mod:`~unravel.sweeps.lesions` (the lesion
studies).
"""

from .engine import Variant
from .lesions import delete_each, delete_random, reorder_random
from .run import COLUMNS, run_variants

__all__ = ["delete_each", "delete_random", "reorder_random", "run_variants", "Variant", "COLUMNS"]
