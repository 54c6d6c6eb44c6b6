"""Replica processes: start MLflow's scoring app for a model version on a free port, wait for its
/ping, read its log when it dies, stop it (and any front) without leaving an orphan."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .. import limits
from ..config import settings
from ..datadir import local_dir
from ..errors import NbscaleError
from ..processes import free_port, spawn
from ..tfenv import TENSORFLOW_ENV

START_TIMEOUT_S = 180  # a replica loads TensorFlow and the model before it answers /ping


@dataclass
class Replica:
    uri: str
    port: int
    process: subprocess.Popen
    log: Path
    restarts: int = 0  # times the watchdog started it again after it died
    next_try: float = 0.0  # monotonic time of the next allowed restart (back-off)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def url(self) -> str:
        return f"http://{settings().host}:{self.port}"


def folder_for(name: str) -> Path:
    folder = local_dir() / "serving" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _env() -> dict:
    env = {**os.environ, **TENSORFLOW_ENV, "MLFLOW_TRACKING_URI": settings().tracking_uri, "MLFLOW_REGISTRY_URI": settings().tracking_uri,
           "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")] if p)
    return env


def start_process(module: str, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """`python -m module args` with this kernel's stores in its environment (and `env`), its output in `log`; the
    module's main calls `processes.die_with_parent` first."""
    with open(log, "ab") as out:
        return spawn([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     env={**_env(), **env}, start_new_session=True)


def start_replicas(name: str, version: int, count: int, folder: Path) -> list[Replica]:
    uri = f"models:/{name}/{version}"
    if limits.litert_replicas():
        print(f"Binder profile: {name} v{version}'s replicas run its LiteRT export when it was logged with one "
              "(checked against TensorFlow); NBSCALE_PROFILE=full runs TensorFlow.")
    replicas = []
    for _ in range(count):
        port = free_port(settings().host)
        log = folder / f"replica-v{version}-{port}.log"
        replicas.append(Replica(uri, port, start_replica(uri, port, log), log))
    return replicas


def start_replica(uri: str, port: int, log: Path) -> subprocess.Popen:
    """One replica process (the first start, or the watchdog's restart: both run the same runtime)."""
    # A model logged with a checked LiteRT export runs it there; any other loads TensorFlow.
    runtime = {limits.REPLICA_RUNTIME_VARIABLE: "litert"} if limits.litert_replicas() else {}
    return start_process("nbscale.serving.replica", [uri, settings().host, str(port)], log, **runtime)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, what: str, timeout_s: float = START_TIMEOUT_S,
                 path: str = "/ping") -> None:
    """Until `process` answers 200 on `url``path` (MLflow's model server: /ping; its UI: /health); one line naming its
    log if it stops first or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NbscaleError(f"{what} stopped while starting: {_last_error(log)} (log: {log}).")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise NbscaleError(f"{what} did not answer {url}{path} within {timeout_s:.0f} s (log: {log}).")


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
