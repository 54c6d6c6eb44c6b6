"""`nbscale.ingest(...)`: a source -> a validated, versioned, training-ready Parquet dataset."""
from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from dataclasses import dataclass
from typing import Callable
from datetime import datetime, timezone

from ..config import over_connect
from ..datadir import local_dir
from ..datahost import on_data_host, require_writable
from ..errors import NbscaleError, connect_server_gone, spark_errors
from ..limits import cap
from ..jobs.progress import SparkProgress
from ..jobs.work import spark_work
from ..clustercheck import is_cluster
from . import readers, staging, store
from .dataset import Dataset, IngestResult
from .profile import check_label, compare, profile, schema_drift, written_facts

def _digits():
    from ..datasets import DIGITS_COLUMNS, digits_csv

    ddl = ", ".join(f"{c} DOUBLE" for c in DIGITS_COLUMNS[:-1]) + ", label INT"
    return str(digits_csv()), {"format": "csv", "header": False, "schema": ddl}


def _digit_images():
    from ..datasets import digits_idx

    images, labels = digits_idx(local_dir() / "cache" / "digits-idx")
    return f"{images} {labels}", {"format": "idx"}


def _fashion(split):
    from ..datasets.known import fashion_mnist_urls

    return lambda: (" ".join(fashion_mnist_urls(split)), {"format": "idx"})


# Built-in sources, written as the cell body: `%%ingest digits` / `nbscale:digits`.
BUILTINS = {"nbscale:digits": _digits, "nbscale:digit-images": _digit_images,
            "nbscale:fashion-mnist": _fashion("train"), "nbscale:fashion-mnist-test": _fashion("test")}
CACHE_LEVELS = {"none": None, "memory": "MEMORY_ONLY", "disk": "DISK_ONLY"}
MODES = ("permissive", "failfast")


def _check_options(fmt, cache, mode, shards_wanted, batch_rows):
    if fmt is not None and fmt not in readers.FORMATS:
        raise NbscaleError(f"Unknown format {fmt!r}: use one of {', '.join(readers.FORMATS)}.")
    if cache not in CACHE_LEVELS:
        raise NbscaleError(f"--cache {cache!r} is not a cache mode: use none, memory or disk.")
    if mode not in MODES:
        raise NbscaleError(f"--mode {mode!r} is not a parse mode: use permissive (quarantine bad rows) or failfast.")
    if shards_wanted is not None and shards_wanted < 1:
        raise NbscaleError(f"--shards {shards_wanted} must be 1 or more.")
    if batch_rows < 1:
        raise NbscaleError(f"--batch-rows {batch_rows} must be 1 or more.")


@dataclass(frozen=True)
class IngestOptions:
    name: str
    source: str
    fmt: str
    label: str | None
    shards: int | None
    batch_rows: int
    cache: str
    mode: str
    schema: str | None
    header: bool
    sep: str
    allow_schema_change: bool
    encoding: str | None = None

    def lineage(self) -> dict:
        return {"label": self.label, "shards": self.shards, "batch_rows": self.batch_rows, "mode": self.mode,
                "schema": self.schema, "header": self.header, "sep": self.sep, "encoding": self.encoding}


def _read(spark, o: IngestOptions) -> readers.Read:
    if o.fmt == "csv":
        return readers.read_csv(spark, o.source, o.schema, o.header, o.sep, o.encoding)
    if o.fmt == "json":
        return readers.read_json(spark, o.source, o.schema, o.encoding)
    if o.fmt == "parquet":
        return readers.read_parquet(spark, o.source)
    if o.fmt == "sql":
        return readers.read_sql(spark, o.source)
    if o.fmt == "idx":
        from .idx import read_idx

        return read_idx(spark, o.source, o.batch_rows)
    from .images import read_images

    return read_images(spark, o.source, o.batch_rows)


def ingest(name: str, source: str, *, format: str | None = None, label: str | None = None, shards: int | None = None,
           batch_rows: int = 10_000, cache: str = "none", mode: str = "permissive", schema: str | None = None,
           header: bool = True, sep: str = ",", allow_schema_change: bool = False, encoding: str | None = None,
           progress: Callable[[SparkProgress], None] | None = None) -> IngestResult:
    """Read `source` with Spark, validate it, and publish it as the next version of dataset `name`.

    Malformed rows go to the version's quarantine table (permissive) or stop the ingest
    (failfast); the counts always add up: records read = rows loaded + rows quarantined.
    `progress`, when given, receives the Spark jobs' progress every half second.
    """
    from ..datasets.download import localize
    from ..session import spark as current_spark

    store.check_name(name)
    source = (source or "").strip()
    if not source:
        raise NbscaleError(f"Nothing to ingest: put a path, glob, URL or SQL query in the cell body under %%ingest {name}.")
    builtin = None
    if source in BUILTINS:
        source, builtin = BUILTINS[source]()
        format, schema, header = builtin.get("format", format), builtin.get("schema", schema), builtin.get("header", header)
    _check_options(format, cache, mode, shards, batch_rows)
    require_writable(f"Ingesting {name}")
    fmt = format or readers.detect_format(source)
    if encoding is not None:
        readers.check_encoding(encoding)
    options = IngestOptions(name, source if fmt == "sql" else localize(source), fmt, label, shards, batch_rows, cache, mode,
                            schema, header, sep, allow_schema_change, encoding)
    spark = current_spark()
    staged_note = None
    if fmt != "sql" and over_connect():
        if fmt in ("images", "idx"):
            raise NbscaleError(f"--format {fmt} is not available over Spark Connect yet (its decoders read files in the notebook's "
                               "process): ingest it on a classic master (spark://...), or convert it to Parquet first.")
        with spark_errors(f"Ingesting {name}", fix="Check the source and options (see %ingest?)."):
            source, staged_note = staging.upload_to_cluster(options.source)
        options = dataclasses.replace(options, source=source)
    elif fmt != "sql" and is_cluster(spark.sparkContext.master):
        source, staged_note = staging.stage(spark, options.source)
        options = dataclasses.replace(options, source=source)
    group = f"nbscale-ingest-{name}-{uuid.uuid4().hex[:8]}"
    with spark_work(spark, group, f"%%ingest {name}", progress), \
            spark_errors(f"Ingesting {name}", fix="Check the source and options (see %ingest?)."), \
            _session_setting(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows)):
        # (Batching: Arrow hands Python-side decoders (IDX, images) at most batch_rows rows at a time.)
        read = _read(spark, options)
        if staged_note:
            read.notes.append(staged_note)
        if builtin:
            read = _shrink(read, cap("rows", read.records))
        try:
            result = _validate_and_publish(spark, read, options)
        except BaseException as exc:
            if not connect_server_gone(exc):
                _unpersist(read.cached)
            raise
        _unpersist(read.cached)
        return result


def _unpersist(frames) -> None:
    for frame in frames:
        frame.unpersist()


@contextlib.contextmanager
def _session_setting(spark, key: str, value: str):
    """A Spark session setting for the block, restored after it (unless the Connect server is gone)."""
    saved = spark.conf.get(key)
    spark.conf.set(key, value)
    try:
        yield
    except BaseException as exc:
        if not connect_server_gone(exc):
            spark.conf.set(key, saved)
        raise
    spark.conf.set(key, saved)


def _shrink(read: readers.Read, rows: int) -> readers.Read:
    """The first `rows` records of a built-in dataset (the Binder profile's smaller data; built-ins are
    clean, so there is no quarantine to keep in step)."""
    if rows >= read.records:
        return read
    return dataclasses.replace(read, df=read.df.limit(rows), records=rows, quarantine=None, observation=None, quarantine_of=None,
                               notes=[*read.notes, f"Binder profile: the first {rows} of {read.records} records"])


def _quarantine_after_the_write(read: readers.Read):
    """The malformed rows to keep, once the good ones are written: None when the write counted none (a clean CSV or
    JSON source is parsed once). Over Spark Connect a write brings no observed metrics back: unknown, so the
    quarantine is parsed (and counted by its files) as for a source with malformed rows."""
    if read.observation is None:
        return read.quarantine
    malformed = read.observation.get.get("malformed")
    return None if malformed == 0 else read.quarantine_of()


def _validate_and_publish(spark, read: readers.Read, o: IngestOptions) -> IngestResult:
    check_label(read.df, o.label)
    if read.records == 0:
        raise NbscaleError(f"{readers.items(o.source)[0]!r} holds no records: nothing to ingest (the previous version stays).")
    previous, broken = store.latest_readable(o.name)
    previous_manifest = previous.manifest if previous else None
    if broken:
        read.notes.append(f"{', '.join(broken)} cannot be read (damaged manifest.json): compared with "
                          f"{previous.ref if previous else 'nothing'} instead")
    if previous_manifest and not o.allow_schema_change:
        drift = schema_drift(previous_manifest["schema"], [[f.name, f.dataType.simpleString()] for f in read.df.schema.fields])
        if drift:
            raise NbscaleError(f"The new data changes the schema of {previous.ref} ({'; '.join(drift)}): "
                               "pass --allow-schema-change to publish it as a new version anyway.")
    with store.staging(o.name) as staged:
        (read.df.repartition(o.shards) if o.shards else read.df).write.parquet(str(staged / "data"))
        quarantine = _quarantine_after_the_write(read)
        if o.mode == "failfast" and quarantine is not None:
            bad = quarantine.first()
            if bad is not None:  # the staged version is dropped: nothing is published
                raise NbscaleError(f"Malformed row in {bad['source']}: {bad['raw']!r} ({bad['reason']}). "
                                   "Fix the source, or use --mode permissive to quarantine bad rows.")
        if quarantine is not None:
            quarantine.write.parquet(str(staged / "quarantine"))
        # Rows, shards and null counts from the written files' footers: exact, and no second scan of the data.
        facts = on_data_host(written_facts, str(staged / "data"), str(staged / "quarantine") if quarantine is not None else None)
        written = spark.read.parquet(str(staged / "data"))
        loaded, quarantined = facts["rows"], facts["quarantined"]
        if loaded + quarantined != read.records:
            raise NbscaleError(f"Counts do not add up for {o.name}: {read.records} records read, {loaded} loaded, "
                               f"{quarantined} quarantined; nothing was published. Please report this source.")
        manifest = {
            **profile(written, o.label, facts["nulls"]),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "format": o.fmt,
            "source": o.source,
            "files": read.sources[:50],
            "options": o.lineage(),
            "counts": {"read": read.records, "loaded": loaded, "quarantined": quarantined},
            "shards": facts["shards"],
            "notes": read.notes,
            "type_failures": read.type_failures,
        }
        if read.image_shape:
            manifest["image_shape"] = read.image_shape
        version = store.publish(o.name, staged, manifest)
    dataset = Dataset(version)
    if re.fullmatch(r"[A-Za-z_]\w*", o.name):  # plain Spark SQL: SELECT ... FROM NAME reads the latest version
        spark.read.parquet(str(version.data_path)).createOrReplaceTempView(o.name)
    cache_report = dataset.cache(o.cache) if o.cache != "none" else None
    return IngestResult(dataset, version.manifest, compare(previous_manifest, manifest), cache_report)


def datasets() -> list[dict]:
    """Every dataset version: name, version, rows, schema, source, creation time."""
    rows = []
    for name, manifests in store.catalog().items():
        for number, text in manifests.items():
            try:
                m = store.Version(name, number).parse_manifest(text)
            except store.BrokenVersion as broken:  # named in the listing; the other versions still show
                rows.append({"dataset": f"{name}@v{number}", "rows": None, "quarantined": None, "columns": None, "schema": "",
                             "format": "damaged", "source": str(broken), "created": None, "broken": str(broken)})
                continue
            rows.append({"dataset": f"{name}@v{number}", "rows": m["counts"]["loaded"], "quarantined": m["counts"]["quarantined"],
                         "columns": len(m["schema"]), "schema": ", ".join(f"{c} {t}" for c, t in m["schema"]),
                         "format": m["format"], "source": m["source"], "created": m["created"]})
    return rows


def dataset(ref: str) -> Dataset:
    """A handle on a published version: `dataset("fashion@v2").df`."""
    return Dataset(store.resolve(ref))
