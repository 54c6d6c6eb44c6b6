"""The training card, one rendering for the live view and the finished run: progress, the loss
and metric curves (inline SVG, no plotting library), samples/s and the MLflow run."""
from __future__ import annotations

import html

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def _curves(history: dict[str, list[float]], epochs: int, keys: list[str]) -> str:
    width, height, pad = 260, 110, 18
    values = [v for k in keys for v in history.get(k, [])]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    lines = []
    for color, key in zip(COLORS, keys):
        series = history.get(key, [])
        points = " ".join(f"{pad + i * (width - 2 * pad) / max(epochs - 1, 1):.1f},{height - pad - (v - low) / span * (height - 2 * pad):.1f}"
                          for i, v in enumerate(series))
        lines.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{points}'/>")
    legend = " ".join(f"<span style='color:{c}'>■ {html.escape(k)}</span>" for c, k in zip(COLORS, keys))
    return (f"<div style='display:inline-block;margin-right:12px'><svg width='{width}' height='{height}' style='border:1px solid #eee'>"
            f"<text x='2' y='12' font-size='10'>{high:.3g}</text><text x='2' y='{height - 4}' font-size='10'>{low:.3g}</text>"
            f"{''.join(lines)}</svg><div style='font-size:11px'>{legend}</div></div>")


def render(title: str, history: dict[str, list[float]], epochs: int, samples_per_s: float | None, run_id: str | None,
           run_url: str | None, state: str, device: str, step: tuple[int, int] | None = None) -> str:
    done = len(history.get("loss", []))
    metric_keys = [k for k in history if k not in ("loss", "val_loss") and not k.startswith("val_")]
    last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if v)
    speed = f" · {samples_per_s:,.0f} samples/s" if samples_per_s else ""
    if run_url:
        link = f" · MLflow run <a href='{html.escape(run_url)}' target='_blank'>{html.escape(run_id or '')}</a>"
    else:
        link = f" · MLflow run {html.escape(run_id)}" if run_id else ""
    bar = (f"<div style='background:#eee;width:260px;height:8px;display:inline-block'><div style='background:#4a90d9;height:8px;"
           f"width:{int(260 * done / max(epochs, 1))}px'></div></div>")
    steps = ""
    if step:  # inside an epoch: a thin bar for its steps
        steps = (f" <div style='background:#eee;width:120px;height:4px;display:inline-block'><div style='background:#9cc3ea;height:4px;"
                 f"width:{int(120 * step[0] / max(step[1], 1))}px'></div></div> step {step[0]}/{step[1]}")
    curves = _curves(history, epochs, ["loss", "val_loss"]) + "".join(
        _curves(history, epochs, [k, f"val_{k}"]) for k in metric_keys)
    return (f"<div class='nbscale-train' style='border:1px solid #ccc;border-radius:6px;padding:6px 10px'>"
            f"<b>{html.escape(title)}</b> — {html.escape(state)} on {html.escape(device)}<br>{bar} epoch {done}/{epochs}{steps}{speed}{link}"
            f"<div style='font-size:12px'>{html.escape(last)}</div>{curves}</div>")
