"""Background jobs of this kernel (e.g. `%%train --background`): state, progress, cancel.

Each job runs on a thread; cancelling sets its stop event, which the work checks (training stops
after the current batch and marks its MLflow run KILLED)."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import events
from ..errors import NbscaleError

_ids = itertools.count(1)
_jobs: dict[int, "Job"] = {}
_lock = threading.Lock()


@dataclass
class Job:
    id: int
    kind: str
    title: str
    state: str = "running"  # running | finished | failed | cancelled
    started: float = field(default_factory=time.time)
    ended: float | None = None
    progress: str = ""  # a short line: "epoch 3/10, val_accuracy 0.91"
    epochs_done: int = 0
    result: object = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)
    # Its end, as an event: on CPython 3.11 an interrupt inside Thread.join can mark a thread that still runs as stopped.
    over: threading.Event = field(default_factory=threading.Event, repr=False)
    handle: object = field(default=None, repr=False)  # e.g. the DistributedRun, for "kill a worker"
    view: object = field(default=None, repr=False)  # the card showing it, if any

    def wait(self, timeout: float | None = None) -> "Job":
        if self.thread is not None:
            self.over.wait(timeout)
        return self

    def wait_for_epoch(self, epoch: int, timeout: float = 600) -> "Job":
        """Block until the job has finished `epoch` epochs (or ended); NbscaleError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.state == "running" and self.epochs_done < epoch:
            if time.monotonic() > deadline:
                raise NbscaleError(f"Job {self.id} did not reach epoch {epoch} within {timeout:.0f} s: see %jobs.")
            time.sleep(0.2)
        return self


def start(kind: str, title: str, work: Callable[[Job], object]) -> Job:
    """Run `work(job)` on a thread; its return value becomes `job.result`."""
    with _lock:
        job = Job(next(_ids), kind, title)
        _jobs[job.id] = job

    def run():
        try:
            job.result = work(job)
            job.state = "cancelled" if job.stop.is_set() else "finished"
        except BaseException as exc:  # noqa: BLE001 - a job's failure is its state, shown by %jobs
            job.state = "cancelled" if job.stop.is_set() else "failed"
            job.error = str(exc)
        finally:
            job.ended = time.time()
            job.over.set()

    job.thread = threading.Thread(target=run, name=f"nbscale-job-{job.id}", daemon=True)
    job.thread.start()
    events.emit(events.WORK_STARTED)  # the kernel's state publisher: the nbscale panel lists it, and can cancel it
    return job


def jobs() -> list[Job]:
    with _lock:
        return list(_jobs.values())


def get(job_id: int) -> Job:
    with _lock:
        if job_id not in _jobs:
            known = ", ".join(str(i) for i in _jobs) or "none"
            raise NbscaleError(f"There is no job {job_id} in this kernel (jobs: {known}): see %jobs.")
        return _jobs[job_id]


def cancel(job_id: int) -> Job:
    job = get(job_id)
    if job.state == "running":
        job.stop.set()
        if hasattr(job.handle, "cancel"):  # a distributed run: cancel its Spark jobs now, not at the next poll
            job.handle.cancel()
    return job
