"""The service card: URL, a ready-to-copy curl line, each side (version, traffic share, replicas and
their health) with its request, error and latency counters as the front counted them."""
from __future__ import annotations

import html
import json


_examples: dict[str, str] = {}  # "name vN" -> the request body of one real row (a version's data never changes)


def curl_line(service) -> str:
    """A curl line that works as pasted: one real row of the served version's training data, in its contract."""
    label = service.sides[0].label
    if label not in _examples:
        from ..errors import NbscaleError
        from .contract import contract_of
        from .versions import sample_rows

        name, _, version = label.rpartition(" v")
        try:
            _examples[label] = json.dumps(contract_of(name, int(version)).body(sample_rows(service, 1)), separators=(",", ":"))
        except NbscaleError:  # not trained by nbscale: no data to take a row from
            return f"curl -s {service.url}/invocations -H 'Content-Type: application/json' -d @rows.json  # rows as the model's signature names them"
    return f"curl -s {service.url}/invocations -H 'Content-Type: application/json' -d '{_examples[label]}'"


def health_dot(healthy: bool) -> str:
    """A CSS dot with its word beside it for screen readers and plain text (an emoji dot is an empty box where no
    emoji font is installed, as in Debian's Chromium)."""
    color, word = ("#2ca02c", "up") if healthy else ("#d62728", "down")
    return (f"<span class='nbscale-health' data-healthy='{str(healthy).lower()}' title='{word}' style='display:inline-block;width:.7em;"
            f"height:.7em;border-radius:50%;background:{color};vertical-align:baseline'></span> {word}")


def render(service, stats: dict) -> str:
    counted = {side["label"]: side for side in stats.get("sides", [])}
    rows = []
    for side in service.sides:
        seen = counted.get(side.label, {})
        health = {r["url"]: r["healthy"] for r in seen.get("replicas", [])}
        dots = " ".join(health_dot(health.get(r.url, True)) + f" :{r.port}" for r in side.replicas)
        latency = f"{seen['p50_ms']} / {seen['p95_ms']} ms" if seen.get("p50_ms") is not None else "—"
        rows.append(f"<tr><td>{html.escape(side.label)} <span style='opacity:.65'>({html.escape(side.ref)})</span></td>"
                    f"<td>{side.weight:g}%</td><td>{dots}</td><td>{seen.get('requests', 0)}</td><td>{seen.get('errors', 0)}</td>"
                    f"<td>{latency}</td></tr>")
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("version", "traffic", "replicas", "requests", "errors", "p50 / p95"))
    state = "front down" if stats.get("down") else "serving"
    if service.shard_by:
        state += f", sharded by {html.escape(service.shard_by)} (replica i holds shard i)"
    return (f"<div class='nbscale-serve' style='border:1px solid var(--jp-border-color2, #ccc);border-radius:6px;padding:6px 10px'>"
            f"<b>{html.escape(service.name)}</b> — {state} at <code>{html.escape(service.url)}/invocations</code>"
            f"<table>{head and '<tr>' + head + '</tr>'}{''.join(rows)}</table>"
            f"<div style='font-size:11px;max-height:4.5em;overflow:auto;word-break:break-all'><code>{html.escape(curl_line(service))}</code></div></div>")
