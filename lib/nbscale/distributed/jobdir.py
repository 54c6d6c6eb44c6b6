"""The files of one distributed job, under `<data_dir>/jobs/<id>/` (storage every worker reaches).

The driver writes the job's spec; each worker process writes its progress, log and error there;
the chief adds epoch metrics and the final weights. The driver reads them to draw the live card and
to log to MLflow, so workers never need to reach the notebook or the tracking server."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from ..contracts import WorkerState

# TensorFlow's start-up lines on a machine without CUDA: true, and no news to the reader of the card.
_NOISE = re.compile(r"absl::InitializeLog|cudart_stub|cuInit|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|computation placer")


class JobDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- layout --------------------------------------------------------------------------
    @property
    def spec(self) -> Path:
        return self.root / "spec.pkl"

    @property
    def go(self) -> Path:
        """Written by the notebook once the cell is checked and its MLflow run open: until then no epoch ends."""
        return self.root / "go"

    @property
    def abandoned(self) -> Path:
        """Written by the notebook when the launch fails on its side: workers still waiting for `go` stop."""
        return self.root / "abandoned"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def weights(self) -> Path:
        return self.root / "weights.h5"

    def attempt(self, number: int) -> Path:
        return self.root / "attempts" / str(number)

    def state_file(self, attempt: int, rank: int) -> Path:
        return self.attempt(attempt) / f"worker-{rank}.json"

    def log_file(self, attempt: int, rank: int) -> Path:
        return self.attempt(attempt) / f"worker-{rank}.log"

    def error_file(self, attempt: int, rank: int) -> Path:
        return self.attempt(attempt) / f"error-{rank}.txt"

    def fatal_file(self, attempt: int, rank: int) -> Path:
        """Marks an error that a rerun would only repeat (in the cell, the data): no retry."""
        return self.attempt(attempt) / f"fatal-{rank}"

    def fatal(self) -> bool:
        attempts = self.attempts()
        return bool(attempts) and any(self.attempt(attempts[-1]).glob("fatal-*"))

    def kill_file(self, attempt: int, rank: int) -> Path:
        return self.attempt(attempt) / f"kill-{rank}"

    def done_file(self, attempt: int) -> Path:
        return self.attempt(attempt) / "done"

    def result_file(self, rank: int) -> Path:
        return self.root / f"result-{rank}.json"

    # ---- reading -------------------------------------------------------------------------
    def attempts(self) -> list[int]:
        folder = self.root / "attempts"
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def next_attempt(self) -> int:
        """Called by rank 0 of a starting stage attempt: claims the next attempt number."""
        number = (max(self.attempts()) + 1) if self.attempts() else 0
        self.attempt(number).mkdir(parents=True, exist_ok=True)
        return number

    def states(self, attempt: int) -> dict[int, WorkerState]:
        found = {}
        for path in self.attempt(attempt).glob("worker-*.json"):
            state = read_json(path)
            if state is not None:
                found[state["rank"]] = state
        return found

    def errors(self, attempt: int) -> dict[int, str]:
        return {int(p.stem.split("-")[1]): p.read_text().strip() for p in self.attempt(attempt).glob("error-*.txt")}

    def epoch_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def log_tail(self, attempt: int, rank: int, lines: int = 3) -> list[str]:
        path = self.log_file(attempt, rank)
        if not path.is_file():
            return []
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4000))
            text = f.read().decode(errors="replace")
        return [ln for ln in text.splitlines() if ln.strip() and not _NOISE.search(ln)][-lines:]


@dataclasses.dataclass
class JobView:
    """Everything the driver reads of a job folder at one moment, taken where the folder is (`snapshot`):
    over Spark Connect that is one Spark task per refresh, so the card, the state and the failure all
    come from one read."""
    attempts: list[int] = dataclasses.field(default_factory=list)
    states: dict[int, dict[int, dict]] = dataclasses.field(default_factory=dict)  # attempt -> rank -> worker state
    errors: dict[int, dict[int, str]] = dataclasses.field(default_factory=dict)  # attempt -> rank -> one line
    metrics: list[dict] = dataclasses.field(default_factory=list)  # the chief's epoch records, every attempt
    tails: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # rank -> last log lines of the current attempt
    results: dict[int, str] = dataclasses.field(default_factory=dict)  # rank -> its result file
    fatal: bool = False
    quiet_s: float | None = None  # seconds since any worker of the current attempt wrote its state (data host's clock)

    @property
    def current(self) -> int | None:
        return self.attempts[-1] if self.attempts else None

    def current_states(self) -> dict[int, dict]:
        return self.states.get(self.current, {}) if self.current is not None else {}


def snapshot(root: str) -> JobView:
    """The job folder `root` as one `JobView` (empty when it does not exist). Runs where the data dir is."""
    job = JobDir(root)
    if not job.root.is_dir():
        return JobView()
    attempts = job.attempts()
    view = JobView(attempts, {n: job.states(n) for n in attempts}, {n: job.errors(n) for n in attempts}, job.epoch_metrics(),
                   results={int(p.stem.split("-")[1]): p.read_text() for p in job.root.glob("result-*.json")}, fatal=job.fatal())
    if attempts:
        current = view.states[attempts[-1]]
        view.tails = {rank: job.log_tail(attempts[-1], rank) for rank in current}
        updated = [s.get("updated", 0) for s in current.values()]
        view.quiet_s = time.time() - max(updated) if updated else None
    return view


def touch(path: str) -> None:
    Path(path).touch()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return None


def append_json(path: Path, value: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({**value, "time": time.time()}) + "\n")
