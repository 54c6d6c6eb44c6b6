"""The evaluation beside a registration: the candidate's metrics and pictures next to the current champion's,
both measured on the same held-out rows."""
from __future__ import annotations

import base64
import html

# MLflow's default evaluator names; the ones a reader compares first, in this order.
FIRST = ("accuracy_score", "f1_score", "precision_score", "recall_score", "mean_absolute_error", "root_mean_squared_error", "r2_score")


def _value(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "—"


def render(candidate, champion=None, note: str = "") -> str:
    if candidate is None:
        return f"<div style='font-size:12px;opacity:.8'>Not evaluated: {html.escape(note)}</div>" if note else ""
    shown = [k for k in FIRST if k in candidate.metrics] or sorted(candidate.metrics)[:8]
    sides = [candidate] + ([champion] if champion else [])
    head = "".join(f"<th style='text-align:left;padding-right:12px'>{html.escape(e.label)}{' (champion)' if e is champion else ''}</th>"
                   for e in sides)
    rows = "".join(f"<tr><td>{html.escape(k.replace('_', ' '))}</td>" + "".join(f"<td>{_value(e.metrics, k)}</td>" for e in sides) + "</tr>"
                   for k in shown)
    pictures = "".join(
        "<div style='display:flex;gap:6px;align-items:flex-start'>"
        f"<div style='writing-mode:vertical-rl;font-size:11px'>{html.escape(e.label)}</div>"
        + "".join(f"<img alt='{html.escape(title)} of {html.escape(e.label)}' style='max-width:200px;background:white' "
                  f"src='data:image/png;base64,{base64.b64encode(png).decode()}'/>" for title, png in e.figures.items())
        + "</div>" for e in sides)
    caveats = "".join(f"<div style='font-size:11px;color:var(--jp-warn-color1, #b26a00)'>{html.escape(e.caveat)}.</div>" for e in sides if e.caveat)
    return (f"<div class='nbscale-evaluation' style='margin-top:6px'><b>Evaluated on {html.escape(candidate.on)}</b>"
            f"<table style='font-size:12px'><tr><th></th>{head}</tr>{rows}</table>{caveats}{pictures}</div>")
