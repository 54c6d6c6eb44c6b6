"""Progress of a Spark job group, polled from `SparkContext.statusTracker()` on a thread.

No JVM listener is needed; the state goes to a callback (a widget in a notebook, a test's list,
nothing at all in a script)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


WAITING_AFTER_S = 3


@dataclass(frozen=True)
class SparkProgress:
    jobs_done: int
    jobs_total: int
    tasks_done: int
    tasks_total: int
    stage: str
    seconds: float
    finished: bool = False
    waiting: str = ""  # why no task runs although jobs wait (a cluster with no executor for this application)
    # The running jobs' own tasks: a bar over these fills once per job. The totals above grow as a cell submits jobs
    # one after another (nobody knows in advance how many), so a bar over them would fill and fall back.
    running_tasks_done: int = 0
    running_tasks_total: int = 0

    @property
    def fraction(self) -> float:
        return self.tasks_done / self.tasks_total if self.tasks_total else 0.0


class ProgressWatcher:
    """`with ProgressWatcher(sc, group, callback):` reports the group's progress every `interval` s."""

    def __init__(self, sc, group: str, on_update: Callable[[SparkProgress], None], interval: float = 0.5):
        self.sc, self.group, self.on_update, self.interval = sc, group, on_update, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nbscale-progress-{group}", daemon=True)
        self._started = time.monotonic()
        self._idle_since: float | None = None

    def poll(self, finished: bool = False) -> SparkProgress:
        tracker = self.sc.statusTracker()
        jobs_done = jobs_total = tasks_done = tasks_total = 0
        stage = ""
        running = active = running_done = running_total = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            jobs_total += 1
            succeeded = job.status == "SUCCEEDED"
            jobs_done += succeeded
            running += job.status == "RUNNING"
            for stage_id in job.stageIds:
                info = tracker.getStageInfo(stage_id)
                if info is None:
                    continue
                tasks_total += info.numTasks
                # A stage whose output was reused is skipped and never counts its tasks done.
                tasks_done += info.numTasks if succeeded else info.numCompletedTasks
                if job.status == "RUNNING":
                    running_total += info.numTasks
                    running_done += info.numCompletedTasks
                active += info.numActiveTasks
                if info.numActiveTasks:
                    stage = info.name
        return SparkProgress(jobs_done, jobs_total, tasks_done, tasks_total, stage, time.monotonic() - self._started, finished,
                             self._waiting(running and not active and not finished), running_done, running_total)

    def _waiting(self, idle: bool) -> str:
        """Spark's own word for this ("Initial job has not accepted any resources") goes to the driver log
        only: after a few idle seconds with no executor at all, the cell says it."""
        from ..clustercheck import executors_by_host

        if not idle or self.sc.master.startswith("local"):
            self._idle_since = None
            return ""
        self._idle_since = self._idle_since or time.monotonic()
        if time.monotonic() - self._idle_since < WAITING_AFTER_S or executors_by_host(self.sc):
            return ""
        return (f"waiting for executors: the cluster ({self.sc.master}) gives this application none — its workers are gone "
                "or busy (see the master's web UI); interrupt the cell to stop waiting")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.on_update(self.poll())
            except Exception:  # noqa: BLE001 - a failed poll (JVM busy, gateway gone) must not kill the work
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.on_update(self.poll(finished=True))
        except Exception:  # noqa: BLE001 - the work's own outcome matters more than a last poll
            pass
        return False


class ConnectProgressWatcher:
    """Over Spark Connect there is no status tracker: the server streams each operation's stages with its
    results, and `SparkSession.registerProgressHandler` hands them here. Each operation counts as one job."""

    def __init__(self, spark, on_update: Callable[[SparkProgress], None], interval: float = 0.5):
        self.spark, self.on_update, self.interval = spark, on_update, interval
        self._operations: dict[str, tuple[list, bool]] = {}
        self._started = time.monotonic()
        self._reported = 0.0

    def __call__(self, stages, inflight_tasks: int, operation_id: str | None, done: bool) -> None:
        self._operations[operation_id or ""] = (list(stages or []), done)
        if done or time.monotonic() - self._reported >= self.interval:
            self._reported = time.monotonic()
            try:
                self.on_update(self.poll())
            except Exception:  # noqa: BLE001 - a failing display must not fail the work
                pass

    def poll(self, finished: bool = False) -> SparkProgress:
        operations = list(self._operations.values())
        tasks_total = sum(s.num_tasks for stages, _ in operations for s in stages)
        tasks_done = sum(s.num_tasks if done or s.done else s.num_completed_tasks for stages, done in operations for s in stages)
        running = [s for stages, done in operations if not done for s in stages if not s.done]
        live = [s for stages, done in operations if not done for s in stages]
        return SparkProgress(sum(done for _, done in operations), len(operations), tasks_done, tasks_total,
                             f"stage {running[-1].stage_id}" if running else "", time.monotonic() - self._started, finished,
                             running_tasks_done=sum(s.num_tasks if s.done else s.num_completed_tasks for s in live),
                             running_tasks_total=sum(s.num_tasks for s in live))

    def __enter__(self):
        self.spark.registerProgressHandler(self)
        return self

    def __exit__(self, *exc):
        self.spark.removeProgressHandler(self)
        try:
            self.on_update(self.poll(finished=True))
        except Exception:  # noqa: BLE001 - the work's own outcome matters more than a last report
            pass
        return False
