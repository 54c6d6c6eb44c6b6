"""The training card, one rendering for the live view and the finished run: progress, the loss
and metric curves (inline SVG with axes and epoch ticks, no plotting library), samples/s and the MLflow run.

Colours come from JupyterLab's theme variables (with light-theme fallbacks outside JupyterLab) and text is
`currentColor`, so the card reads in the dark theme as in the light one."""
from __future__ import annotations

import html

# Series colours readable on light and dark backgrounds (Matplotlib's first four, slightly lightened).
COLORS = ["#3d8fd1", "#ff8c1a", "#36b336", "#e0484a"]
BORDER = "var(--jp-border-color2, #ccc)"
TRACK = "var(--jp-layout-color3, #eee)"
FILL = "var(--jp-brand-color1, #4a90d9)"
WIDTH, HEIGHT = 280, 130
LEFT, RIGHT, TOP, BOTTOM = 42, 8, 8, 24  # room for the value labels (left) and the epoch ticks (below)


def epoch_ticks(epochs: int, most: int = 10) -> list[int]:
    """Epoch numbers (1-based) to label on the x axis: every one up to `most`, else 1 and round multiples, and the
    last epoch unless it would crowd the tick before it."""
    if epochs <= most:
        return list(range(1, epochs + 1))
    step = next((s for s in (2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000) if epochs / s <= most - 1), -(-epochs // (most - 1)))
    ticks = [1, *range(step, epochs + 1, step)]
    if epochs - ticks[-1] >= step / 2:
        ticks.append(epochs)
    return ticks


def _curves(history: dict[str, list[float]], epochs: int, keys: list[str]) -> str:
    values = [v for k in keys for v in history.get(k, [])]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(epoch: int) -> float:  # epoch is 1-based
        return LEFT + (epoch - 1) * plot_w / max(epochs - 1, 1)

    def y(value: float) -> float:
        return TOP + plot_h - (value - low) / span * plot_h

    parts = [f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{TOP + plot_h}' stroke='currentColor' stroke-opacity='0.6'/>",
             f"<line x1='{LEFT}' y1='{TOP + plot_h}' x2='{LEFT + plot_w}' y2='{TOP + plot_h}' stroke='currentColor' stroke-opacity='0.6'/>"]
    for value in (high, (high + low) / 2, low) if high != low else (high,):
        parts.append(f"<line x1='{LEFT - 3}' y1='{y(value):.1f}' x2='{LEFT}' y2='{y(value):.1f}' stroke='currentColor'/>"
                     f"<text x='{LEFT - 5}' y='{y(value) + 3:.1f}' font-size='9' text-anchor='end' fill='currentColor'>{value:.3g}</text>")
    for epoch in epoch_ticks(epochs):
        parts.append(f"<line x1='{x(epoch):.1f}' y1='{TOP + plot_h}' x2='{x(epoch):.1f}' y2='{TOP + plot_h + 3}' stroke='currentColor'/>"
                     f"<text x='{x(epoch):.1f}' y='{TOP + plot_h + 13}' font-size='9' text-anchor='middle' fill='currentColor'>{epoch}</text>")
    parts.append(f"<text x='{LEFT + plot_w}' y='{HEIGHT - 1}' font-size='9' text-anchor='end' fill='currentColor' "
                 "fill-opacity='0.7'>epoch</text>")
    for color, key in zip(COLORS, keys):
        series = history.get(key, [])
        points = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(series))
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{points}'/>")
        if len(series) == 1:  # one epoch is a point, not a line
            parts.append(f"<circle cx='{x(1):.1f}' cy='{y(series[0]):.1f}' r='2.5' fill='{color}'/>")
    legend = " ".join(f"<span style='color:{c}'>■</span> {html.escape(k)}" for c, k in zip(COLORS, keys) if history.get(k))
    return (f"<div style='display:inline-block;margin-right:12px'><svg class='nbscale-curve' width='{WIDTH}' height='{HEIGHT}' "
            f"role='img' aria-label='{html.escape(' and '.join(keys))} by epoch' style='color:inherit'>{''.join(parts)}</svg>"
            f"<div style='font-size:11px'>{legend}</div></div>")


def render(title: str, history: dict[str, list[float]], epochs: int, samples_per_s: float | None, run_id: str | None,
           run_url: str | None, state: str, device: str, step: tuple[int, int] | None = None, default_code: str | None = None) -> str:
    done = len(history.get("loss", []))
    metric_keys = [k for k in history if k not in ("loss", "val_loss") and not k.startswith("val_")]
    last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if v)
    speed = f" · {samples_per_s:,.0f} samples/s" if samples_per_s else ""
    if run_url:
        link = f" · MLflow run <a href='{html.escape(run_url)}' target='_blank'>{html.escape(run_id or '')}</a>"
    else:
        link = f" · MLflow run {html.escape(run_id)}" if run_id else ""
    bar = (f"<div style='background:{TRACK};width:260px;height:8px;display:inline-block'><div style='background:{FILL};height:8px;"
           f"width:{int(260 * done / max(epochs, 1))}px'></div></div>")
    steps = ""
    if step:  # inside an epoch: a thin bar for its steps
        steps = (f" <div style='background:{TRACK};width:120px;height:4px;display:inline-block'><div style='background:{FILL};"
                 f"opacity:0.6;height:4px;width:{int(120 * step[0] / max(step[1], 1))}px'></div></div> step {step[0]}/{step[1]}")
    early = (f" · stopped early after {done} of {epochs} epochs (a callback ended it)"
             if state == "finished" and 0 < done < epochs else "")
    curves = _curves(history, epochs, ["loss", "val_loss"]) + "".join(
        _curves(history, epochs, [k, f"val_{k}"]) for k in metric_keys)
    chosen = ""
    if default_code:
        chosen = ("<details class='nbscale-default-model'><summary>No model in the cell: nbscale's default model (copy it into a %%train "
                  f"cell to edit it)</summary><pre style='font-size:11px'>{html.escape(default_code)}</pre></details>")
    return (f"<div class='nbscale-train' style='border:1px solid {BORDER};border-radius:6px;padding:6px 10px'>"
            f"<b>{html.escape(title)}</b> — {html.escape(state)} on {html.escape(device)}<br>{bar} epoch {done}/{epochs}{steps}{speed}"
            f"{link}{early}<div style='font-size:12px'>{html.escape(last)}</div>{curves}{chosen}</div>")
