"""How the driver starts, sizes and stops a distributed job's barrier stage: through the SparkContext on a
classic master (job groups, the scheduler's slot count and task status), or through a Spark Connect
session (operation tags; the client sees no scheduler, so what it cannot know it says it does not know)."""
from __future__ import annotations

import contextlib
import time

from ..config import settings
from ..errors import NbscaleError, first_useful_line

SLOT_WAIT_S = 20  # executors of a just-started session need a moment to register


class ClassicControl:
    """A classic master: the SparkContext answers everything."""

    def __init__(self, session):
        self.session, self.sc = session, session.sparkContext
        self.master = self.sc.master

    def slots(self, profile=None) -> int:
        jsc = self.sc._jsc.sc()
        java_profile = profile._java_resource_profile if profile is not None else jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(java_profile))

    def gpu_profile(self, gpus_per_worker: int):
        """A Spark stage-level resource profile giving each worker task `gpus_per_worker` GPUs (None for 0)."""
        if not gpus_per_worker:
            return None
        from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

        profile = ResourceProfileBuilder().require(TaskResourceRequests().cpus(1).resource("gpu", gpus_per_worker)).build
        try:
            self.sc._jsc.sc().resourceProfileManager().addResourceProfile(profile._java_resource_profile)
        except Exception as exc:  # noqa: BLE001 - Spark's refusal, as one line
            raise NbscaleError(f"--gpus-per-worker {gpus_per_worker}: Spark cannot give tasks GPUs here ({first_useful_line(str(exc))}); "
                               "give the executors GPUs (spark.executor.resource.gpu.amount and "
                               "spark.executor.resource.gpu.discoveryScript in Nbscale.spark_conf), or train on CPUs.") from None
        return profile

    @contextlib.contextmanager
    def labelled(self, group: str, title: str, pool: str | None):
        """The launch's Spark jobs carry `group` (so they can be cancelled) and run in `pool`."""
        self.sc.setJobGroup(group, title, interruptOnCancel=True)
        self.sc.setLocalProperty("spark.scheduler.pool", pool)
        try:
            yield
        finally:
            for name in ("spark.scheduler.pool", "spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
                self.sc.setLocalProperty(name, None)  # later cells in this thread are not part of this job

    def cancel(self, group: str) -> None:
        from ..jobs.interrupts import cancel_group

        cancel_group(self.sc, group)

    def active_tasks(self, group: str | None = None) -> int | None:
        """Running tasks of every active stage, or of the stages of job group `group`."""
        tracker = self.sc.statusTracker()
        if group is None:
            stage_ids = tracker.getActiveStageIds()
        else:
            jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(group)]
            stage_ids = [s for job in jobs if job for s in job.stageIds]
        stages = [tracker.getStageInfo(s) for s in stage_ids]
        return sum(stage.numActiveTasks for stage in stages if stage)


class ConnectControl:
    """A Spark Connect session: operations carry a tag and are interrupted by it. The cluster's size is
    measured by a plain stage sized by Spark's default parallelism (the executors' cores, on a standalone
    or YARN cluster), and only when no setting of the server overrides that default."""

    def __init__(self, session):
        self.session, self.master = session, settings().master

    def slots(self, profile=None) -> int | None:
        """Task slots of the cluster now, or None when a setting hides them (then Spark's own barrier check decides)."""
        conf = self.session.conf
        if conf.get("spark.default.parallelism", None) or conf.get("spark.sql.leafNodeDefaultParallelism", None):
            return None
        from pyspark.sql import functions as F

        ids = self.session.range(0, 1 << 16).select(F.spark_partition_id().alias("partition"))  # projected first: Spark
        partitions = ids.agg(F.max("partition")).first()[0] + 1  # refuses a nondeterministic function inside an aggregate
        return partitions // max(1, int(conf.get("spark.task.cpus", "1") or 1))

    def gpu_profile(self, gpus_per_worker: int):
        if gpus_per_worker:
            from ..datahost import classic_only

            classic_only("--gpus-per-worker", "nbscale checks a GPU profile against the cluster through the SparkContext")
        return None

    @contextlib.contextmanager
    def labelled(self, group: str, title: str, pool: str | None):
        self.session.addTag(group)  # a tag of this thread's operations only
        try:
            yield
        finally:
            self.session.removeTag(group)

    def cancel(self, group: str) -> None:
        self.session.interruptTag(group)

    def active_tasks(self, group: str | None = None) -> int | None:
        return None  # the scheduler's task status is not visible over Connect


def control_for(session):
    from ..config import over_connect

    return ConnectControl(session) if over_connect() else ClassicControl(session)


def check_capacity(control, tasks: int, what: str, wait_s: float = SLOT_WAIT_S, profile=None) -> int | None:
    """Barrier mode needs all tasks running at once: fail in one line when the cluster can never fit them."""
    started = time.monotonic()
    slots = control.slots(profile)
    if slots is None:
        return None
    # No executor yet (a session just started on a cluster): wait for them to register; some but too few: a short grace.
    while slots < tasks and time.monotonic() - started < (wait_s if slots == 0 else 3):
        time.sleep(0.5)
        slots = control.slots(profile)
    if slots < tasks:
        raise NbscaleError(f"{what} needs {tasks} task slots at once (barrier mode starts every worker together) but the cluster "
                           f"({control.master}) has {slots}: use fewer --workers, or give the cluster more cores "
                           "(%nbscale cluster up --workers N --cores C).")
    return slots
