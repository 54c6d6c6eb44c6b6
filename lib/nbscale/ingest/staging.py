"""Files that only the notebook's machine has, made readable by a cluster's executors.

Over Spark Connect (`upload_to_cluster`) the laptop shares no folder with the cluster: a path that exists
on the laptop is uploaded through Spark into `<data_dir>/staging/` on the cluster; any other path is the
cluster's own, read there.

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
from ..datahost import on_data_host, remove_tree, upload
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
    files = [f for f in readers.expand_here(source) if not readers.URI_RE.match(f)]  # URIs: Spark's filesystems, read there
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


def upload_to_cluster(source: str) -> tuple[str, str | None]:
    """Over Spark Connect: (source on the cluster, note for the card or None). Items that exist on this
    machine are uploaded (once per content: same paths, sizes and times -> the same staged copy); the
    others are paths or URIs of the cluster, read there."""
    here = [item for item in readers.items(source) if not readers.URI_RE.match(item) and _exists_here(item)]
    if not here:
        return source, None
    local_items = " ".join(here)
    files = readers.expand_here(local_items)
    sized = [(f, os.path.getsize(f)) for f in files]
    key = hashlib.sha1(repr([(f, s, os.path.getmtime(f)) for f, s in sized]).encode()).hexdigest()[:16]
    target = f"{settings().data_dir}/staging/{key}"
    total = sum(size for _, size in sized)
    folders = [Path(item).expanduser() for item in here if Path(item).expanduser().is_dir()]
    relative = [str(_relative(Path(f), folders)) for f in files]
    if not on_data_host(os.path.exists, f"{target}/.complete"):
        partial = f"{target}.{uuid.uuid4().hex[:6]}.part"
        done = 0
        try:
            for (path, size), name in zip(sized, relative):
                upload(Path(path), f"{partial}/{name}", lambda sent, before=done: _say(before + sent, total))
                done += size
            print(file=sys.stderr)
            on_data_host(_complete, partial, target)
        except BaseException:
            on_data_host(remove_tree, partial)
            raise
    kept = [item for item in readers.items(source) if item not in here]
    tops = sorted({name.split("/", 1)[0] for name in relative})
    staged = [f"{target}/{top}" for top in tops] + kept
    return readers.joined(staged), (f"{len(files)} file(s), {_size(total)}, exist only on this machine: uploaded through Spark "
                                    f"Connect into the cluster's data dir ({target})")


def _exists_here(item: str) -> bool:
    import glob

    return bool(glob.glob(str(Path(item).expanduser()), recursive=True))


def _relative(file: Path, folders: list[Path]) -> Path:
    """A file's name in the staged copy: under its named folder's name, or its own name."""
    for folder in folders:
        if file.is_relative_to(folder):
            return Path(folder.name) / file.relative_to(folder)
    return Path(file.name)


def _say(done: int, total: int) -> None:
    print(f"\ruploading to the cluster's data dir: {_size(done)} of {_size(total)}", end="", file=sys.stderr)


def _complete(partial: str, target: str) -> None:
    """On the data host: mark the upload whole, then put it in place (a concurrent twin may have won)."""
    (Path(partial) / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


