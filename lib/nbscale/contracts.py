"""The JSON that crosses a process boundary, typed once: what the kernel publishes for the JupyterLab panel
(mirrored in extension/src/types.ts), the serving front's configuration, a distributed worker's state and
result files, and the model version a served side holds. Writers build these; readers read these names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict


@dataclass(frozen=True, order=True)
class ModelVersion:
    """One registered model version. Its label ("digits v3") is how the front, the traffic log and the cards
    name it; `from_label` is the one place that reads a label back."""

    name: str
    version: int

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def __str__(self) -> str:
        return self.label

    @classmethod
    def from_label(cls, label: str) -> ModelVersion:
        name, _, version = label.rpartition(" v")
        if not name or not version.isdigit():
            raise ValueError(f"{label!r} is not a model version label (NAME vN)")
        return cls(name, int(version))


# The panel's view of this kernel: <kernel dir>/jobs.json and servers.json, read by the server extension.
class PublishedJob(TypedDict):
    id: int
    kind: str
    title: str
    state: str
    progress: str
    started: float
    ended: float | None
    error: str | None
    log: str | None  # the chief's log, relative to the data dir


class PublishedVersion(TypedDict):
    label: str
    weight: float
    replicas: int


class PublishedServer(TypedDict):
    name: str
    url: str
    healthy: bool
    versions: list[PublishedVersion]


class PublishedUI(TypedDict):
    """A UI of the kernel that the Jupyter server may proxy (<kernel dir>/uis.json; nbscale.uilinks)."""
    kind: str  # "spark" or "mlflow"
    host: str
    port: int


class PanelRequest(TypedDict, total=False):
    """What the panel asks a kernel to do (<kernel dir>/requests/*.json)."""

    action: Literal["cancel", "stop"]
    job: int
    server: str


# The serving front's configuration: front.json at start (with the secret and limits), then POST /control/config.
class FrontSide(TypedDict):
    label: str  # a ModelVersion's label
    weight: float
    replicas: list[str]  # replica URLs


class TrafficConfig(TypedDict):
    dir: str
    max_bytes: int
    sample: float


class FrontConfig(TypedDict, total=False):
    name: str
    shard_by: str | None
    sides: list[FrontSide]
    secret: str  # only in front.json (mode 0600), never in a POST
    max_body_bytes: int
    traffic: TrafficConfig


# A distributed worker's files in the job folder: attempts/N/worker-RANK.json (rewritten as it trains) and result-RANK.json.
class WorkerState(TypedDict, total=False):
    rank: int
    role: str  # worker, chief, ps
    index: int
    pid: int
    attempt: int
    host: str
    state: str  # starting, serving, training, waiting for the notebook, finished
    epoch: int
    epochs: int
    step: int
    steps: int
    epochs_done: int
    rows: int
    threads: int
    updated: float
    peak_rss_mb: float
    cpu_s: float
    # Launch phases (time.time()): the process running, TensorFlow and the model ready, the first step done.
    started_at: float
    ready_at: float
    first_step_at: float


class WorkerResult(TypedDict):
    rank: int
    role: str
    digest: str  # of the final weights: every all-reduce worker must hold the same
    attempt: int
    rows: int | None
