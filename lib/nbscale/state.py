"""What a kernel is doing, where the Jupyter server (and its nbscale panel) can see it: state files
under `<data_dir>/kernels/<pid>/`, and requests dropped there for the kernel to carry out.

Files rather than comms: the panel must show the jobs and servers of *every* kernel, including one
whose notebook tab is closed, and survive a browser reload or a server restart; a comm only reaches
the frontend attached to its kernel. A daemon thread, started with the first background job, service
or proxied UI, rewrites `jobs.json`, `servers.json` and `uis.json` (the UIs the server may proxy) when
they change and carries out requests the server writes into `requests/` ({"action": "cancel", "job": 3}, {"action": "stop", "server": "m"})."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import threading
import time
from pathlib import Path

from . import events, uilinks
from .config import settings
from .datadir import local_dir
from .contracts import PanelRequest, PublishedJob, PublishedServer, PublishedVersion
from .files import write_json

INTERVAL_S = 0.5
HEARTBEAT = "heartbeat"  # touched every interval: a folder whose heartbeat stopped is a dead kernel's
_thread: threading.Thread | None = None
_lock = threading.Lock()


def kernel_dir(data_dir: str | None = None, pid: int | None = None) -> Path:
    return (Path(data_dir) if data_dir else local_dir()) / "kernels" / str(pid or os.getpid())


def jobs_now() -> list[PublishedJob]:
    from .jobs import background

    return [PublishedJob(id=j.id, kind=j.kind, title=j.title, state=j.state, progress=j.progress, started=j.started, ended=j.ended,
                         error=j.error, log=_job_log(j)) for j in background.jobs()]


def _job_log(job) -> str | None:
    """A distributed run's chief (rank 0) log of its latest attempt, relative to the data dir (what the
    panel's log link asks the server for); in-kernel jobs print into their cell instead."""
    folder = getattr(job.handle, "job", None)
    attempts = folder.attempts() if folder is not None else []
    if not attempts:
        return None
    log = folder.log_file(attempts[-1], 0).resolve()
    data = Path(settings().data_dir).resolve()
    return str(log.relative_to(data)) if log.is_relative_to(data) else None


def servers_now() -> list[PublishedServer]:
    from . import serving

    return [PublishedServer(name=s.name, url=f"{s.url}/invocations", healthy=s.running,
                            versions=[PublishedVersion(label=side.label, weight=side.weight, replicas=len(side.replicas)) for side in s.sides])
            for s in serving.services()]


def carry_out(request: PanelRequest) -> None:
    from . import serving
    from .jobs import background

    if request.get("action") == "cancel":
        background.cancel(int(request["job"]))
    elif request.get("action") == "stop":
        serving.stop(str(request["server"]))


def publish_once(folder: Path, last: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HEARTBEAT).touch()
    for name, value in (("jobs", jobs_now()), ("servers", servers_now()), ("uis", uilinks.published())):
        if last.get(name) != value:
            write_json(folder / f"{name}.json", value)
            last[name] = value
    requests = folder / "requests"
    for path in sorted(requests.glob("*.json")) if requests.is_dir() else ():
        try:
            carry_out(json.loads(path.read_text()))
        except Exception:  # noqa: BLE001 - a stale request (job gone) must not stop the publisher
            pass
        finally:
            path.unlink(missing_ok=True)


def ensure_publishing() -> None:
    """Start the publisher thread of this kernel (once)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        last: dict = {}

        def loop():
            folder = None
            while True:
                try:
                    if folder != kernel_dir():  # the data dir moved (%nbscale connect --data-dir): publish there
                        folder = kernel_dir()
                        last.clear()
                    publish_once(folder, last)
                except Exception:  # noqa: BLE001 - a full disk now must not end the publishing for good
                    pass
                time.sleep(INTERVAL_S)

        _thread = threading.Thread(target=loop, name="nbscale-state", daemon=True)
        _thread.start()
        atexit.register(lambda: shutil.rmtree(kernel_dir(), ignore_errors=True))  # a kernel that ends leaves nothing listed


events.subscribe(events.WORK_STARTED, ensure_publishing)
