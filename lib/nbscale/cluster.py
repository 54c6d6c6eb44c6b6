"""`%nbscale cluster up|down|status`: a real Spark standalone cluster (one master, N workers) on
127.0.0.1, started from the pip-installed PySpark so a laptop user can try the cluster path.

The pip package ships `bin/spark-class` but no `sbin/start-master.sh`; the master and workers are
started with `spark-class` as processes of their own session (an interrupted cell does not kill
them), with pid files and logs under `<data_dir>/cluster/`. They outlive the kernel, like any
cluster, until `cluster down`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import limits
from .config import settings
from .errors import NbscaleError
from .files import write_json
from .processes import free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 90


@dataclass
class ClusterStatus:
    master_url: str | None
    ui_url: str | None
    workers: list[dict] = field(default_factory=list)  # {"id", "state", "cores", "cores_used", "memory_mb"}
    apps: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.master_url is not None

    @property
    def cores(self) -> int:
        return sum(w["cores"] for w in self.workers if w["state"] == "ALIVE")

    def _repr_html_(self) -> str:
        if not self.running:
            return "<div>No nbscale cluster is running: start one with <code>%nbscale cluster up --workers 2</code>.</div>"
        rows = "".join(f"<tr><td>{w['id']}</td><td>{w['state']}</td><td>{w['cores_used']}/{w['cores']}</td><td>{w['memory_mb']} MB</td></tr>"
                       for w in self.workers)
        return (f"<div class='nbscale-cluster' style='border:1px solid #ccc;border-radius:6px;padding:6px 10px'>"
                f"<b>Spark standalone cluster</b> {self.master_url} · <a href='{self.ui_url}' target='_blank'>master UI</a> · "
                f"{len(self.workers)} worker(s), {self.cores} cores, {self.apps} running app(s)<br>"
                f"<table><tr><th>worker</th><th>state</th><th>cores used</th><th>memory</th></tr>{rows}</table>"
                f"Use it: <code>%nbscale connect --master {self.master_url}</code></div>")

    def __repr__(self) -> str:
        if not self.running:
            return "No nbscale cluster is running (%nbscale cluster up --workers 2)."
        return f"Spark standalone cluster {self.master_url}: {len(self.workers)} worker(s), {self.cores} cores; UI {self.ui_url}"


def _home() -> Path:
    return Path(settings().data_dir) / "cluster"


def _spark_class() -> Path:
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not path.is_file():
        raise NbscaleError(f"{path} is missing: reinstall pyspark (pip install --force-reinstall pyspark).")
    return path


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of this process is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _state() -> dict:
    path = _home() / "cluster.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _wait_for(log: Path, text: str, pid: int, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return
        if not _alive(pid):
            break
        time.sleep(0.3)
    last = [ln for ln in (log.read_text(errors="replace") if log.exists() else "").splitlines() if ln.strip()][-1:]
    raise NbscaleError(f"The Spark {what} did not start within {START_TIMEOUT_S} s"
                       + (f" ({last[0].strip()[:200]})" if last else "") + f": see {log}.")


def _launch(args: list[str], log: Path, env: dict) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(_spark_class()), *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    return proc.pid


def up(workers: int = 1, cores: int = 2, memory: str = "2g", port: int = 7077) -> ClusterStatus:
    """Start a master and `workers` workers (each `cores` cores, `memory` for executors) on 127.0.0.1."""
    from .session import find_java

    if workers < 1 or cores < 1:
        raise NbscaleError(f"--workers {workers} --cores {cores}: a cluster needs at least 1 worker with 1 core.")
    current = status()
    if current.running:
        return current
    find_java()
    if _port_taken(port):
        raise NbscaleError(f"Port {port} on {HOST} is taken (another Spark master?): pick another with --port, "
                           f"or connect to it with %nbscale connect --master spark://{HOST}:{port}.")
    home = _home()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPARK_LOCAL_IP=HOST, SPARK_LOG_DIR=str(home / "logs"), SPARK_PID_DIR=str(home),
               # The master's REST submission server would open another port (6066); nbscale does not use it.
               SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false", PYSPARK_PYTHON=sys.executable, **limits.daemon_env())
    ui_port = free_port(HOST)
    master_log = home / "logs" / "master.log"
    pids = {"master": _launch(["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                               "--webui-port", str(ui_port)], master_log, env)}
    state = {"master_url": f"spark://{HOST}:{port}", "ui_url": f"http://{HOST}:{ui_port}", "pids": pids}
    write_json(home / "cluster.json", state)
    try:
        _wait_for(master_log, "I have been elected leader", pids["master"], "master")
        for i in range(workers):
            log = home / "logs" / f"worker-{i + 1}.log"
            pids[f"worker-{i + 1}"] = _launch(
                ["org.apache.spark.deploy.worker.Worker", "--host", HOST, "--cores", str(cores), "--memory", memory,
                 "--webui-port", str(free_port(HOST)), "--work-dir", str(home / "work" / f"worker-{i + 1}"), state["master_url"]],
                log, env)
            write_json(home / "cluster.json", state)
            _wait_for(log, "Successfully registered with master", pids[f"worker-{i + 1}"], f"worker {i + 1}")
    except BaseException:
        down()  # no half cluster stays behind
        raise
    return status()


def down(timeout: float = 20) -> bool:
    """Stop the cluster's workers (their executors with them), then the master. True when one ran."""
    state = _state()
    pids = state.get("pids", {})
    order = sorted(pids, key=lambda name: name == "master")  # workers first
    for name in order:
        if _alive(pids[name]):
            try:
                os.killpg(pids[name], signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + timeout
    for name in order:
        while _alive(pids[name]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pids[name]):
            try:
                os.killpg(pids[name], signal.SIGKILL)
            except OSError:
                pass
    (_home() / "cluster.json").unlink(missing_ok=True)
    return bool(pids)


def kill_worker(number: int) -> None:
    """Kill Spark worker `number` (1-based) and its executors at once, as a machine that fails would
    (to teach elasticity: a distributed training continues on the capacity left)."""
    state = _state()
    pid = state.get("pids", {}).get(f"worker-{number}")
    if pid is None or not _alive(pid):
        raise NbscaleError(f"Spark worker {number} is not running: see %nbscale cluster status.")
    os.killpg(pid, signal.SIGKILL)  # the worker was started in its own session: its executors share the group
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def status() -> ClusterStatus:
    """The cluster nbscale started from this data dir, read from its master's JSON page."""
    state = _state()
    pids = state.get("pids", {})
    if not pids or not _alive(pids.get("master", -1)):
        return ClusterStatus(None, None)
    try:
        with urllib.request.urlopen(state["ui_url"] + "/json/", timeout=5) as response:  # noqa: S310 - our own master
            page = json.load(response)
    except OSError:
        page = {}
    workers = [{"id": w["id"], "state": w["state"], "cores": w["cores"], "cores_used": w["coresused"], "memory_mb": w["memory"]}
               for w in page.get("workers", []) if w.get("state") != "DEAD"]
    return ClusterStatus(state["master_url"], state["ui_url"], workers, len(page.get("activeapps", [])),
                         {k: v for k, v in pids.items() if _alive(v)})
