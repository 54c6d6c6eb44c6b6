"""Serve registered models from the notebook: `serve("fashion-cnn@champion", replicas=2)`.

Each replica is MLflow's scoring app for one model version in its own process (serving.replica);
one front process (serving.front) gives the service its URL, balances, health-checks and splits
traffic for a canary. Every process is bound to 127.0.0.1 by default, dies with the kernel
(PR_SET_PDEATHSIG), and is stopped by `stop()` and at interpreter exit."""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..config import settings
from ..errors import NbscaleError
from ..processes import free_port, port_is_free

START_TIMEOUT_S = 180  # a replica loads TensorFlow and the model before it answers /ping


@dataclass
class Replica:
    uri: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://{settings().host}:{self.port}"


@dataclass
class Side:
    label: str  # "fashion-cnn v3"
    ref: str  # what was asked for: "fashion-cnn@champion"
    weight: float
    replicas: list[Replica] = field(default_factory=list)


@dataclass
class Service:
    name: str
    port: int
    front: subprocess.Popen
    folder: Path
    sides: list[Side]
    shard_by: str | None = None  # each replica holds a shard: rows routed by this column's value

    @property
    def url(self) -> str:
        return f"http://{settings().host}:{self.port}"

    def stats(self) -> dict:
        try:
            with urllib.request.urlopen(f"{self.url}/nbscale/stats", timeout=2) as answer:
                return json.load(answer)
        except OSError:
            return {"name": self.name, "sides": [], "down": True}

    def _repr_html_(self) -> str:
        from .card import render

        return render(self, self.stats())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        from ..widgets.servecard import ServeCard

        # The live widget where widgets run; the card as HTML and a line of text where they do not.
        bundle = ServeCard(self).widget._repr_mimebundle_()
        bundle.update({"text/html": self._repr_html_(), "text/plain": repr(self)})
        display(bundle, raw=True)

    def __repr__(self) -> str:
        sides = "; ".join(f"{s.label} ({s.weight:g}%, {len(s.replicas)} replica{'s' * (len(s.replicas) != 1)})" for s in self.sides)
        return f"<Service {self.name} at {self.url}/invocations: {sides}>"


_services: dict[str, Service] = {}


def resolve(ref: str) -> tuple[str, int]:
    """"name@alias", "name/3" or "name" (its latest version) -> (name, version), checked in the registry."""
    from ..registry import _client

    client = _client()
    name, _, alias = ref.partition("@")
    name, _, number = name.partition("/")
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - the store's own error type
        raise NbscaleError(f"There is no registered model {name!r}: see %models, or %register it first.") from None
    if alias:
        aliases = model.aliases or {}
        if alias not in aliases:
            raise NbscaleError(f"{name} has no alias @{alias} (aliases: {', '.join('@' + a for a in sorted(aliases)) or 'none'}): "
                               f"%register --name {name} --run RUN_ID --alias {alias}, or pick one from %models.")
        return name, int(aliases[alias])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if number:
        if not number.isdigit() or int(number) not in versions:
            raise NbscaleError(f"{name} has no version {number} (versions: {', '.join(map(str, versions)) or 'none'}).")
        return name, int(number)
    return name, versions[-1]


def _folder(name: str) -> Path:
    folder = Path(settings().data_dir) / "serving" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _env() -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=settings().tracking_uri, MLFLOW_REGISTRY_URI=settings().tracking_uri,
               TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")] if p)
    return env


def _start(module: str, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_env(), start_new_session=True)


def _start_replicas(name: str, version: int, count: int, folder: Path) -> list[Replica]:
    uri = f"models:/{name}/{version}"
    replicas = []
    for _ in range(count):
        port = free_port(settings().host)
        log = folder / f"replica-v{version}-{port}.log"
        replicas.append(Replica(uri, port, _start("nbscale.serving.replica", [uri, settings().host, str(port)], log), log))
    return replicas


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NbscaleError(f"{what} stopped while starting: {_last_error(log)} (log: {log}).")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise NbscaleError(f"{what} did not answer {url}/ping within {timeout_s:.0f} s (log: {log}).")


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _stop_processes(processes: list[subprocess.Popen]) -> None:
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


def _configure(service: Service) -> None:
    config = {"name": service.name, "shard_by": service.shard_by,
              "sides": [{"label": s.label, "weight": s.weight, "replicas": [r.url for r in s.replicas]} for s in service.sides]}
    (service.folder / "front.json").write_text(json.dumps(config))
    if service.front is not None:
        request = urllib.request.Request(f"{service.url}/nbscale/config", data=json.dumps(config).encode(),
                                         headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


def serve(ref: str, *, replicas: int = 1, port: int | None = None, canary: str | None = None, weight: float = 10.0,
          shard_by: str | None = None) -> Service:
    """Serve model version `ref` ("name@alias", "name/N" or "name") on `replicas` server processes behind
    one front URL. With `canary="name@champion"`, `ref` joins the service of that model as a canary taking
    `weight` percent of the requests (the service is started first if it is not running). With
    `shard_by=COLUMN`, each replica is a shard and requests (DataFrame payloads with COLUMN) are routed
    by the column's value, a key always to the same replica."""
    if replicas < 1:
        raise NbscaleError(f"--replicas {replicas} must be 1 or more.")
    if shard_by is not None and canary is not None:
        raise NbscaleError("--shard-by and --canary do not go together: shard one version, or canary between unsharded ones.")
    if canary is not None and not 0 < weight < 100:
        raise NbscaleError(f"--weight {weight:g} is the canary's share of requests in percent: use a number between 0 and 100.")
    if canary is not None:
        service = _services.get(resolve(canary)[0]) or serve(canary, port=port)
        if service.shard_by:
            raise NbscaleError(f"The service of {service.name} is sharded: a canary needs an unsharded one (%serve --stop it first).")
        name, version = resolve(ref)
        primary = service.sides[0]
        if primary.label == f"{name} v{version}":
            raise NbscaleError(f"{ref} is {primary.label}, the version the service already serves: a canary must be another version.")
        side = Side(f"{name} v{version}", ref, weight, _start_replicas(name, version, replicas, service.folder))
        _await_replicas(side)
        for old in service.sides[1:]:  # one canary at a time: a new one replaces the last
            _stop_processes([r.process for r in old.replicas])
        primary.weight = 100 - weight
        service.sides = [primary, side]
        _configure(service)
        return service

    name, version = resolve(ref)
    if name in _services:
        stop(name)  # serving another version (or replica count) of a served model: a fresh service
    host = settings().host
    port = port or free_port(host)
    if not port_is_free(host, port):
        raise NbscaleError(f"Port {port} on {host} is in use: pick another with --port, or leave it out for a free one.")
    folder = _folder(name)
    side = Side(f"{name} v{version}", ref, 100.0, _start_replicas(name, version, replicas, folder))
    service = Service(name, port, None, folder, [side], shard_by)
    try:
        _await_replicas(side)
        _configure(service)
        log = folder / "front.log"
        service.front = _start("nbscale.serving.front", [host, str(port), str(folder / "front.json")], log)
        _wait_healthy(service.url, service.front, log, f"The front of {name}", timeout_s=30)
    except BaseException:
        _stop_processes([r.process for r in side.replicas] + ([service.front] if service.front else []))
        raise
    _services[name] = service
    return service


def _await_replicas(side: Side) -> None:
    try:
        for i, replica in enumerate(side.replicas):
            _wait_healthy(replica.url, replica.process, replica.log, f"Replica {i + 1} of {side.label}")
    except BaseException:
        _stop_processes([r.process for r in side.replicas])
        raise


def follow_alias(name: str, alias: str) -> str:
    """After `name@alias` moved, the services serving it switch version blue-green: replicas of the new
    version start and answer /ping, then the front sends traffic to them, then the old ones stop."""
    service = _services.get(name)
    moved = []
    for side in service.sides if service else []:
        if side.ref != f"{name}@{alias}":
            continue
        _, version = resolve(side.ref)
        label = f"{name} v{version}"
        if label == side.label:
            continue
        fresh = Side(label, side.ref, side.weight, _start_replicas(name, version, len(side.replicas), service.folder))
        _await_replicas(fresh)
        old, side.label, side.replicas = side.replicas, fresh.label, fresh.replicas
        _configure(service)
        _stop_processes([r.process for r in old])
        moved.append(f"the service of {name} now answers @{alias} with {label}")
    return "; ".join(moved)


def stop(name: str | None = None) -> str:
    """Stop the service and the streams of model `name` (of every model when None)."""
    from .stream import _streams, stop_streams

    streaming = {each.label.rsplit(" v", 1)[0] for each in _streams.values()}
    names = [name.partition("@")[0].partition("/")[0]] if name else sorted(set(_services) | streaming)
    for each in names:
        if each not in _services and each not in streaming:
            raise NbscaleError(f"{each} is not being served (served: {', '.join(sorted(set(_services) | streaming)) or 'nothing'}).")
    stopped = []
    for each in names:
        if each in _services:
            service = _services.pop(each)
            _stop_processes([service.front] + [r.process for s in service.sides for r in s.replicas])
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


def trained_feed(name: str, version, data: str | None = None, otherwise: str = ""):
    """(FeedSpec, dataset) for model version `name` vN: how its training run read features (label, scale),
    applied to dataset version `data` (default: the one it was trained on)."""
    from .. import feed
    from ..ingest import dataset
    from ..registry import _client

    run_id = (_client().get_model_version(name, str(version)).tags or {}).get("nbscale.run_id")
    params = _client().get_run(run_id).data.params if run_id else {}
    if data is None and "data" not in params:
        raise NbscaleError(f"{name} v{version} was not trained by nbscale: {otherwise}.")
    source = dataset(data or params["data"])
    return feed.spec_for(source, params.get("label", "label"), 1, float(params.get("scale", 1.0)), 0), source


def sample_rows(service: Service, n: int):
    """`n` rows of the served version's training data, as the model takes them (what the card's Send posts)."""
    import numpy as np
    import pyarrow.dataset as pads

    name, version = service.sides[0].label.rsplit(" v", 1)
    spec, trained_on = trained_feed(name, version, otherwise="send your own rows with %predict")
    table = pads.dataset(trained_on.path, format="parquet").head(n, columns=list(spec.features))
    if len(spec.features) == 1 and spec.feature_shape != (1,):
        x = np.stack(table.column(0).to_numpy(zero_copy_only=False)).astype(np.float32)
    else:
        x = np.stack([table.column(c).to_numpy().astype(np.float32) for c in spec.features], axis=1)
    return x.reshape((-1, *spec.feature_shape)) / np.float32(spec.scale)


def predict(name: str, data):
    """Predictions for `data` (rows) from the service of model `name`, through its front."""
    from .client import as_rows, post

    return post(service(name).url, as_rows(data))
