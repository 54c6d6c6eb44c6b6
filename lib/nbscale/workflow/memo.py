"""Step memoization: what a step read, its key, and the record that lets a re-run skip it.

A step's key is a hash of its code, its upstream steps' keys, the dataset versions it reads and a
content hash of every notebook variable its code mentions (values by joblib.hash — dicts changed in
place, arrays, DataFrames, objects' attributes; notebook functions by their code and the globals they
read) — so flipping a parameter cell's `FASHION_MNIST = True` re-runs the steps that use it, and a
value that cannot be hashed makes the step run (and say so) instead of guessing. What it
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
import types
from pathlib import Path

from .. import events
from ..config import settings
from ..files import write_atomic, write_json

_reads: contextvars.ContextVar[dict | None] = contextvars.ContextVar("nbscale_step_reads", default=None)


def record_read(name: str, version: int, pinned: bool) -> None:
    """On every resolve in the dataset store: the running step (if any) read this version."""
    reads = _reads.get()
    if reads is not None:
        reads[name] = version if pinned else f"latest={version}"


events.subscribe(events.DATASET_RESOLVED, record_read)


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


class Unhashable(Exception):
    """A value the memo cannot fingerprint: the step then runs, and says why (never a hit on a guess)."""


def _code(code: types.CodeType) -> list:
    """A code object by what it does (bytecode, constants, names): stable across kernels, unlike its file name."""
    consts = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            consts.append(_code(c))
        elif isinstance(c, frozenset):
            consts.append(sorted(map(repr, c)))  # set order follows string hashing, which differs per process
        else:
            consts.append(repr(c))
    return [code.co_code.hex(), consts, list(code.co_names), list(code.co_varnames), list(code.co_freevars)]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


def _defined_here(obj) -> bool:
    """Defined in the notebook (or a step), not imported from a package: its code is part of the key."""
    return getattr(obj, "__module__", None) in ("__main__", None) or str(getattr(obj, "__module__", "")).startswith("<")


def fingerprint(value, seen: frozenset = frozenset()) -> str:
    """A content hash of `value`: notebook functions and classes by their code and the globals they read
    (recursively), modules and library functions by name, everything else by joblib.hash (arrays,
    DataFrames, dicts changed in place, objects' attributes). Raises Unhashable."""
    if id(value) in seen:
        return "recursive"
    seen = seen | {id(value)}
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, (types.FunctionType, type)) and _defined_here(value):
        return _digest(_function(value, seen) if isinstance(value, types.FunctionType) else _class(value, seen))
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    import joblib

    try:
        digest = joblib.hash(value)
    except Exception as exc:  # noqa: BLE001 - any object may refuse pickling (locks, sessions, generators)
        raise Unhashable(f"{type(value).__name__} cannot be hashed ({type(exc).__name__})") from None
    if _defined_here(type(value)) and not isinstance(value, (dict, list, tuple, set)):
        digest += _digest(_class(type(value), seen))  # an instance of a notebook class: its methods count too
    return digest


def _function(fn: types.FunctionType, seen: frozenset) -> dict:
    parts = {"code": _code(fn.__code__), "defaults": fingerprint(fn.__defaults__, seen),
             "kwdefaults": fingerprint(fn.__kwdefaults__, seen),
             "closure": [fingerprint(cell.cell_contents, seen) for cell in fn.__closure__ or ()]}
    for name in sorted(_global_names(fn.__code__)):
        if name in fn.__globals__:
            parts[f"global {name}"] = fingerprint(fn.__globals__[name], seen)
    return parts


def _class(cls: type, seen: frozenset) -> dict:
    return {name: fingerprint(member, seen) for name, member in sorted(vars(cls).items())
            if isinstance(member, (types.FunctionType, staticmethod, classmethod, property, int, float, str, bool))}


def _digest(parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def inputs(code: str, namespace: dict, names: list[str] | None = None, skip: set[str] = frozenset()) -> tuple[dict[str, str], dict[str, str]]:
    """(fingerprints, unhashable reasons) of the notebook variables among `names` (default: every name
    `code` mentions) that exist in `namespace`, less `skip` (what upstream steps' keys already cover)."""
    wanted = sorted(set(re.findall(r"[A-Za-z_]\w*", code))) if names is None else names
    found, unhashable = {}, {}
    for name in wanted:
        if name.startswith("_") or name in skip or name not in namespace or name in ("In", "Out", "get_ipython", "exit", "quit"):
            continue
        try:
            found[name] = fingerprint(namespace[name])
        except Unhashable as why:
            unhashable[name] = str(why)
    return found, unhashable


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
    # The record goes first and comes back last: a crash in between leaves no record, never an old
    # record beside new outputs (a hit that would restore outputs of other inputs).
    (place / "memo.json").unlink(missing_ok=True)
    write_atomic(place / "outputs.pkl", cloudpickle.dumps(kept))
    write_json(place / "memo.json", {**record, "outputs": sorted(kept), "lost": lost})
    return lost


def restore(step: str) -> dict:
    import cloudpickle

    return {name: cloudpickle.loads(blob) for name, blob in cloudpickle.loads((folder(step) / "outputs.pkl").read_bytes()).items()}
