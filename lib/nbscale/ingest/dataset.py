"""Handles on published dataset versions, and the result of one ingest."""
from __future__ import annotations

import time
from dataclasses import dataclass

from .store import Version

_cached: dict[str, object] = {}  # data path -> persisted DataFrame, so every handle shares the cache


class Dataset:
    """One immutable version: `.df` (Spark DataFrame), `.path`, `.version`, `.to_pandas(n)`."""

    def __init__(self, version: Version):
        self._version = version

    @property
    def ref(self) -> str:
        return self._version.ref

    @property
    def name(self) -> str:
        return self._version.name

    @property
    def version(self) -> int:
        return self._version.version

    @property
    def path(self) -> str:
        return str(self._version.data_path)

    @property
    def manifest(self) -> dict:
        return self._version.manifest

    @property
    def df(self):
        from ..session import spark

        session = spark()
        cached = _cached.get(self.path)
        if cached is not None and cached.sparkSession is session:  # a cache dies with its session
            return cached
        return session.read.parquet(self.path)

    @property
    def quarantine(self):
        """Malformed rows of this version (source, raw, reason), or None when there were none."""
        from ..session import spark

        import os.path

        from ..datahost import on_data_host

        path = str(self._version.quarantine_path)
        return spark().read.parquet(path) if on_data_host(os.path.isdir, path) else None

    def to_pandas(self, n: int | None = 1000):
        df = self.df
        return (df.limit(n) if n else df).toPandas()

    def cache(self, level: str = "memory") -> dict:
        """Persist the version for multi-epoch re-reads; returns first-read and cached-read seconds."""
        from pyspark import StorageLevel

        from ..session import spark

        df = spark().read.parquet(self.path).persist({"memory": StorageLevel.MEMORY_ONLY, "disk": StorageLevel.DISK_ONLY}[level])
        t0 = time.perf_counter()
        df.count()  # fills the cache
        t1 = time.perf_counter()
        df.count()  # served from it
        t2 = time.perf_counter()
        _cached[self.path] = df
        return {"level": level, "first_read_s": round(t1 - t0, 3), "cached_read_s": round(t2 - t1, 3), "storage": str(df.storageLevel)}

    def __repr__(self) -> str:
        m = self.manifest
        return f"<Dataset {self.ref}: {m['counts']['loaded']} rows, {len(m['schema'])} columns at {self.path}>"


@dataclass
class IngestResult:
    dataset: Dataset
    manifest: dict
    changes: dict | None
    cache: dict | None

    def __repr__(self) -> str:
        c = self.manifest["counts"]
        lines = [f"{self.dataset.ref}: read {c['read']} = loaded {c['loaded']} + quarantined {c['quarantined']}",
                 f"  shards: {len(self.manifest['shards'])} files, rows {[s['rows'] for s in self.manifest['shards']]}"]
        if self.manifest.get("label_balance"):
            lines.append(f"  label balance ({self.manifest['label']}): {self.manifest['label_balance']}")
        elif summary := self.manifest.get("label_summary"):
            lines.append(f"  label {self.manifest['label']} (continuous): {summary['min']:.4g} to {summary['max']:.4g}, "
                         f"median {summary['quartiles'][1]:.4g}")
        if self.changes:
            lines.append(f"  vs {self.changes['against']}: rows {self.changes['rows']:+d}, schema {self.changes['schema'] or 'unchanged'}")
        if self.cache:
            lines.append(f"  cache ({self.cache['level']}): first read {self.cache['first_read_s']} s, re-read {self.cache['cached_read_s']} s")
        lines += [f"  note: {note}" for note in self.manifest.get("notes", [])]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from .card import ingest_card

        return ingest_card(self)
