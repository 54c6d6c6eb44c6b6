"""Files that only the notebook's machine has, made readable by a cluster's executors.

On a cluster, Spark's executors read an ingest's source files on their own hosts. A path on a shared
mount is read where it is; a file that exists only here (a download, a laptop folder) would be
"not found" on the executors, or worse, a different file of the same name. nbscale asks the
executors first (one small job: does every host see each file, with the same size?) and copies what
they do not see into `<data_dir>/staging/` (the data dir every host sees, checked at connect), with a
progress line, then reads the copies."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path

from ..config import settings
from . import readers


def _visible_everywhere(spark, files: list[tuple[str, int]]) -> bool:
    """True when every executor that runs a task sees every file with its size here."""
    sc = spark.sparkContext
    tasks = max(2, sc.defaultParallelism) * 2

    def check(_):
        import os as _os

        bad = 0
        for path, size in files:
            try:
                bad += _os.path.getsize(path) != size
            except OSError:
                bad += 1
        yield bad

    return sum(sc.parallelize(range(tasks), tasks).mapPartitions(check).collect()) == 0


def _copy(items: list[Path], target: Path, total: int) -> None:
    done = 0
    for item in items:
        sources = [p for p in sorted(item.rglob("*")) if p.is_file()] if item.is_dir() else [item]
        for source in sources:
            relative = Path(item.name) / source.relative_to(item) if item.is_dir() else Path(source.name)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / relative)
            done += source.stat().st_size
            print(f"\rstaging into the shared data dir: {_size(done)} of {_size(total)}", end="", file=sys.stderr)
    print(file=sys.stderr)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def stage(spark, source: str) -> tuple[str, str | None]:
    """(source the executors can read, note for the card or None). Paths inside the data dir and
    files every executor already sees are kept as they are."""
    data = Path(settings().data_dir)
    named = [Path(item).expanduser() for item in readers.items(source) if not readers.URI_RE.match(item)]
    files = [f for f in readers.expand(source) if not readers.URI_RE.match(f)]  # URIs: Spark's filesystems, read there
    if all(Path(f).resolve().is_relative_to(data) for f in files):
        return source, None
    sized = [(f, os.path.getsize(f)) for f in files]
    if _visible_everywhere(spark, sized):
        return source, None
    # Same files (paths, sizes, modification times) -> same staged copy: a rerun copies nothing.
    key = hashlib.sha1(repr([(f, s, os.path.getmtime(f)) for f, s in sized]).encode()).hexdigest()[:16]
    target = data / "staging" / key
    if not (target / ".complete").exists():
        partial = target.with_name(f"{key}.{uuid.uuid4().hex[:6]}.part")
        try:
            _copy([i for i in named if i.is_dir()] + [Path(f) for f in files if not any(Path(f).is_relative_to(i) for i in named if i.is_dir())],
                  partial, sum(s for _, s in sized))
            (partial / ".complete").touch()
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    staged = [str(target / p.name) for p in sorted(target.iterdir()) if not p.name.startswith(".")]
    staged += [item for item in readers.items(source) if readers.URI_RE.match(item)]
    total = sum(s for _, s in sized)
    return readers.joined(staged), (f"{len(files)} file(s), {_size(total)}, exist only on this machine: staged into the shared "
                              f"data dir ({target}) for the cluster's executors")
