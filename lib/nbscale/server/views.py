"""What the nbscale panel shows, as plain functions over the data dir and the MLflow store (the
handlers only translate HTTP). Every name or path that comes from a request is checked here."""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from ..config import settings
from ..errors import NbscaleError

NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,127}$", re.ASCII)
LOG_TAIL_BYTES = 64 * 1024
STALE_S = 10  # a kernel that has not published for this long is gone (killed, or its machine slept)


class NotFound(NbscaleError):
    """The thing asked for does not exist (HTTP 404)."""


def inside(root: Path, relative: str) -> Path:
    """`relative` resolved under `root`; refused when it is absolute, climbs out with `..`, or leads
    (through a symlink, or a sibling like `root-other`) anywhere outside `root`."""
    if len(relative) > 1024 or any(len(part.encode()) > 255 for part in re.split(r"[\\/]", relative)):
        raise NbscaleError(f"{relative[:40]!r}...: the path is too long.")
    if not relative or relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
        raise NbscaleError(f"{relative!r}: give a path relative to the data dir.")
    if any(part == ".." for part in re.split(r"[\\/]", relative)):
        raise NbscaleError(f"{relative!r}: '..' is not allowed in a path.")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise NbscaleError(f"{relative!r} leads outside the data dir.")
    return target


def checked_name(value: str, what: str) -> str:
    if not NAME.match(value or ""):
        raise NbscaleError(f"{what} {value[:40]!r} is not a name: ASCII letters, digits, '.', '-' and '_' only, at most 128.")
    return value


def status() -> dict:
    cfg = settings()
    uri = cfg.tracking_uri
    return {"data_dir": cfg.data_dir, "master": cfg.master, "tracking_uri": uri,
            "mlflow_ui": uri if uri.startswith(("http://", "https://")) else None,
            "mlflow_ui_command": None if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"}


def datasets() -> list[dict]:
    from ..ingest import datasets as every_version

    return every_version()


def dataset(name: str) -> dict:
    from ..ingest import store

    checked_name(name, "Dataset")
    inside(Path(settings().data_dir), f"datasets/{name}")
    versions = store.versions(name)
    if not versions:
        raise NotFound(f"No dataset named {name!r}.")
    shown = []
    for number in versions:
        try:
            m = store.Version(name, number).manifest
        except store.BrokenVersion as broken:
            shown.append({"version": f"{name}@v{number}", "broken": str(broken)})
            continue
        shown.append({"version": f"{name}@v{number}", "rows": m["counts"]["loaded"], "quarantined": m["counts"]["quarantined"],
                      "schema": m["schema"], "source": m["source"], "created": m["created"], "options": m.get("options", {}),
                      "magic": f"%%train --data {name}@v{number} --epochs 5 -o fit"})
    return {"name": name, "versions": shown}


def _mlflow():
    from ..session import mlflow

    return mlflow().MlflowClient()


def runs(limit: int = 20) -> dict:
    if not 1 <= limit <= 200:
        raise NbscaleError(f"limit={limit}: ask for 1 to 200 runs.")
    client = _mlflow()
    experiments = client.search_experiments(order_by=["last_update_time DESC"])
    ui = status()["mlflow_ui"]
    found = client.search_runs([e.experiment_id for e in experiments], max_results=limit, order_by=["attributes.start_time DESC"]) \
        if experiments else []
    names = {e.experiment_id: e.name for e in experiments}
    return {"experiments": [{"id": e.experiment_id, "name": e.name} for e in experiments],
            "runs": [{"id": r.info.run_id, "name": r.info.run_name, "experiment": names.get(r.info.experiment_id), "status": r.info.status,
                      "data": r.data.params.get("data"), "metrics": {k: round(v, 4) for k, v in r.data.metrics.items()},
                      "url": f"{ui}/#/experiments/{r.info.experiment_id}/runs/{r.info.run_id}" if ui else None,
                      "magic": f"%register --run {r.info.run_id} --name MODEL --alias champion"} for r in found]}


def models() -> list[dict]:
    from ..registry import versions

    return [{"name": v.name, "version": v.version, "aliases": v.aliases, "run": v.run_id, "data": v.data,
             "metrics": {k: round(x, 4) for k, x in v.metrics.items()}} for v in versions()]


def _kernels() -> list[Path]:
    """Folders of kernels publishing now (a killed kernel's folder stays, but its heartbeat stops): under the data
    dir, and under this machine's folder for Spark Connect sessions (their data dir is a folder of the cluster)."""
    from ..datadir import connect_home
    from ..state import HEARTBEAT

    folders = []
    for root in (Path(settings().data_dir) / "kernels", connect_home() / "kernels"):
        if root.is_dir():
            base = root.resolve()
            folders += [d for d in sorted(root.iterdir()) if ID.fullmatch(d.name) and d.resolve().is_relative_to(base)]
    return [d for d in folders if _beats(d / HEARTBEAT)]


def _beats(heartbeat: Path) -> bool:
    try:
        return time.time() - heartbeat.stat().st_mtime < STALE_S
    except OSError:
        return False


def _published(kind: str) -> list[dict]:
    found = []
    for folder in _kernels():
        try:
            items = json.loads((folder / f"{kind}.json").read_text())
        except (OSError, ValueError):
            continue
        found += [{**item, "kernel": int(folder.name)} for item in items]
    return found


def jobs() -> list[dict]:
    return _published("jobs")


def servers() -> list[dict]:
    return _published("servers")


ID = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() and int() also take '١' (Arabic-Indic one)


def uis() -> list[dict]:
    """The UIs (Spark's, MLflow's) that running kernels ask the server to proxy (nbscale.server.uiproxy)."""
    return _published("uis")


def _checked_kernel(kernel: str) -> int:
    if not ID.fullmatch(kernel or ""):
        raise NbscaleError(f"Kernel {kernel[:40]!r} is not a process id (ASCII digits, at most 10).")
    return int(kernel)


def _request(kernel: str, request: dict) -> dict:
    from ..files import write_json

    _checked_kernel(kernel)
    folder = next((f for f in _kernels() if f.name == kernel), None)  # a folder the listing found, never one built from the request
    if folder is None:
        raise NotFound(f"No running kernel {kernel} publishes nbscale state.")
    write_json(folder / "requests" / f"{uuid.uuid4().hex}.json", request)
    return {"requested": request, "kernel": int(kernel)}


def cancel_job(kernel: str, job: str) -> dict:
    pid = _checked_kernel(kernel)
    if not ID.fullmatch(job or ""):
        raise NbscaleError(f"Job {job[:40]!r} is not a job number (ASCII digits, at most 10).")
    if not any(j["kernel"] == pid and j["id"] == int(job) for j in jobs()):
        raise NotFound(f"Kernel {kernel} has no job {job}.")
    return _request(kernel, {"action": "cancel", "job": int(job)})


def stop_server(kernel: str, name: str) -> dict:
    pid = _checked_kernel(kernel)
    checked_name(name, "Server")
    if not any(s["kernel"] == pid and s["name"] == name for s in servers()):
        raise NotFound(f"Kernel {kernel} serves no model {name!r}.")
    return _request(kernel, {"action": "stop", "server": name})


def log_tail(relative: str) -> dict:
    path = inside(Path(settings().data_dir), relative)
    if not path.is_file():
        raise NotFound(f"No log {relative!r} in the data dir.")
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - LOG_TAIL_BYTES, 0))
        return {"path": relative, "text": f.read().decode(errors="replace")}
