"""The drift card: the features ranked by PSI, each with its test, p-value and a small picture of the reference
(outline) against the current sample (filled), in the theme's own colours (currentColor), and the
prediction's drift beside them."""
from __future__ import annotations

import html

SHOWN = 12  # features drawn; the rest are counted
WIDTH, HEIGHT = 120, 28


def plot(shift) -> str:
    """Two histograms over the same bins: reference as an outline, current filled."""
    bins = len(shift.reference)
    if not bins:
        return ""
    top = max(max(shift.reference), max(shift.current), 1e-9)
    step = WIDTH / bins
    bars = []
    for i, (ref, cur) in enumerate(zip(shift.reference, shift.current)):
        x = i * step
        h_cur, h_ref = cur / top * (HEIGHT - 2), ref / top * (HEIGHT - 2)
        bars.append(f"<rect x='{x + 1:.1f}' y='{HEIGHT - h_cur:.1f}' width='{max(step - 2, 1):.1f}' height='{h_cur:.1f}' "
                    "fill='var(--jp-brand-color1, #1976d2)' opacity='0.55'/>")
        bars.append(f"<rect x='{x + 1:.1f}' y='{HEIGHT - h_ref:.1f}' width='{max(step - 2, 1):.1f}' height='{h_ref:.1f}' "
                    "fill='none' stroke='currentColor' stroke-width='1'/>")
    return (f"<svg width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' role='img' "
            f"aria-label='{html.escape(shift.feature)}: reference outline, current filled'>{''.join(bars)}</svg>")


def _row(shift, rank: str) -> str:
    flag = ("<b style='color:var(--jp-error-color1, #c62828)'>drifted</b>" if shift.drifted else "<span style='opacity:.7'>stable</span>")
    return (f"<tr><td>{rank}</td><td><code>{html.escape(shift.feature)}</code></td><td>{shift.psi:.3f}</td>"
            f"<td>{shift.test}</td><td>{shift.p_value:.2g}</td><td>{flag}</td><td>{plot(shift)}</td></tr>")


def render(report) -> str:
    head = "".join(f"<th style='text-align:left;padding-right:10px'>{h}</th>"
                   for h in ("#", "feature", "PSI", "test", "p", f"PSI ≥ {report.psi_threshold:g} and p < {report.alpha:g}", "reference vs current"))
    rows = [_row(s, str(i + 1)) for i, s in enumerate(report.features[:SHOWN])]
    rest = len(report.features) - SHOWN
    if rest > 0:
        more = sum(s.drifted for s in report.features[SHOWN:])
        rows.append(f"<tr><td></td><td colspan='6' style='opacity:.7'>{rest} more features, {more} of them drifted</td></tr>")
    if report.prediction:
        rows.append(_row(report.prediction, "—"))
    window = f" in the last {html.escape(report.window)}" if report.window else ""
    link = f" · MLflow run <code>{report.run_id}</code>" if report.run_id else ""
    summary = (f"{len(report.drifted)} of {len(report.features)} features drifted" if report.drifted else
               f"no feature drifted ({len(report.features)} compared)")
    return (f"<div class='nbscale-drift' style='border:1px solid var(--jp-border-color1, currentColor);border-radius:6px;padding:6px 10px'>"
            f"<b>Drift of {html.escape(report.subject)}</b> against {html.escape(report.against)}: {summary}"
            f"<div style='font-size:11px;opacity:.8'>{report.rows} rows{window} vs {report.reference_rows} reference rows{link}</div>"
            f"<table style='font-size:12px'><tr>{head}</tr>{''.join(rows)}</table></div>")
