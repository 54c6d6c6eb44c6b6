"""The DAG as a picture in the cell: steps in columns by depth, arrows from upstream, colour by state."""
from __future__ import annotations

import html

COLORS = {"pending": "#e0e0e0", "running": "#ffd54f", "done": "#81c784", "memo-hit": "#64b5f6", "failed": "#e57373",
          "skipped": "#bdbdbd"}
BOX_W, BOX_H, GAP_X, GAP_Y = 150, 44, 60, 18


class PipelineView:
    def __init__(self, steps):
        self.steps = list(steps)

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "failed"]

    def _layout(self) -> dict[str, tuple[int, int]]:
        depth: dict[str, int] = {}
        for step in self.steps:  # defined in dependency order
            depth[step.name] = 1 + max((depth[u] for u in step.after if u in depth), default=-1)
        rows: dict[int, int] = {}
        place = {}
        for step in self.steps:
            column = depth[step.name]
            place[step.name] = (column, rows.get(column, 0))
            rows[column] = rows.get(column, 0) + 1
        return place

    def _repr_html_(self) -> str:
        if not self.steps:
            return "<div>No steps yet: define one with %%step NAME [--after A,B] [--memo].</div>"
        place = self._layout()
        width = (max(c for c, _ in place.values()) + 1) * (BOX_W + GAP_X)
        height = (max(r for _, r in place.values()) + 1) * (BOX_H + GAP_Y)
        parts = ["<defs><marker id='nbscale-arrow' markerWidth='8' markerHeight='8' refX='8' refY='4' orient='auto'>"
                 "<path d='M0,0 L8,4 L0,8 z' fill='#666'/></marker></defs>"]
        xy = {n: (c * (BOX_W + GAP_X) + 4, r * (BOX_H + GAP_Y) + 4) for n, (c, r) in place.items()}
        for step in self.steps:
            x, y = xy[step.name]
            for up in step.after:
                ux, uy = xy[up]
                parts.append(f"<line x1='{ux + BOX_W}' y1='{uy + BOX_H / 2}' x2='{x}' y2='{y + BOX_H / 2}' stroke='#666' "
                             "marker-end='url(#nbscale-arrow)'/>")
        for step in self.steps:
            x, y = xy[step.name]
            mode = "sync" if step.sync else "async"
            parts.append(f"<rect x='{x}' y='{y}' width='{BOX_W}' height='{BOX_H}' rx='6' fill='{COLORS.get(step.state, '#eee')}' stroke='#555'/>"
                         f"<text x='{x + 8}' y='{y + 18}' font-size='13' font-weight='bold'>{html.escape(step.name)}</text>"
                         f"<text x='{x + 8}' y='{y + 35}' font-size='11'>{html.escape(step.state)} · {mode}{' · memo' if step.memo else ''}</text>")
        notes = "".join(f"<li>{html.escape(s.line())}</li>" for s in self.steps if s.note)
        return (f"<div class='nbscale-pipeline'><svg width='{width}' height='{height}'>{''.join(parts)}</svg>"
                + (f"<ul style='font-size:12px'>{notes}</ul>" if notes else "") + "</div>")

    def __repr__(self) -> str:
        return "\n".join(s.line() for s in self.steps) or "No steps yet."
