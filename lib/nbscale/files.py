"""Files other processes read while they change (state for the panel, job files of distributed workers,
memo records, the local cluster's pids) and files published for later reads (a download, a decompressed IDX
file, a fetched split): written whole or not at all, never seen half-written."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path):
    """A temporary path beside `path` for a writer that streams into it: renamed over `path` when the block
    ends, removed when it fails. The name is unique per writer, so two writers of one file never mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o666) -> None:
    """Write a sibling temporary file, then rename it over `path` (atomic on one filesystem; the name is
    unique per writer, so two writers never share a temporary file). `mode` (less the umask) is set as the file is created
    (0o600 for a secret: never readable by others, not even for a moment)."""
    if not isinstance(data, (str, bytes)):
        raise TypeError(f"write_atomic writes text or bytes, not {type(data).__name__}")
    with replacing(path) as partial, os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(data if isinstance(data, bytes) else data.encode())


def write_json(path: Path, value, mode: int = 0o666) -> None:
    write_atomic(path, json.dumps(value), mode)
