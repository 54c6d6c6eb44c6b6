"""Step memoization: what a step read, its key, and the record that lets a re-run skip it.

A step's key is a hash of its code, its upstream steps' keys, the dataset versions it reads and the
plain values (strings, numbers, booleans) of the notebook variables its code mentions — so flipping a
parameter cell's `FASHION_MNIST = True` re-runs the steps that use it. What it
reads is only known by running it, so the record keeps the dataset names it resolved; the next time,
the key is computed with those names' versions *now* (a new version of one changes the key). The record
and the step's outputs (the notebook variables it bound, cloudpickled) live under the data dir, so a
memo hit restores them after a kernel restart too."""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
from pathlib import Path

from ..config import settings

_reads: contextvars.ContextVar[dict | None] = contextvars.ContextVar("nbscale_step_reads", default=None)


def record_read(name: str, version: int, pinned: bool) -> None:
    """Called by the dataset store on every resolve: the running step (if any) read this version."""
    reads = _reads.get()
    if reads is not None:
        reads[name] = version if pinned else f"latest={version}"


@contextlib.contextmanager
def recording():
    """Collect the dataset versions resolved in this thread (and the code it calls) while the block runs."""
    reads: dict = {}
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)


def reads_now(recorded: dict) -> dict:
    """The versions a step's recorded reads resolve to today (a pinned version stays itself)."""
    from ..ingest import store

    now = {}
    for name, seen in recorded.items():
        if isinstance(seen, int):
            now[name] = seen
        else:
            latest = store.latest(name)
            now[name] = f"latest={latest.version if latest else None}"
    return now


PLAIN = (str, int, float, bool, type(None))


def _plain(value) -> bool:
    return isinstance(value, PLAIN) or (isinstance(value, (tuple, list)) and len(value) < 100 and all(_plain(v) for v in value))


def parameters(code: str, namespace: dict, names: list[str] | None = None) -> dict[str, str]:
    """repr() of the plain-valued variables among `names` (default: every name `code` mentions)."""
    wanted = sorted(set(re.findall(r"[A-Za-z_]\w*", code))) if names is None else names
    return {n: repr(namespace[n]) for n in wanted if not n.startswith("_") and n in namespace and _plain(namespace[n])}


def key_of(code: str, upstream: dict[str, str], reads: dict, params: dict | None = None) -> str:
    text = json.dumps({"code": code, "after": upstream, "reads": reads, **({"parameters": params} if params else {})}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def folder(step: str) -> Path:
    return Path(settings().data_dir) / "workflow" / step


def load(step: str) -> dict | None:
    path = folder(step) / "memo.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save(step: str, record: dict, outputs: dict) -> list[str]:
    """Write the step's record and its picklable outputs; returns the names that could not be kept."""
    import cloudpickle

    kept, lost = {}, []
    for name, value in outputs.items():
        try:
            kept[name] = cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001 - any object may refuse pickling
            lost.append(name)
    place = folder(step)
    place.mkdir(parents=True, exist_ok=True)
    (place / "outputs.pkl").write_bytes(cloudpickle.dumps(kept))
    (place / "memo.json").write_text(json.dumps({**record, "outputs": sorted(kept), "lost": lost}))
    return lost


def restore(step: str) -> dict:
    import cloudpickle

    return {name: cloudpickle.loads(blob) for name, blob in cloudpickle.loads((folder(step) / "outputs.pkl").read_bytes()).items()}
