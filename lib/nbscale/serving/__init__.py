"""Serve registered models from the notebook: `serve("fashion-cnn@champion", replicas=2)`.

Each replica is MLflow's scoring app for one model version in its own process (serving.replica);
one front process (serving.front) gives the service its URL, balances, health-checks and splits
traffic for a canary. Every process is bound to 127.0.0.1 by default, dies with the kernel
(PR_SET_PDEATHSIG), and is stopped by `stop()` and at interpreter exit."""
from __future__ import annotations

import atexit
import json
import secrets
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import events
from ..config import settings
from ..contracts import FrontConfig, FrontSide, ModelVersion, TrafficConfig
from ..datahost import require_writable
from ..errors import NbscaleError
from ..files import write_json
from ..processes import free_port, port_is_free
from .launch import Replica, folder_for, start_process, start_replica, start_replicas, stop_processes, wait_healthy
from .versions import resolve, sample_rows, trained_feed  # noqa: F401 - part of nbscale.serving's API


@dataclass
class Side:
    model: ModelVersion  # what it serves: fashion-cnn v3
    ref: str  # what was asked for: "fashion-cnn@champion"
    weight: float
    replicas: list[Replica] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.model.label


@dataclass
class Service:
    name: str
    port: int
    front: subprocess.Popen
    folder: Path
    sides: list[Side]
    shard_by: str | None = None  # each replica holds a shard: rows routed by this column's value
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # the front's control routes answer only this kernel

    def control(self, path: str, body: dict | None = None) -> urllib.request.Request:
        """An authenticated request to one of the front's control routes."""
        headers = {"authorization": f"Bearer {self.secret}"}
        if body is None:
            return urllib.request.Request(f"{self.url}{path}", headers=headers)
        return urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
                                      headers={**headers, "content-type": "application/json"})

    @property
    def url(self) -> str:
        return f"http://{settings().host}:{self.port}"

    def processes(self) -> list[subprocess.Popen]:
        return [self.front] + [r.process for side in self.sides for r in side.replicas]

    @property
    def running(self) -> bool:
        """Every process of the service is alive (the front and each replica)."""
        return all(p is not None and p.poll() is None for p in self.processes())

    def stats(self) -> dict:
        try:
            with urllib.request.urlopen(self.control("/nbscale/stats"), timeout=2) as answer:
                return json.load(answer)
        except OSError:
            return {"name": self.name, "sides": [], "down": True}

    def _repr_html_(self) -> str:
        from .card import render

        return render(self, self.stats())

    def __repr__(self) -> str:
        sides = "; ".join(f"{s.label} ({s.weight:g}%, {_replicas_line(s.replicas)})" for s in self.sides)
        return f"<Service {self.name} at {self.url}/invocations: {sides}>"


def _replicas_line(replicas: list[Replica]) -> str:
    """The real count: how many of the replicas run now, and how often the watchdog restarted them."""
    alive = sum(r.alive for r in replicas)
    restarts = sum(r.restarts for r in replicas)
    line = f"{alive} of {len(replicas)} replica{'s' * (len(replicas) != 1)} running"
    if restarts:
        line += f", {restarts} restart{'s' * (restarts != 1)}"
    given_up = [r for r in replicas if not r.alive and r.restarts >= RESTARTS]
    if given_up:
        line += f"; :{given_up[0].port} keeps dying, not restarted again (log: {given_up[0].log})"
    return line


_services: dict[str, Service] = {}
# Held while replicas are started, swapped or stopped on purpose, so the watchdog never revives one being retired.
_changing = threading.RLock()
RESTARTS = 3  # per replica; then it stays down and the service says so
WATCH_EVERY_S = 1.0
_watchdog: threading.Thread | None = None


def _ensure_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=_watch_replicas, name="nbscale-replica-watchdog", daemon=True)
        _watchdog.start()


def _watch_replicas() -> None:
    """A replica that died (killed, crashed) is started again on its port, with back-off (2, 4, 8 s) and
    at most RESTARTS times; the front's health check sends it traffic once it answers /ping."""
    while True:
        time.sleep(WATCH_EVERY_S)
        if not _changing.acquire(blocking=False):
            continue
        try:
            for service in list(_services.values()):
                for side in service.sides:
                    for replica in side.replicas:
                        if replica.alive or replica.restarts >= RESTARTS or time.monotonic() < replica.next_try:
                            continue
                        replica.restarts += 1
                        replica.next_try = time.monotonic() + 2 ** (replica.restarts + 1)
                        replica.process = start_replica(replica.uri, replica.port, replica.log)
        except Exception:  # noqa: BLE001 - a failed restart is retried on the next pass (bounded by RESTARTS)
            pass
        finally:
            _changing.release()


def traffic_root() -> Path:
    """Where fronts record what they serve, for %drift: on this machine, beside the model servers' folders."""
    from ..datadir import local_dir

    return local_dir() / "traffic"


def _configure(service: Service) -> None:
    config: FrontConfig = {"name": service.name, "shard_by": service.shard_by,
                           "sides": [FrontSide(label=s.label, weight=s.weight, replicas=[r.url for r in s.replicas]) for s in service.sides]}
    # The front reads its secret and body limit from this file at start (readable by this user only).
    write_json(service.folder / "front.json", FrontConfig(**config, secret=service.secret, max_body_bytes=settings().max_request_mb << 20,
                                                          traffic=TrafficConfig(dir=str(traffic_root()), max_bytes=settings().traffic_mb << 20,
                                                                                sample=settings().traffic_sample)), mode=0o600)
    if service.front is not None:
        with urllib.request.urlopen(service.control("/nbscale/config", config), timeout=5):
            pass


def serve(ref: str, *, replicas: int = 1, port: int | None = None, canary: str | None = None, weight: float = 10.0,
          shard_by: str | None = None, on_progress: Callable[[str], None] | None = None) -> Service:
    """Serve model version `ref` ("name@alias", "name/N" or "name") on `replicas` server processes behind
    one front URL. With `canary="name@champion"`, `ref` joins the service of that model as a canary taking
    `weight` percent of the requests (the service is started first if it is not running). With
    `shard_by=COLUMN`, each replica is a shard and requests (DataFrame payloads with COLUMN) are routed
    by the column's value, a key always to the same replica. `on_progress` receives a line while the replicas load
    their model (a TensorFlow model takes seconds to minutes)."""
    if replicas < 1:
        raise NbscaleError(f"--replicas {replicas} must be 1 or more.")
    if shard_by is not None and canary is not None:
        raise NbscaleError("--shard-by and --canary do not go together: shard one version, or canary between unsharded ones.")
    if canary is not None and not 0 < weight < 100:
        raise NbscaleError(f"--weight {weight:g} is the canary's share of requests in percent: use a number between 0 and 100.")
    require_writable(f"Serving {ref}", on_this_machine=True)  # the servers' folders and logs
    with _changing:
        return _serve(ref, replicas, port, canary, weight, shard_by, on_progress)


def _serve(ref: str, replicas: int, port: int | None, canary: str | None, weight: float, shard_by: str | None,
           on_progress: Callable[[str], None] | None = None) -> Service:
    if canary is not None:
        service = _services.get(resolve(canary)[0]) or _serve(canary, 1, port, None, weight, None, on_progress)
        if service.shard_by:
            raise NbscaleError(f"The service of {service.name} is sharded: a canary needs an unsharded one (%serve --stop it first).")
        name, version = resolve(ref)
        primary = service.sides[0]
        if primary.model == ModelVersion(name, version):
            raise NbscaleError(f"{ref} is {primary.label}, the version the service already serves: a canary must be another version.")
        side = Side(ModelVersion(name, version), ref, weight, start_replicas(name, version, replicas, service.folder))
        _await_replicas(side, on_progress)
        for old in service.sides[1:]:  # one canary at a time: a new one replaces the last
            stop_processes([r.process for r in old.replicas])
        primary.weight = 100 - weight
        service.sides = [primary, side]
        _configure(service)
        return service

    name, version = resolve(ref)
    running = _services.get(name)
    if running and _serves_exactly(running, ModelVersion(name, version), replicas, shard_by, port):
        return running  # the same %serve again (a re-run cell, a workflow's second run): nothing to restart
    if running:
        stop(name)  # serving another version (or replica count) of a served model: a fresh service
    host = settings().host
    port = port or free_port(host)
    if not port_is_free(host, port):
        raise NbscaleError(f"Port {port} on {host} is in use: pick another with --port, or leave it out for a free one.")
    folder = folder_for(name)
    side = Side(ModelVersion(name, version), ref, 100.0, start_replicas(name, version, replicas, folder))
    service = Service(name, port, None, folder, [side], shard_by)
    try:
        _await_replicas(side, on_progress)
        _configure(service)
        log = folder / "front.log"
        service.front = start_process("nbscale.serving.front", [host, str(port), str(folder / "front.json")], log)
        wait_healthy(service.url, service.front, log, f"The front of {name}", timeout_s=30)
    except BaseException:
        stop_processes([r.process for r in side.replicas] + ([service.front] if service.front else []))
        raise
    _services[name] = service
    _ensure_watchdog()
    events.emit(events.WORK_STARTED)  # the kernel's state publisher: the nbscale panel lists it, and can stop it
    return service


def end_canary(name: str, keep: str) -> str:
    """End the canary of model `name`'s service: keep="primary" stops the canary (a rollback); keep="canary"
    makes the canary's replicas the whole service under the primary's ref (a promotion: no restart, no gap)."""
    with _changing:
        served = service(name)
        if len(served.sides) < 2:
            raise NbscaleError(f"The service of {name} has no canary to end.")
        primary, canary = served.sides[0], served.sides[1]
        if keep == "canary":
            retired = primary.replicas + [r for side in served.sides[2:] for r in side.replicas]
            served.sides = [Side(canary.model, primary.ref, 100.0, canary.replicas)]
        else:
            retired = [r for side in served.sides[1:] for r in side.replicas]
            primary.weight = 100.0
            served.sides = [primary]
        _configure(served)
        stop_processes([r.process for r in retired])
        return served.sides[0].label


def _serves_exactly(service: Service, model: ModelVersion, replicas: int, shard_by: str | None, port: int | None) -> bool:
    return ([(s.model, len(s.replicas)) for s in service.sides] == [(model, replicas)] and service.shard_by == shard_by
            and port in (None, service.port) and service.running)


def _await_replicas(side: Side, on_progress: Callable[[str], None] | None = None) -> None:
    started, count = time.monotonic(), len(side.replicas)
    try:
        for i, replica in enumerate(side.replicas):
            if on_progress:
                on_progress(f"{side.label}: {i} of {count} replicas ready, replica {i + 1} is loading the model "
                            f"({time.monotonic() - started:.0f} s)")
            wait_healthy(replica.url, replica.process, replica.log, f"Replica {i + 1} of {side.label}")
        if on_progress:
            on_progress(f"{side.label}: {count} of {count} replicas ready ({time.monotonic() - started:.0f} s)")
    except BaseException:
        stop_processes([r.process for r in side.replicas])
        raise


def follow_alias(name: str, alias: str) -> str:
    """After `name@alias` moved, the services serving it switch version blue-green: replicas of the new
    version start and answer /ping, then the front sends traffic to them, then the old ones stop."""
    with _changing:
        return _follow_alias(name, alias)


events.subscribe(events.ALIAS_MOVED, follow_alias)


def _follow_alias(name: str, alias: str) -> str:
    service = _services.get(name)
    moved = []
    for side in service.sides if service else []:
        if side.ref != f"{name}@{alias}":
            continue
        model = ModelVersion(*resolve(side.ref))
        if model == side.model:
            continue
        fresh = Side(model, side.ref, side.weight, start_replicas(name, model.version, len(side.replicas), service.folder))
        _await_replicas(fresh)
        old, side.model, side.replicas = side.replicas, fresh.model, fresh.replicas
        _configure(service)
        stop_processes([r.process for r in old])
        moved.append(f"the service of {name} now answers @{alias} with {model}")
    return "; ".join(moved)


def stop(name: str | None = None) -> str:
    """Stop the service and the streams of model `name` (of every model when None)."""
    from .stream import _streams, stop_streams

    streaming = {each.model.name for each in _streams.values()}
    names = [name.partition("@")[0].partition("/")[0]] if name else sorted(set(_services) | streaming)
    for each in names:
        if each not in _services and each not in streaming:
            raise NbscaleError(f"{each} is not being served (served: {', '.join(sorted(set(_services) | streaming)) or 'nothing'}).")
    stopped = []
    for each in names:
        if each in _services:
            with _changing:
                service = _services.pop(each)
                stop_processes(service.processes())
            stopped.append(f"the service of {each}")
        stopped += stop_streams(each)
    return f"Stopped {', '.join(stopped)}." if stopped else "Nothing was being served."


def services() -> list[Service]:
    return list(_services.values())


def service(name: str) -> Service:
    name = name.partition("@")[0].partition("/")[0]
    if name not in _services:
        raise NbscaleError(f"{name} is not being served: %serve {name}@ALIAS first (served: {', '.join(_services) or 'nothing'}).")
    return _services[name]


atexit.register(lambda: _services and stop())


def predict(name: str, data):
    """Predictions for `data` (rows) from the service of model `name`, through its front."""
    from ..errors import NbscaleError
    from ..train.task import task_of_version
    from .client import post
    from .contract import contract_of

    served = service(name)
    primary = served.sides[0].model  # the primary side's version says what the rows must be
    answer = post(served.url, contract_of(primary.name, primary.version).body(data))
    try:  # the front names the version that answered by its label
        answerer = ModelVersion.from_label(answer.served_by)
        answer.task = task_of_version(answerer.name, answerer.version)
    except ValueError:  # not a version's label: shown as raw outputs
        answer.task = None
    except NbscaleError:
        answer.task = None  # shown as raw outputs, never as a guessed class
    return answer
