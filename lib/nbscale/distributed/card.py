"""The distributed job card: the training card (curves, progress, MLflow run) plus one row per worker,
the attempt history and the last lines of each worker's log."""
from __future__ import annotations

import html

from ..train.card import render


def _bar(done: float) -> str:
    width = int(120 * max(0.0, min(1.0, done)))
    return (f"<div style='background:#eee;width:120px;height:6px;display:inline-block'><div style='background:#4a90d9;"
            f"height:6px;width:{width}px'></div></div>")


def render_job(title: str, view: dict) -> str:
    """`view` is what `DistributedRun.view()` gathers from the job directory."""
    base = render(title, view["history"], view["epochs"], view["samples_per_s"], view["run_id"], view["run_url"], view["state"],
                  f"{view['workers']} workers · {view['strategy']}")
    rows = []
    for rank, worker in sorted(view["workers_state"].items()):
        steps, step, epoch = worker.get("steps") or 1, worker.get("step", 0), worker.get("epoch", 0)
        done = ((max(epoch - 1, 0) + step / steps) / view["epochs"]) if worker.get("state") == "training" else (
            1.0 if worker.get("state") == "finished" else 0.0)
        where = f"epoch {epoch} step {step}/{steps}" if worker.get("state") == "training" else worker.get("state", "")
        tail = "<br>".join(html.escape(line[-160:]) for line in view["logs"].get(rank, []))
        rows.append(f"<tr><td>{rank}</td><td>{html.escape(worker.get('role', ''))} {worker.get('index', '')}</td>"
                    f"<td>{_bar(done)} {html.escape(where)}</td><td style='font-family:monospace;font-size:10px'>{tail}</td></tr>")
    table = ("<table style='font-size:12px'><tr><th>rank</th><th>role</th><th>progress</th><th>log</th></tr>" + "".join(rows) + "</table>"
             if rows else "")
    attempts = "".join(f"<li>{html.escape(line)}</li>" for line in view["attempt_lines"])
    notes = "".join(f"<div style='color:#a60'>{html.escape(note)}</div>" for note in view["notes"])
    extra = f"{notes}{table}" + (f"<div style='font-size:12px'>Attempts:<ul style='margin:0'>{attempts}</ul></div>" if attempts else "")
    return base[: -len("</div>")] + extra + "</div>"
