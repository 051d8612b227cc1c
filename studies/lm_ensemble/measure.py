"""The ``lm-ensemble`` study kind: is a language model an ensemble of shallow paths?

A GPT-2 (``models.lm``, by default the registered ``gpt2_lm``) is trained here on the standard
library's source (``data: stdlib``) once per seed (:func:`unravel.lm.trained`, cached), then on the
held-out test files: every attention and MLP unit deleted, every layer deleted, every pair of
adjacent layers swapped, k random units deleted; next-token loss and error per variant (the fast
lesion engine); and the exact path-length decomposition of the next-token loss gradient. Its
verdicts are in :mod:`.claims` and the Veit claims it shares. Nothing here
checks that the model is large or trained long enough to stand for the papers' LLMs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from unravel import attribution, lm, plots, sweeps
from unravel.errors import SpecError
from unravel.study.schema import choice, integer, list_of, number, section, setting
from unravel.study.stats import trials_from
from unravel.sweeps import Variant
from unravel.units import find_units, unit_groups

from ..veit import lesion_claims, path_claims
from ..veit.papers import VEIT
from . import claims as lm_claims

__all__ = ["LmEnsembleAnalysis", "layer_groups", "run_lm_ensemble"]


@dataclass(frozen=True)
class LmEnsembleAnalysis:
    """``analysis:`` of an ``lm-ensemble`` study: how the language model trains (by steps, see
    :class:`unravel.lm.LMTraining`; the spec's ``train:`` section does not apply and is refused)
    and what is measured."""

    steps: int = setting(1500, integer(1))
    batch_size: int = setting(8, integer(1))
    lr: float = setting(1.5e-3, number(0, open_low=True))
    warmup: int = setting(100, integer(0))
    weight_decay: float = setting(0.1, number(0))
    eval_every: int = setting(250, integer(1))
    #: ``bf16``: bfloat16 autocast in the training steps (a GPU's usual mixed precision); the
    #: measurements always run in float32.
    precision: str = setting("fp32", choice(lambda: lm.PRECISIONS))
    #: Numbers of random units deleted together (k = 1 is every single unit).
    ks: tuple = setting((2, 3, 4, 6, 8), list_of(integer(1), "positive integers"))
    samples_per_k: int = setting(20, integer(1))
    #: Test windows the path-length decomposition runs on.
    probe_size: int = setting(32, integer(1))
    mass: float = setting(0.9, number(0, 1, open_low=True))
    #: The share of paths carrying the gradient is inconclusive for fewer units (Veit et al.
    #: make the claim at 54; with few units any window of lengths holds many of the 2**n paths).
    min_units: int = setting(27, integer(0))
    #: Every claim is inconclusive unless each seed's model reaches this validation loss (bits
    #: per byte): a model that has not learned the text says nothing about its layers.
    max_bits_per_byte: float = setting(3.0, number(0, open_low=True))
    n_boot: int = setting(1000, integer(10))

    @classmethod
    def from_spec(cls, value, path: str, spec) -> LmEnsembleAnalysis:
        if spec.get("train") is not None:
            raise SpecError("spec field 'train' does not apply to study kind 'lm-ensemble': its language model trains "
                            "by steps; give steps, batch_size, lr, warmup, weight_decay under 'analysis'")
        if spec.get("data") != "stdlib":
            raise SpecError(f"spec field 'data' is {spec.get('data')!r}; study kind 'lm-ensemble' trains on "
                            "'stdlib' (the standard library's source)")
        return section(cls, value, path)

    @property
    def training(self) -> lm.LMTraining:
        names = {f.name for f in fields(lm.LMTraining)}
        return lm.LMTraining(**{f.name: getattr(self, f.name) for f in fields(self) if f.name in names})


def layer_groups(units) -> list[list[int]]:
    """The unit indices of each layer (units of one block module), in forward order.

    Examples
    --------
    >>> import unravel
    >>> from unravel.studies.lm_ensemble.measure import layer_groups
    >>> layer_groups(unravel.find_units(unravel.lm.gpt2(context=8, depth=2, width=8, heads=2)))
    [[0, 1], [2, 3]]
    """
    return [list(g) for g in unit_groups(units, "layer")]


def _per_window(wrong, windows):
    """Token wrong flags ``[rows, windows * (T - 1)]`` as each window's error ``[rows, windows]``."""
    return wrong.reshape(wrong.shape[0], windows, -1).mean(-1).astype(np.float32)


def _label(name):
    block, part = name.rsplit("/", 1) if "/" in name else (name, "")
    return f"L{block.rsplit('.', 1)[-1]} {'attn' if part.startswith('att') else part}".strip()


def _custom(name, model, test, variants, ctx):
    return sweeps.run_variants(name, model, test, variants, batch_size=64, device=ctx.device, progress=ctx.progress,
                               loss="next_token", return_items=True)


def _swap_order(groups, l):
    order = [i for g in groups for i in g]
    for a, b in zip(groups[l], groups[l + 1]):
        order[a], order[b] = order[b], order[a]
    return tuple(order)


def _path_rows(model, ids, seed, n):
    """The exact decomposition of the next-token loss gradient at the first unit's input: a
    frame per length (count, sq_norm: mean per-window squared norm) and the per-window squared
    norms ``[lengths, windows]``."""
    res = attribution.path_length_gradients(model, ids, loss="next_token")
    sq = res.by_length.detach().double().pow(2).flatten(2).sum(-1).cpu().numpy()
    frame = pd.DataFrame({"seed": seed, "units": n, "length": res.lengths.tolist(),
                          "count": [float(c) for c in res.counts[: len(res.lengths)]], "sq_norm": sq.mean(1)})
    return res, frame, sq.astype(np.float32)


def _retained(frame):
    out = []
    for _, g in frame.groupby("seed", sort=False):
        base = 1.0 - float(g.error[g.variant == -1].mean())
        out.append(g[g.variant >= 0].assign(retained=lambda d: (1.0 - d.error) / base))
    return pd.concat(out, ignore_index=True)


def run_lm_ensemble(ctx) -> list:
    """Lad et al. and Gromov et al. on a GPT-2 trained here, Veit et al.'s lesions and paths."""
    a = ctx.analysis
    data = ctx.data
    test = data.test
    windows = len(test)
    each, layers, swaps, rnd, paths, hist, grads, fits = [], [], [], [], [], [], [], []
    n = n_layers = None
    for seed in ctx.seeds:
        model, h = lm.trained(ctx.model("lm", seed), data, a.training, seed=seed, device=ctx.device, cache=ctx.cache,
                              progress=ctx.progress)
        hist.append(h.assign(seed=seed))
        fits.append({"seed": seed, **{f"test_{k}": v for k, v in lm.evaluate(model, data, "test").items()},
                     **{f"final_{k}": v for k, v in h.iloc[-1].items() if k.startswith("val_")}})
        units = find_units(model)
        n, groups = len(units), layer_groups(units)
        n_layers = len(groups)
        layer_of = {i: l for l, g in enumerate(groups) for i in g}
        common = dict(device=ctx.device, progress=ctx.progress, loss="next_token", return_items=True)
        f, w = sweeps.delete_each(model, test, batch_size=64, **common)
        f = f.assign(seed=seed, layer=[layer_of.get(int(u), -1) if u else -1 for u in f.units.fillna("")],
                     lesion=[_label(s) if s else "none" for s in f.names.fillna("")])
        each.append((f, _per_window(w, windows)))
        rnd.append((f.assign(source="delete_each"), _per_window(w, windows)))
        f, w = _custom("delete_layer", model, test,
                       [Variant(id=l, k=len(g), deleted=tuple(g)) for l, g in enumerate(groups)], ctx)
        f = f.assign(seed=seed, layer=f.variant, lesion=[f"L{v}" if v >= 0 else "none" for v in f.variant])
        layers.append((f, _per_window(w, windows)))
        if n_layers >= 2:
            variants = []
            for l in range(n_layers - 1):
                order = _swap_order(groups, l)
                variants.append(Variant(id=l, k=2, order=order,
                                        info={"moved": [p for p, q in enumerate(order) if p != q]}))
            f, w = _custom("swap_adjacent", model, test, variants, ctx)
            f = f.assign(seed=seed, layer=f.variant, lesion=[f"L{v}-L{v + 1}" if v >= 0 else "none" for v in f.variant])
            swaps.append((f, _per_window(w, windows)))
        kk = sorted({k for k in a.ks if 2 <= k <= n})
        if kk:
            f, w = sweeps.delete_random(model, test, ks=kk, samples_per_k=a.samples_per_k, seed=seed, batch_size=64,
                                        **common)
            keep = (f.variant >= 0).to_numpy()  # the baseline row is delete_each's
            rnd.append((f[keep].assign(seed=seed, source="delete_random"), _per_window(w[keep], windows)))
        res, pf, sq = _path_rows(model, test.tensors[0][: a.probe_size].to(ctx.device), seed, n)
        paths.append((pf, sq))
        grads.append(res.to_frame().assign(seed=seed, units=n))
    return _report(ctx, a, data, n, n_layers, each, layers, swaps, rnd, paths, hist, grads, fits)


def _bits(frame):
    return frame.assign(bits_per_byte=frame.loss / math.log(2))


def _trials(parts, **kw):
    return trials_from([(_bits(f), w) for f, w in parts], **kw)


def _report(ctx, a, data, n, n_layers, each, layers, swaps, rnd, paths, hist, grads, fits) -> list:
    fp = data.corpus.fingerprint()
    (ctx.out / f"{ctx._name('corpus')}.json").write_text(json.dumps(fp, indent=2))
    ctx.tables.append(f"{ctx._name('corpus')}.json")
    hist = ctx.frame("train", pd.concat(hist, ignore_index=True))
    fits = ctx.frame("lm", pd.DataFrame(fits))
    ctx.figure("train", plots.training_curves(hist), "Validation loss (bits per byte) of the language model during "
               "training, one line per seed")
    worst = float(fits.final_val_bits_per_byte.max())
    trained = [(worst <= a.max_bits_per_byte, f"a model did not learn the text: its validation loss {worst:.3f} bits "
                                              f"per byte is above max_bits_per_byte = {a.max_bits_per_byte}")]
    kw = dict(n_boot=a.n_boot, requires=trained)
    each_t, layer_t, rnd_t = _trials(each), _trials(layers), _trials(rnd, draws=["k"])
    out = []
    for name, t in (("delete_each", each_t), ("delete_layer", layer_t)):
        ctx.frame(name, t.frame)
        ctx.items(name, t.items)
    ctx.figure("delete_each", plots.lesion_effects(_retained(each_t.frame), "lesion", xlabel="deleted unit"),
               "Next-token accuracy retained after deleting each attention or MLP unit: each seed (grey) and the mean "
               "with its 95% interval over seeds (black)")
    ctx.figure("delete_layer", plots.lesion_effects(_retained(layer_t.frame), "lesion", xlabel="deleted layer"),
               "Next-token accuracy retained after deleting each whole layer (attention and MLP): each seed and the "
               "mean with its 95% interval (Lad et al.; Gromov et al.)")
    out += [lm_claims.claim_first_layer(layer_t, **kw), lm_claims.claim_middle_layers(layer_t, n_layers, **kw)]
    if swaps:
        swap_t = _trials(swaps)
        ctx.frame("swap_adjacent", swap_t.frame)
        ctx.items("swap_adjacent", swap_t.items)
        ctx.figure("swap_adjacent", plots.lesion_effects(_retained(swap_t.frame), "lesion", xlabel="swapped layers"),
                   "Next-token accuracy retained after swapping each pair of adjacent layers: each seed and the mean "
                   "with its 95% interval (Lad et al.)")
        out.append(lm_claims.claim_middle_swaps(swap_t, n_layers, **kw))
    out.append(lm_claims.claim_deeper_prunable(layer_t, n_layers, **kw))
    predicted = lesion_claims.independent_prediction(each_t.frame, rnd_t.frame)
    ctx.frame("delete_random", predicted)
    ctx.items("delete_random", rnd_t.items)
    ctx.figure("delete_random", plots.error_vs_k(predicted, hue=None, predicted="predicted_error"),
               "Next-token error against the number of deleted units, mean and spread over draws and seeds; dotted: "
               "predicted from single deletions acting independently (Veit Fig. 5a)")
    out.append(lesion_claims.claim_smooth_growth(rnd_t, cid="lm-smooth-growth",
                                          statement="The error grows smoothly as more units of the LM are deleted",
                                          source=f"{VEIT}, Fig. 5(a)", **kw))
    path_t = _trials_paths(paths)
    ctx.frame("path_parts", path_t.frame)
    ctx.items("path_parts", path_t.items)
    g = ctx.frame("gradient_by_length", pd.concat(grads, ignore_index=True))
    ctx.figure("gradient_share", plots.gradient_by_length(g.assign(seed=g.seed.astype(str)), "share", hue="seed"),
               "Share of the next-token loss gradient (at the first unit's input) carried by each path length, one "
               "line per seed (Veit Fig. 6c)")
    deep = [(n >= a.min_units, f"the LM has {n} units, fewer than min_units = {a.min_units}: Veit et al. make this "
                               f"claim at 54 units, and with {n} units a few lengths hold most of the 2^{n} paths")]
    out += [path_claims.claim_mean_length_below(path_t, n, **kw),
            path_claims.claim_effective_fraction(path_t, n, mass=float(a.mass), n_boot=a.n_boot, requires=trained + deep)]
    for c in out:
        c["measured"].setdefault("test_bits_per_byte", [round(float(v), 4) for v in fits.test_bits_per_byte])
    return out


def _trials_paths(paths):
    return trials_from(paths, value="sq_norm")
