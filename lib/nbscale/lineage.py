"""Lineage: which dataset version trained which run, which model version came from it, which service
serves it — read from what nbscale already records (dataset manifests, the run's `data` parameter,
the model version's `nbscale.run_id`/`nbscale.data` tags, the kernel's running services), so there is
no second metadata store to keep in step.

`lineage("fashion-cnn@champion")` follows one model version up to its data and down to its servers;
`lineage("fashion@v2")` shows everything downstream of a dataset version."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from .errors import NbscaleError
from .tags import DATA, run_of

DATASET_REF = re.compile(r"^[\w.\-]+@(v\d+|latest)$")
SHOWN_METRICS = ("val_accuracy", "accuracy", "val_loss")


@dataclass
class Node:
    kind: str  # dataset, run, model, service
    label: str
    detail: str
    children: list["Node"] = field(default_factory=list)


class Lineage:
    def __init__(self, target: str, roots: list[Node]):
        self.target, self.roots = target, roots

    def nodes(self, kind: str | None = None) -> list[Node]:
        found, stack = [], list(self.roots)
        while stack:
            node = stack.pop(0)
            found.append(node)
            stack[:0] = node.children
        return [n for n in found if kind is None or n.kind == kind]

    def __repr__(self) -> str:
        lines = [f"lineage of {self.target}:"]

        def walk(node: Node, depth: int) -> None:
            lines.append("  " * depth + ("└─ " if depth else "") + f"{node.kind} {node.label} · {node.detail}")
            for child in node.children:
                walk(child, depth + 1)

        for root in self.roots:
            walk(root, 0)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colours = {"dataset": "#2b6cb0", "run": "#6b46c1", "model": "#2f855a", "service": "#c05621"}

        def item(node: Node) -> str:
            children = "".join(item(c) for c in node.children)
            return (f"<li><b style='color:{colours[node.kind]}'>{node.kind}</b> <code>{html.escape(node.label)}</code> "
                    f"<span style='color:#555'>{html.escape(node.detail)}</span>{f'<ul>{children}</ul>' if children else ''}</li>")

        return (f"<div class='nbscale-lineage'><b>lineage of {html.escape(self.target)}</b>"
                f"<ul style='list-style:none;padding-left:0.5em'>{''.join(item(r) for r in self.roots)}</ul></div>")


def lineage(ref: str) -> Lineage:
    """A dataset version ("name@v2", "name@latest") or a model version ("name@alias", "name/3", "name")."""
    ref = ref.strip()
    if DATASET_REF.match(ref):  # MLflow reserves "latest" and "v<N>": they are never model aliases
        return _from_dataset(ref)
    from .session import tracking_client as _client

    name = ref.partition("@")[0].partition("/")[0]
    try:
        _client().get_registered_model(name)
    except Exception:  # noqa: BLE001 - not a model: perhaps a dataset name
        from .ingest import store

        if store.versions(name):
            return _from_dataset(ref)
        raise NbscaleError(f"{ref!r} is neither a registered model nor a dataset: see %models and %datasets.") from None
    return _from_model(ref)


def _from_model(ref: str) -> Lineage:
    from .session import tracking_client as _client
    from .serving.versions import resolve

    name, number = resolve(ref)
    client = _client()
    version = client.get_model_version(name, str(number))
    run_id = run_of(version)
    run = client.get_run(run_id)
    data = (version.tags or {}).get(DATA) or run.data.params.get("data", "")
    model = _model_node(client, name, number)
    run_node = _run_node(client, run, [model])
    return Lineage(ref, [_dataset_node(data, [run_node])] if data else [run_node])


def _from_dataset(ref: str) -> Lineage:
    from .ingest import dataset
    from .session import tracking_client as _client
    from .session import mlflow

    exact = dataset(ref).ref  # "name@latest" -> "name@v3": runs record the exact version
    client = _client()
    runs = mlflow().search_runs(search_all_experiments=True, filter_string=f"params.data = '{exact}'", output_format="list",
                                order_by=["attributes.start_time ASC"])
    ids = {r.info.run_id for r in runs}
    # A distributed run's workers and a search's trials are child runs: shown as their parent, which
    # also holds the models registered from them (a %%tune registers its best trial's).
    shown_as = {r.info.run_id: r.data.tags["mlflow.parentRunId"] if r.data.tags.get("mlflow.parentRunId") in ids else r.info.run_id
                for r in runs}
    by_run: dict[str, list[Node]] = {}
    aliases: dict[str, dict] = {}  # one registry lookup per model, not per version
    for v in client.search_model_versions():
        run_id = run_of(v)
        if run_id in ids:
            by_run.setdefault(shown_as[run_id], []).append(_model_node(client, v.name, int(v.version), aliases))
    top = [r for r in runs if shown_as[r.info.run_id] == r.info.run_id]
    return Lineage(ref, [_dataset_node(exact, [_run_node(client, r, by_run.get(r.info.run_id, [])) for r in top])])


def _dataset_node(ref: str, children: list[Node]) -> Node:
    from .ingest import dataset

    try:
        manifest = dataset(ref).manifest
    except NbscaleError:
        return Node("dataset", ref, "no longer in the data dir", children)
    counts = manifest["counts"]
    quarantined = f", {counts['quarantined']} quarantined" if counts.get("quarantined") else ""
    return Node("dataset", ref, f"{counts['loaded']} rows{quarantined} · from {manifest['source']} · {manifest['created'][:16]}", children)


def _run_node(client, run, children: list[Node]) -> Node:
    experiment = client.get_experiment(run.info.experiment_id).name
    metrics = ", ".join(f"{k} {run.data.metrics[k]:.3f}" for k in SHOWN_METRICS if k in run.data.metrics)
    name = run.info.run_name or ""
    return Node("run", run.info.run_id[:8], f"{name} in experiment {experiment} · {run.info.status}" + (f" · {metrics}" if metrics else ""),
                children)


def _model_node(client, name: str, number: int, aliases_of: dict | None = None) -> Node:
    from . import serving

    aliases_of = {} if aliases_of is None else aliases_of
    if name not in aliases_of:
        aliases_of[name] = client.get_registered_model(name).aliases or {}
    aliases = sorted(a for a, v in aliases_of[name].items() if int(v) == number)
    label = f"{name} v{number}"
    services = []
    for service in serving.services():
        for side in service.sides:
            if side.label == label:
                replicas = len(side.replicas)
                services.append(Node("service", f"{service.url}/invocations",
                                     f"{replicas} replica{'s' * (replicas != 1)} · {side.weight:g}% of {service.name}'s traffic"))
    return Node("model", label, " ".join("@" + a for a in aliases) or "no alias", services)
