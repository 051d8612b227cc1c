"""Pruning: remove residual units physically, and choose which ones to remove under a budget.

A lesion (:func:`unravel.lesion.delete`) deletes units while it is active and leaves the model as
it was. :func:`remove` makes the deletion permanent on a *copy*: the copy holds fewer modules and
parameters and computes, bit for bit, what the model computes inside ``lesion.delete`` with the
same units. :func:`select` says which units to remove: it adds units to the removed set, one
step at a time, while the error (or loss) stays within a budget of the unlesioned model's, by one
of four strategies (a greedy search measured with the lesion-sweep engine, and three one-shot
rankings from the literature on layer pruning; strategies are objects registered by name,
:mod:`~unravel.prune.strategies`). :func:`heal` fine-tunes a pruned model briefly and says what
that cost.

One module per job: :mod:`~unravel.prune.modules` (what a removed unit leaves),
:mod:`~unravel.prune.removal`, :mod:`~unravel.prune.hf` (transformers layer lists, configs and
sublayers, through the adapter's :meth:`~unravel.adapters.Adapter.zero_plan`),
:mod:`~unravel.prune.checkpoint`, :mod:`~unravel.prune.strategies`,
:mod:`~unravel.prune.selection` and :mod:`~unravel.prune.healing`.

How a removed unit is represented (it computes ``post(shortcut(x))``, see :mod:`unravel.units`):

- a block whose units are all removed and whose bypass is the identity (an identity shortcut
  and no ``post``: pre-activation units, pre-LN transformer layers) is dropped from its
  ``nn.Sequential`` or ``nn.ModuleList``, or replaced by an identity :class:`Bypass` where it
  is an attribute;
- a block whose bypass is not the identity is replaced by a :class:`Bypass` holding only the
  shortcut and ``post`` modules (a projection unit keeps its projection, a post-activation unit
  its ReLU, a DenseNet layer becomes :class:`ZeroChannels`);
- in a Hugging Face ``transformers`` model, a layer dropped from the model's layer list updates
  the config (``num_hidden_layers``/``n_layer``, per-layer lists such as ``layer_types``) and the
  layer indices that caches use (``layer_idx``), so that ``save_pretrained`` and
  ``from_pretrained`` give the smaller model. A unit that is part of a layer (its attention or
  MLP sublayer) is removed by replacing that sublayer's modules with a :class:`ZeroBranch`, so
  the residual branch adds nothing; such a model is saved with ``save_pretrained`` and loaded
  with :func:`from_pretrained` (the config lists the replaced sublayers).

What cannot be removed physically raises :class:`~unravel.errors.UnsupportedModelError` naming
the unit and why (a part of a block other than a ``transformers`` layer read from its forward; a
shortcut or ``post`` that is a function, not a module; a ``transformers`` layer whose deletion
leaves LayerNorms). ``lesion.delete`` handles all of them.
"""

from .checkpoint import from_pretrained, load
from .healing import Healing, heal, quality
from .modules import Bypass, BypassChain, ZeroBranch, ZeroChannels
from .removal import remove
from .selection import COLUMNS, Selection, select
from .strategies import STRATEGIES, Angular, Greedy, Ranking, Search, Strategy, register_strategy

__all__ = ["remove", "select", "heal", "Healing", "quality", "Selection", "load", "from_pretrained", "Bypass",
           "BypassChain", "ZeroBranch", "ZeroChannels", "STRATEGIES", "COLUMNS", "Strategy", "Search", "Greedy",
           "Angular", "Ranking", "register_strategy"]
