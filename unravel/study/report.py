"""Study reports: ``summary.json`` and ``report.md`` from a finished study's claims and files.

Plain text formatting only; it does not check that the claims' numbers are right.
"""

from __future__ import annotations

import json

import numpy as np
import torch

__all__ = ["summary_json", "report_markdown"]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if torch.is_tensor(o):
        return o.tolist()
    return str(o)


def summary_json(summary: dict) -> str:
    """``summary`` as indented JSON; numpy numbers and tensors become plain numbers and lists.

    Examples
    --------
    >>> import numpy as np
    >>> from unravel.study.report import summary_json
    >>> print(summary_json({"r2": np.float32(0.5), "ok": np.bool_(True)}))
    {
      "r2": 0.5,
      "ok": true
    }
    """
    return json.dumps(summary, indent=2, default=_json_default)


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _paper_cell(paper):
    if not paper:
        return "n/a"
    value = f"**{_fmt(paper['value'])}**; " if paper.get("value") is not None else ""
    return f"{value}{paper.get('note', '')} ({paper.get('where', '')})"


def _verdict_cell(c) -> str:
    cell = f"**{c['verdict']}**"
    if c.get("verdict_holm") and c["verdict_holm"] != c["verdict"]:
        cell += f" (Holm: {c['verdict_holm']})"
    a = c.get("amendment")
    if a:
        cell += (f"; amended {a['date']} ({a['reason']}): under the original {a['original_direction']} "
                 f"{_fmt(a['original_margin'])}, **{a['original_verdict']}**")
    return cell


def _interval(c) -> str:
    rng = c.get("range")
    where = "" if not rng else f"; range [{_fmt(rng[0]) if rng[0] is not None else '-inf'}, " \
                                f"{_fmt(rng[1]) if rng[1] is not None else 'inf'}]"
    return f"{c['effect']}: {_fmt(c['estimate'])} [{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]{where}"


SMOKE = ("**Smoke run of the pipeline (`--quick`)**: tiny models, few examples and epochs, one seed. It checks "
         "that the study runs end to end; its numbers and verdicts are not evidence about any paper.")


def report_markdown(spec, claims: list, *, seeds, device, quick: bool, figures: list, tables: list,
                    environment: dict | None = None, checks: list = (), preregistration: dict | None = None) -> str:
    """The Markdown report of a study: settings, a table of verdicts (each beside the paper's own
    figure for the quantity), the rules, figures and links to the data.

    Parameters
    ----------
    spec : StudySpec
    claims : list of dict
        As the ``claim_*`` functions return them (claims only: the evidence).
    checks : list of dict
        The checks: what holds by construction or tests only a sign; listed apart.
    preregistration : dict, optional
        ``{commit, hash, matches}`` of the study's pre-registration.
    seeds : list of int
    device : str or torch.device
    quick : bool
        A smoke run: the report's first line says so, and the study's description is left out.
    figures : list of (file, caption)
    tables : list of file names
    environment : dict, optional
        What ``environment.json`` holds; its git revision is quoted.

    Examples
    --------
    >>> import pandas as pd
    >>> from unravel.study import judge, parse_spec, per_seed
    >>> from unravel.study.stats import Trials
    >>> from unravel.study.report import report_markdown
    >>> spec = parse_spec({"name": "demo", "kind": "veit-paths", "models": {"residual": {"name": "resmlp"}}})
    >>> f = pd.DataFrame({"seed": [0, 0, 1, 1], "model": ["resnet", "densenet"] * 2,
    ...                   "mean_length": [5.0, 2.0, 5.1, 2.0], "units": 10})
    >>> gap = per_seed(lambda g: float((g.mean_length * (1 - 2 * (g.model == "densenet"))).mean() / 10))
    >>> claim = judge("dense-shallower", "DenseNet's effective paths are shallower than ResNet's", "SSF", gap,
    ...               Trials(f), margin=0.05, direction="above", effect="gap", n_boot=20)
    >>> text = report_markdown(spec, [claim], seeds=[0, 1], device="cpu",
    ...                        quick=False, figures=[], tables=["x.csv"])
    >>> print(text.splitlines()[0]); "**supported**" in text
    # demo
    True
    """
    if quick:
        lines = [f"# Smoke run of the pipeline: {spec.name} (`--quick`)", "", SMOKE, ""]
    else:
        lines = [f"# {spec.title or spec.name}", ""]
        if spec.description:
            lines += [spec.description.strip(), ""]
    t, steps = spec.train, getattr(spec.analysis, "training", None)
    trained = (f"{t.epochs} epochs of {t.optimizer} (lr {t.lr if t.lr is not None else 'default'}, {t.schedule} "
               f"schedule, weight decay {t.decay:g}, batch {t.batch_size})") if steps is None else (
        f"{steps.steps} steps of AdamW (batch {steps.batch_size}, lr {steps.lr:g} after {steps.warmup} warm-up "
        f"steps, cosine decay, weight decay {steps.weight_decay:g}"
        f"{', bfloat16 autocast' if getattr(steps, 'precision', 'fp32') == 'bf16' else ''})")
    lines += [f"Data: `{spec.data.name}` {dict(spec.data.options) or ''}; training: {trained}; seeds {list(seeds)}; "
              f"device `{device}`."]
    if environment:
        rev = environment.get("git_revision")
        lines += [f"Code: unravel {environment.get('versions', {}).get('unravel')}, git revision "
                  f"`{rev or 'unknown'}`{' with local changes' if environment.get('git_dirty') else ''}"
                  f"{', source hash `' + environment['source_hash'][:12] + '`' if environment.get('source_hash') else ''}."]
    if preregistration:
        p = preregistration
        lines += [f"Pre-registration: hash `{(p.get('hash') or '')[:12]}`, "
                  + (f"committed in `{p['commit'][:10]}`" if p.get("commit") else "not committed")
                  + ("; the run's claim definitions match it." if p.get("matches") else
                     "; **the run's claim definitions differ from it** (or there is none).")]
    lines += ["", "## Verdicts", "",
              "Each claim is judged by an effect estimate (the mean over seeds of each seed's statistic), its 95% "
              "interval (a hierarchical bootstrap over seeds, then test examples and random draws, on the "
              "statistic's own scale and inside its range) and a pre-registered margin: *supported* when the whole "
              "interval lies on the claimed side of the margin, *contradicted* when it lies on the other side, "
              "*inconclusive* otherwise or when the interval has zero width. Holm's correction over the study's "
              "claims is shown where it changes a verdict.", "",
              "| claim | the paper | ours: estimate [95% CI] | margin | verdict |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['statement']} | {_paper_cell(c.get('paper'))} | {_interval(c)} | {c['direction']} "
                     f"{_fmt(c['margin'])} | {_verdict_cell(c)} |")
    if checks:
        lines += ["", "## Checks", "",
                  "What holds by construction or tests only a sign: each must pass, none counts as evidence for a "
                  "paper.", ""]
        for c in checks:
            state = {"supported": "passed", "contradicted": "**failed**"}.get(c["verdict"], "not settled")
            lines.append(f"- {c['statement']}: {_interval(c)}, {c['direction']} {_fmt(c['margin'])}: {state} "
                         f"({c['why']}).")
    lines += ["", "Why each verdict, and what else was measured:", ""]
    for c in [*claims, *checks]:
        measured = "; ".join(f"{k} = {_fmt(v)}" for k, v in c["measured"].items())
        lines.append(f"- *{c['statement']}* — **{c['verdict']}**: {c['why']}. Rule: {c['rule']}. Seeds "
                     f"{c['seeds']}. Measured: {measured}")
    lines += ["", "## Figures", ""]
    for path, caption in figures:
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    lines += ["## Data", ""] + [f"- [`{t}`]({t})" for t in tables] + [""]
    return "\n".join(lines)
