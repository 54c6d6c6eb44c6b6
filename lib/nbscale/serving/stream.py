"""Event-driven scoring: JSON-lines files moved into IN_DIR are scored as they arrive by Spark
Structured Streaming (file source) into Parquet files in OUT_DIR. The query is checkpointed and the
file sink commits each micro-batch through its own log, so stopping and starting it again with the
same model and folders scores every file exactly once: nothing lost, nothing twice.

Files must appear in IN_DIR whole (write elsewhere, then move them in): Spark lists the folder and
reads a file once."""
from __future__ import annotations

import hashlib
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import settings
from ..contracts import ModelVersion
from ..errors import NbscaleError

TRIGGER = "1 second"


@dataclass
class Stream:
    ref: str  # what was asked for: "digits-dense@champion"
    model: ModelVersion  # what it scores with
    in_dir: Path
    out_dir: Path
    checkpoint: Path
    query: object  # pyspark StreamingQuery
    _footer_rows: dict = field(default_factory=dict, repr=False)  # file -> rows, read once

    @property
    def label(self) -> str:
        return self.model.label

    def stats(self) -> dict:
        progress = [p for p in self.query.recentProgress if p]
        rows_in = sum(p["numInputRows"] for p in progress)
        rows_out = committed_rows(self.out_dir, self._footer_rows)
        waiting = [f for f in self.in_dir.iterdir() if f.is_file() and not f.name.startswith((".", "_"))]
        last_batch = max((_epoch(p["timestamp"]) for p in progress if p["numInputRows"]), default=0.0)
        newest = max((f.stat().st_mtime for f in waiting), default=0.0)
        return {"active": self.query.isActive, "rows_in_since_start": rows_in, "rows_out": rows_out,
                "lag_s": round(max(newest - last_batch, 0.0), 1) if newest > last_batch else 0.0, "files_seen": len(waiting)}

    def stop(self) -> None:
        self.query.stop()

    def _repr_html_(self) -> str:
        s = self.stats()
        state = "running" if s["active"] else "stopped"
        return (f"<div class='nbscale-stream' style='border:1px solid #ccc;border-radius:6px;padding:6px 10px'><b>{html.escape(self.label)}</b>"
                f" — streaming, {state}: <code>{html.escape(str(self.in_dir))}</code> → <code>{html.escape(str(self.out_dir))}</code><br>"
                f"rows in (since this start) {s['rows_in_since_start']} · rows out (total) {s['rows_out']} · lag {s['lag_s']} s</div>")

    def __repr__(self) -> str:
        s = self.stats()
        return f"<Stream {self.label}: {self.in_dir} -> {self.out_dir}, {s['rows_out']} rows out, {'running' if s['active'] else 'stopped'}>"


def committed_rows(out_dir: Path, footer_rows: dict) -> int:
    """Rows in the files the sink's own log has committed, from their Parquet footers: no Spark job,
    and no half-written batch (its log entry is renamed into place only once its files are whole)."""
    from urllib.parse import unquote, urlparse

    import pyarrow.parquet as pq

    log = out_dir / "_spark_metadata"
    entries = {}  # batch id -> log file; "N.compact" holds every file up to batch N
    for f in log.iterdir() if log.is_dir() else ():
        batch = f.name.removesuffix(".compact")
        if batch.isdigit():
            entries[int(batch)] = f
    since = max((b for b, f in entries.items() if f.name.endswith(".compact")), default=0)
    files: set[str] = set()
    for batch in sorted(b for b in entries if b >= since):
        for line in entries[batch].read_text().splitlines()[1:]:  # the first line is the log version
            entry = json.loads(line)
            path = unquote(urlparse(entry["path"]).path)
            (files.add if entry.get("action", "add") == "add" else files.discard)(path)
    for path in files - footer_rows.keys():
        footer_rows[path] = pq.read_metadata(path).num_rows
    return sum(footer_rows[path] for path in files)


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


_streams: dict[str, Stream] = {}


def stream(model: str, in_dir: str, out_dir: str) -> Stream:
    """Score files arriving in `in_dir` with `model` ("name@alias", "name/N") into `out_dir`."""
    from pyspark.sql import functions as F

    from ..datahost import classic_only
    from ..session import spark
    from .versions import resolve, trained_feed

    classic_only("%stream", "the executors load the model from the MLflow store, which over Connect must be a tracking server "
                 "that the cluster reaches")
    from ..train.task import task_of_version
    from .contract import contract_of
    from .score import model_udf, with_predictions

    name, version = resolve(model)
    source, target = Path(in_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    if not source.is_dir():
        raise NbscaleError(f"--stream {in_dir}: no such folder. Create it and move JSON-lines files into it.")
    if source == target or target in source.parents or source in target.parents:
        raise NbscaleError("--stream and --to must be separate folders (the output would be read as input).")
    key = str(target)
    if key in _streams and _streams[key].query.isActive:
        raise NbscaleError(f"{target} is already being written by a stream of {_streams[key].model}: %serve --stop {name} first.")
    spec, trained_on = trained_feed(name, version, otherwise="streaming needs the columns of the dataset it was trained on")
    session = spark()
    # The input's columns are the training data's (the label may be missing: it is read as null).
    events = session.readStream.schema(trained_on.df.schema).json(str(source))
    contract = contract_of(name, version)
    predict = model_udf(session, name, version, contract)
    scored = with_predictions(events, spec, predict, task_of_version(name, version), contract).withColumn("source_file", F.input_file_name())
    # One checkpoint per (model, output folder): the same %serve line after a stop resumes exactly where it was.
    checkpoint = Path(settings().data_dir) / "streams" / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    query = (scored.writeStream.format("parquet").option("path", key).option("checkpointLocation", str(checkpoint))
             .trigger(processingTime=TRIGGER).queryName(f"nbscale-{name}-{hashlib.sha1(key.encode()).hexdigest()[:6]}").start())
    _streams[key] = Stream(model, ModelVersion(name, version), source, target, checkpoint, query)
    return _streams[key]


def stop_streams(name: str | None = None) -> list[str]:
    stopped = []
    for key, each in list(_streams.items()):
        if name is None or each.model.name == name:
            each.stop()
            stopped.append(f"the stream into {each.out_dir}")
            del _streams[key]
    return stopped


def wait_for_rows(s: Stream, rows: int, timeout_s: float = 120) -> int:
    """Block until `rows` rows are committed in the output (or the time is up); the count reached."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = s.stats()["rows_out"]
        if got >= rows or time.monotonic() > deadline or not s.query.isActive:
            return got
        time.sleep(0.5)
