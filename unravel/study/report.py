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
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def report_markdown(spec, claims: list, *, seed: int, device, quick: bool, figures: list, tables: list) -> str:
    """The Markdown report of a study: settings, a table of verdicts with their rules, figures
    and links to the data.

    Parameters
    ----------
    spec : StudySpec
    claims : list of dict
        As the ``claim_*`` functions return them.
    seed : int
    device : str or torch.device
    quick : bool
        A smoke run: the report says its verdicts are not evidence.
    figures : list of (file, caption)
    tables : list of file names

    Examples
    --------
    >>> from unravel.study import claim_dense_shallower, parse_spec
    >>> from unravel.study.report import report_markdown
    >>> spec = parse_spec({"name": "demo", "kind": "veit-paths", "models": {"residual": {"name": "resmlp"}}})
    >>> text = report_markdown(spec, [claim_dense_shallower(5.0, 10, 2.0, 10)], seed=0, device="cpu", quick=False,
    ...                        figures=[], tables=["x.csv"])
    >>> print(text.splitlines()[0]); "**true**" in text
    # demo
    True
    """
    lines = [f"# {spec.title or spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    if quick:
        lines += ["*Quick run (`--quick`): tiny models and few epochs, a smoke test of the pipeline; "
                  "its verdicts are not evidence either way.*", ""]
    lines += [f"Data: `{spec.data.name}`; training: {spec.train.epochs} epochs of {spec.train.optimizer}; "
              f"seed {seed}; device `{device}`.", "",
              "## Verdicts", "", "| claim | source | measured | verdict |", "|---|---|---|---|"]
    for c in claims:
        measured = ", ".join(f"{k} = {_fmt(v)}" for k, v in c["measured"].items())
        lines.append(f"| {c['statement']} | {c['source']} | {measured} | **{'true' if c['verdict'] else 'false'}** |")
    lines += ["", "Each verdict is computed from this run's data by the rule stated in `summary.json`.", ""]
    for c in claims:
        lines.append(f"- *{c['statement']}* — rule: {c['rule']}")
    lines += ["", "## Figures", ""]
    for path, caption in figures:
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    lines += ["## Data", ""] + [f"- [`{t}`]({t})" for t in tables] + [""]
    return "\n".join(lines)
