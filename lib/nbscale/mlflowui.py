"""`%nbscale ui`: the MLflow UI of this notebook's tracking store, started when none runs.

A tracking server already has its UI (its URL is returned). For the local SQLite store, MLflow's own UI app runs
in one child process on 127.0.0.1 only — it has no authentication and can delete runs, so it is never bound to
another address — and dies with the kernel (the parent-death signal is set before it starts)."""
from __future__ import annotations

import atexit
import html
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from .config import over_connect, settings
from .datadir import local_dir, work_dir
from .errors import NbscaleError
from .processes import free_port
from .uilinks import browser_url, forget

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 90
_lock = threading.Lock()
_running: dict[str, "MlflowUI"] = {}  # tracking URI -> its UI


@dataclass
class MlflowUI:
    url: str
    store: str
    process: subprocess.Popen | None = field(default=None, repr=False)  # None: a tracking server's own UI

    @property
    def running(self) -> bool:
        return self.process is None or self.process.poll() is None

    @property
    def link(self) -> str:
        """What a browser opens: a UI started here goes through the Jupyter server when it proxies UIs
        (JupyterLab on another machine, Binder); a tracking server's own UI is linked as it is."""
        return self.url if self.process is None else browser_url(self.url, "mlflow")

    def stop(self) -> None:
        if self.process is not None:
            from .serving.launch import stop_processes

            forget("mlflow")
            stop_processes([self.process])

    def _repr_html_(self) -> str:
        whose = "the tracking server's own UI" if self.process is None else f"started for {html.escape(self.store)} at {self.url}"
        return (f"<div class='nbscale-ui'>MLflow UI: <a href='{html.escape(self.link)}' target='_blank'>{html.escape(self.link)}</a> "
                f"<span style='opacity:.65'>({whose})</span></div>")

    def __repr__(self) -> str:
        return f"MLflow UI at {self.link}" + (" (the tracking server's own)" if self.process is None else f" for {self.store}")


def mlflow_ui() -> MlflowUI:
    """The MLflow UI for the current tracking URI: a server's own, or one started on 127.0.0.1 for a local store."""
    uri = settings().tracking_uri
    if uri.startswith(("http://", "https://")):
        return MlflowUI(uri.rstrip("/"), uri)
    if not uri.startswith("sqlite:///"):
        raise NbscaleError(f"%nbscale ui shows a SQLite store or a tracking server, not {uri}: run `mlflow ui --backend-store-uri {uri}`.")
    with _lock:
        known = _running.get(uri)
        if known is not None and known.running:
            return known
        ui = _start(uri)
        _running[uri] = ui
        return ui


def _start(uri: str) -> MlflowUI:
    port = free_port(LOOPBACK)
    log = (work_dir() if not over_connect() else local_dir()) / "mlflow-ui.log"  # writable even beside a read-only data dir
    # MLflow's UI app (what `mlflow ui` runs) in one uvicorn process: `mlflow ui` itself would start uvicorn as a
    # grandchild that a killed kernel leaves behind. The store reaches the app as `mlflow server` hands it over.
    # This module's main runs the app under uvicorn in a process that dies with the kernel; it is started as the model
    # servers are (their environment names this kernel's store, not one the kernel's environment may have inherited).
    from .serving.launch import start_process, wait_healthy

    process = start_process("nbscale.mlflowui", [LOOPBACK, str(port)], log, _MLFLOW_SERVER_FILE_STORE=uri,
                            _MLFLOW_SERVER_REGISTRY_STORE=uri, _MLFLOW_SGI_NAME="uvicorn")
    url = f"http://{LOOPBACK}:{port}"

    try:
        wait_healthy(url, process, log, "The MLflow UI", timeout_s=START_TIMEOUT_S, path="/health")
    except BaseException:
        process.kill()
        raise
    return MlflowUI(url, uri, process)


def _stop_all() -> None:
    for ui in list(_running.values()):
        ui.stop()



atexit.register(_stop_all)


def main(argv: list[str]) -> int:
    """`python -m nbscale.mlflowui HOST PORT`: MLflow's UI app (the store in the environment, as `mlflow server`
    hands it over) under one uvicorn worker; the process ends when the kernel that started it does."""
    from .processes import die_with_parent

    die_with_parent()
    host, port = argv
    import uvicorn

    uvicorn.run("mlflow.server.fastapi_app:app", host=host, port=int(port), workers=1, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
