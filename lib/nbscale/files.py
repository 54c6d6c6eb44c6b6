"""Files other processes read while they change (state for the panel, job files of distributed workers,
memo records, the local cluster's pids): written whole or not at all, never seen half-written."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a sibling temporary file, then rename it over `path` (atomic on one filesystem; the name is
    unique per writer, so two writers never share a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        if isinstance(data, bytes):
            partial.write_bytes(data)
        else:
            partial.write_text(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value))
