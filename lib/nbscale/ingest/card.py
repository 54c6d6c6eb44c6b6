"""HTML cards: the validation card of one ingest, and the `%datasets` table."""
from __future__ import annotations

import base64
import html
import io

STYLE = "border:1px solid var(--jp-border-color2, #ccc);border-radius:6px;padding:6px 10px;margin:2px 0"


def _table(header: list[str], rows: list[list], html_columns: tuple[int, ...] = ()) -> str:
    """A plain table; cells are escaped except in `html_columns` (markup built here)."""
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{v if i in html_columns else html.escape(str(v))}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


SHOWN_CLASSES = 30


def _cell(value) -> str:
    """A sample value as a reader wants it: 6 significant digits, not 17."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _label_summary(label: str, summary: dict) -> str:
    """A continuous label: its range and quartiles, and a histogram of ten bins."""
    q1, median, q3 = summary["quartiles"]
    edges, counts = summary["edges"], summary["counts"]
    largest = max(counts)
    rows = [[f"{edges[i]:.4g} – {edges[i + 1]:.4g}", _bar(count, largest)] for i, count in enumerate(counts)]
    return (f"<div>label <code>{html.escape(label)}</code> (continuous): min {summary['min']:.4g} · quartiles {q1:.4g} / "
            f"{median:.4g} / {q3:.4g} · max {summary['max']:.4g} · mean {summary['mean']:.4g}</div>"
            + _table(["range", "rows"], rows, html_columns=(1,)))


def _bar(value: int, largest: int) -> str:
    width = int(120 * value / largest) if largest else 0
    return f"<span style='display:inline-block;background:var(--jp-brand-color1, #4a90d9);height:8px;width:{width}px'></span> {value}"


def _thumbnails(dataset, shape: list[int], count: int = 8) -> str:
    import numpy as np
    from PIL import Image

    height, width, channels = shape
    tags = []
    for row in dataset.df.limit(count).collect():
        pixels = np.asarray(row["image"], dtype="float32").reshape(height, width, channels)
        scale = 255.0 / max(float(pixels.max()), 1.0)
        image = Image.fromarray((pixels * scale).astype("uint8").squeeze(), "L" if channels == 1 else "RGB")
        buffer = io.BytesIO()
        image.resize((width * 2, height * 2), Image.NEAREST).save(buffer, format="PNG")
        tags.append(f"<img title='label {html.escape(str(row.asDict().get('label')))}' "
                    f"src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'/>")
    return " ".join(tags)


def ingest_card(result) -> str:
    m, c = result.manifest, result.manifest["counts"]
    parts = [f"<b>{html.escape(result.dataset.ref)}</b> — {html.escape(m['format'])} from <code>{html.escape(m['source'][:200])}</code>",
             f"<div>records read <b>{c['read']}</b> = loaded <b>{c['loaded']}</b> + quarantined <b>{c['quarantined']}</b>"
             f"{' (see <code>.dataset.quarantine</code>)' if c['quarantined'] else ''}</div>"]
    failures = m.get("type_failures") or {}
    if failures:
        parts.append(_table(["column", "type", "nulls", "values that did not parse (quarantined)"],
                            [[col, typ, m["nulls"].get(col, 0), failures.get(col, "")] for col, typ in m["schema"]]))
    else:
        parts.append(_table(["column", "type", "nulls"], [[col, typ, m["nulls"].get(col, 0)] for col, typ in m["schema"]]))
    if m.get("label_balance"):
        balance = list(m["label_balance"].items())
        largest = max(v for _, v in balance)
        shown = balance[:SHOWN_CLASSES]
        more = f"<div>… and {len(balance) - len(shown)} more labels</div>" if len(balance) > len(shown) else ""
        parts.append(f"<div>label balance (<code>{html.escape(m['label'])}</code>)</div>"
                     + _table(["label", "rows"], [[k, _bar(v, largest)] for k, v in shown], html_columns=(1,)) + more)
    elif m.get("label_summary"):
        parts.append(_label_summary(m["label"], m["label_summary"]))
    shard_rows = [s["rows"] for s in m["shards"]]
    parts.append(f"<div>shards: {len(shard_rows)} Parquet files, {sum(s['row_groups'] for s in m['shards'])} row groups; "
                 f"rows per shard min {min(shard_rows)} / max {max(shard_rows)}</div>")
    if m.get("image_shape"):
        parts.append(f"<div>sample images ({'×'.join(map(str, m['image_shape']))})</div>" + _thumbnails(result.dataset, m["image_shape"]))
    elif m["sample"]:
        parts.append("<div>sample rows</div><div style='overflow-x:auto;max-width:100%'>"
                     + _table(list(m["sample"][0]), [[_cell(v) for v in r.values()] for r in m["sample"]]) + "</div>")
    if result.changes:
        ch = result.changes
        balance = ", ".join(f"{k}: {v:+d}" for k, v in ch["label_balance"].items()) or "unchanged"
        if m.get("label_summary"):  # no balance to compare: a continuous label's distribution is %drift's to measure
            balance = f"not counted (continuous: %drift --data {result.dataset.ref} --against {ch['against']})"
        parts.append(f"<div>vs {html.escape(ch['against'])}: rows {ch['rows']:+d}; schema "
                     f"{html.escape('; '.join(ch['schema']) or 'unchanged')}; label balance {html.escape(balance)}</div>")
    if result.cache:
        k = result.cache
        parts.append(f"<div>cache: {k['level']} — first read {k['first_read_s']} s, cached re-read {k['cached_read_s']} s: "
                     "multi-epoch re-reads hit the cache</div>")
    parts += [f"<div>note: {html.escape(note)}</div>" for note in m.get("notes", [])]
    return f"<div class='nbscale-ingest' style='{STYLE}'>{''.join(parts)}</div>"


def datasets_card(rows: list[dict]) -> str:
    if not rows:
        return f"<div style='{STYLE}'>No datasets yet: create one with <code>%%ingest NAME</code>.</div>"
    header = ["dataset", "rows", "quarantined", "columns", "format", "source", "created"]
    return f"<div class='nbscale-datasets' style='{STYLE}'>" + _table(header, [[r[h] for h in header] for r in rows]) + "</div>"
