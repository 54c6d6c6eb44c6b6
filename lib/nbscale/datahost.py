"""Where the data dir's files are touched: here, or on the cluster when the notebook is a Spark Connect client.

In client mode (and locally) the notebook sees the data dir (a local folder, or a shared mount), so the
dataset store lists, reads and renames its files directly. A laptop on Spark Connect shares no disk
with the cluster: `Nbscale.data_dir` then names a folder *on the cluster*, and each of those small file
operations runs as a one-task Spark job on an executor, which returns its result (or raises its error)
back here. One function, `on_data_host`, is that switch; the store's file logic is written once.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from .config import over_connect, settings
from .datadir import ReadOnlyDataDir, local_dir, require_writable_store, writable
from .errors import NbscaleError, spark_errors

T = TypeVar("T")
CHUNK_BYTES = 8 << 20  # one upload message stays far below Spark Connect's 128 MiB gRPC limit


def on_data_host(fn: Callable[..., T], *args) -> T:
    """`fn(*args)` where the data dir is: here, or in one Spark task on the cluster over Connect. `fn`
    must be a module-level function of nbscale (the executors import it) taking and returning picklable values."""
    if not over_connect():
        return fn(*args)
    import cloudpickle

    from .session import spark

    payload = cloudpickle.dumps((fn, args))

    def run_there(batches):  # on an executor
        import cloudpickle as pickler
        import pandas as pd

        for _ in batches:
            pass
        call, arguments = pickler.loads(payload)
        try:
            answer = pickler.dumps(("value", call(*arguments)))
        except Exception as exc:  # noqa: BLE001 - the error travels back and is raised in the notebook
            answer = pickler.dumps(("error", exc))
        yield pd.DataFrame({"answer": [answer]})

    with spark_errors("Reaching the data dir on the cluster"):  # e.g. the Connect server went away: one line
        rows = spark().range(1, numPartitions=1).mapInPandas(run_there, "answer binary").collect()
    kind, value = cloudpickle.loads(rows[0]["answer"])
    if kind == "error":
        raise value
    return value


def write_chunk(path: str, data: bytes, offset: int) -> int:
    """Write `data` at `offset` of `path` (the first chunk creates it); its size after. Runs on the data host."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.write(data)
    return os.path.getsize(path)


def upload(local: Path, remote: str, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy the laptop's file `local` to `remote` on the data host, in chunks through Spark."""
    with open(local, "rb") as f:
        _send(f, remote, str(local), on_bytes)


def put_bytes(remote: str, data: bytes) -> None:
    """Write `data` as the file `remote` on the data host (in chunks over Connect; here directly)."""
    _send(io.BytesIO(data), remote, "the data")


def _send(source: BinaryIO, remote: str, what: str, on_bytes: Callable[[int], None] | None = None) -> None:
    offset = 0
    while True:
        data = source.read(CHUNK_BYTES)
        if not data and offset:
            break
        size = on_data_host(write_chunk, remote, data, offset)
        if size != offset + len(data):
            raise NbscaleError(f"Copying {what} to {remote} on the cluster wrote {size} bytes where {offset + len(data)} were sent; "
                               "nothing was kept of it. Try again.")
        offset += len(data)
        if on_bytes:
            on_bytes(offset)
        if not data:
            break


def read_chunk(path: str, offset: int, size: int) -> bytes:
    """Up to `size` bytes of `path` from `offset` (empty at its end). Runs on the data host."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def download(remote: str, local: Path) -> Path:
    """Copy the data host's file `remote` to this machine's `local`, in chunks through Spark (a copy here too)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(local, "wb") as f:
        offset = 0
        while True:
            data = on_data_host(read_chunk, remote, offset, CHUNK_BYTES)
            f.write(data)
            offset += len(data)
            if len(data) < CHUNK_BYTES:
                return local


def remove_tree(path: str) -> None:
    """Delete a folder of the data dir, if it is there. Runs on the data host."""
    shutil.rmtree(path, ignore_errors=True)


def require_writable(doing: str, data_dir: str | None = None, on_this_machine: bool = False) -> None:
    """Refuse `doing` (e.g. "Ingesting pairs") in one line when the data dir takes no writes — and the
    folder of the MLflow store when that is a SQLite file elsewhere. `on_this_machine`: the work writes
    into this machine's own folder (model servers), which over Connect is not the cluster's data dir."""
    data = Path(data_dir or (local_dir() if on_this_machine else settings().data_dir))
    if not (writable(data) if on_this_machine else on_data_host(writable, str(data))):
        raise ReadOnlyDataDir(f"{doing} needs to write into the data dir {data}, which is read-only: datasets, runs and models "
                              "there can be read but not added. Point Nbscale.data_dir (--data-dir, NBSCALE_DATA_DIR) "
                              "at a writable folder to write.")
    require_writable_store(doing)


def classic_only(doing: str, why: str) -> None:
    """Refuse, in one line, work that does not run over Spark Connect yet (before anything starts)."""
    if over_connect():
        raise NbscaleError(f"{doing} does not run over Spark Connect yet ({settings().master}): {why}. Run it from a notebook "
                           "inside the cluster's network with a classic master (%nbscale connect --master spark://HOST:7077).")


SERVER_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql", "databricks")


def require_shared_tracking(doing: str, why: str) -> None:
    """Over Spark Connect, refuse in one line work whose executors use MLflow themselves when the store is on
    this machine (the default there: a SQLite file the cluster cannot reach). A tracking server both reach works."""
    uri = settings().tracking_uri
    if over_connect() and uri.split(":", 1)[0].split("+", 1)[0] not in SERVER_SCHEMES:
        raise NbscaleError(f"{doing} over Spark Connect needs an MLflow tracking server the cluster reaches too ({why}), but this "
                           f"session's store is {uri} on this machine: reconnect with --tracking-uri http://HOST:5000 "
                           "(an `mlflow server --serve-artifacts` that the laptop and the cluster both reach).")
