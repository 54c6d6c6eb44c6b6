"""`train_distributed(...)`: the `%%train` cell on N workers of a Spark cluster.

Workers are one Spark barrier stage (`launcher`), each a fresh TensorFlow process (`worker`) with
tf-keras under `MultiWorkerMirroredStrategy` (all-reduce) or `ParameterServerStrategy`. A failed
worker fails the stage, Spark reruns it, and `BackupAndRestore` resumes at the failed epoch. The
driver follows the job through its directory: it draws the card, logs the chief's epoch metrics to
one MLflow parent run (one child run per worker) and, at the end, loads the chief's weights."""
from __future__ import annotations

import atexit
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from ..config import settings
from ..errors import NbscaleError, caused_by_interrupt, executor_failure, first_useful_line
from ..jobs.interrupts import cancel_group
from ..limits import cap
from ..scheduling import check_pool
from .jobdir import JobDir

STRATEGIES = ("multiworker", "parameter-server")
SLOT_WAIT_S = 20  # executors of a just-started session need a moment to register
CAPACITY_GRACE_S = 15  # how long a running job waits for lost task slots to come back
_running: dict[str, "DistributedRun"] = {}  # job id -> run, for kill_worker and kernel shutdown


class DistributedRun:
    """The driver's side of one distributed training: its job dir, Spark job group and MLflow runs."""

    def __init__(self, title: str, job: JobDir, workers: int, strategy: str, epochs: int, run_id: str, run_url: str | None):
        self.title, self.job, self.workers, self.strategy, self.epochs = title, job, workers, strategy, epochs
        self.run_id, self.run_url = run_id, run_url
        self.group = f"nbscale-{job.root.name}"
        self.state = "waiting for workers"
        self.logged_epochs: set[int] = set()
        self.notes: list[str] = []
        self.spark_context = None
        self.started_at = time.time()
        self.capacity_lost = False  # set by the watcher when the cluster shrank under a running job

    @property
    def id(self) -> str:
        return self.job.root.name

    def cancel(self) -> None:
        """Cancel the Spark job group: Spark kills the barrier tasks, and each worker process dies with its task."""
        if self.spark_context is not None:
            self.spark_context.cancelJobGroup(self.group)

    def workers_line(self) -> str:
        attempts = self.job.attempts()
        states = self.job.states(attempts[-1]) if attempts else {}
        return "; ".join(f"{s['role']} {s['index']}: " + (f"epoch {s['epoch']} step {s['step']}/{s['steps']}" if s["state"] == "training" else s["state"])
                         for _, s in sorted(states.items()))

    def view(self) -> dict:
        history: dict[str, list[float]] = {}
        speed = None
        seen = set()
        for record in self.job.epoch_metrics():
            if record["epoch"] in seen:  # an epoch redone after a failure counts once
                continue
            seen.add(record["epoch"])
            for key, value in record["logs"].items():
                history.setdefault(key, []).append(value)
            speed = record["samples_per_s"]
        attempts = self.job.attempts()
        current = attempts[-1] if attempts else None
        states = self.job.states(current) if current is not None else {}
        lines = [self._attempt_line(number, number == current) for number in attempts]
        return {"history": history, "epochs": self.epochs, "samples_per_s": speed, "run_id": self.run_id, "run_url": self.run_url,
                "state": self.state, "workers": self.workers, "strategy": self.strategy, "workers_state": states,
                "logs": {rank: self.job.log_tail(current, rank) for rank in states} if current is not None else {},
                "attempt_lines": lines, "notes": self.notes}

    def _attempt_line(self, number: int, current: bool) -> str:
        states, errors = self.job.states(number), self.job.errors(number)
        resumed = min((s.get("first_epoch", 1) for s in states.values() if "first_epoch" in s), default=1)
        start = f", resumed at epoch {resumed}" if resumed > 1 else ""
        if current:
            return f"attempt {number}: {self.state}{start}"
        if errors:
            rank, why = _cause(errors)
            if why.startswith("died: "):
                return f"attempt {number}{start}: worker {rank} died in epoch {states.get(rank, {}).get('epoch', 0)} ({why[6:]})"
            return f"attempt {number}{start}: worker {rank} failed: {why}"
        return f"attempt {number}{start}: its workers were lost (an executor or machine failed)"

    def failure(self) -> str | None:
        """The first worker error of the last attempt, as one line."""
        for number in reversed(self.job.attempts()):
            errors = self.job.errors(number)
            if errors:
                rank, why = _cause(errors)
                return f"worker {rank}: {why}"
        return None


def _cause(errors: dict[int, str]) -> tuple[int, str]:
    """The error that explains an attempt: a worker's death, before its peers' errors saying it went away."""
    return sorted(errors.items(), key=lambda item: (not item[1].startswith("died: "), item[0]))[0]


def kill_worker(job_id: str, rank: int) -> str:
    """Kill worker `rank`'s process in the current attempt (to watch the retry and resume)."""
    run = _running.get(job_id)
    if run is None:
        raise NbscaleError(f"No distributed job {job_id} is running in this kernel: see %jobs.")
    attempts = run.job.attempts()
    if not attempts or rank not in run.job.states(attempts[-1]):
        raise NbscaleError(f"Worker {rank} of job {job_id} has not started yet: wait until the card shows it, then kill it.")
    run.job.kill_file(attempts[-1], rank).touch()
    return f"Worker {rank} of attempt {attempts[-1]} is being killed; Spark will rerun the stage and training resumes from its backups."


def _elastic_retry(run: DistributedRun, sc, profile, tasks: int, helpers: int, min_workers: int, stop) -> int | None:
    """After the stage failed: the number of workers to go on with when the cluster lost capacity but
    still fits --min-workers (training resumes from the backups); None when it is not that kind of failure."""
    if (stop is not None and stop.is_set()) or run.job.fatal():
        return None
    slots = _slots(sc, profile)
    if slots >= tasks and not run.capacity_lost:
        return None
    run.capacity_lost = False
    fits = slots - helpers  # the chief and parameter servers must all run
    if fits < min_workers:
        raise NbscaleError(f"The cluster lost capacity during training: {slots} task slots left, the job needs {tasks}"
                           + (f" (at least {min_workers + helpers} with --min-workers {min_workers})" if min_workers < run.workers else "")
                           + ". The epoch backups are kept: run the cell again with --resume once the cluster has the slots, "
                           "or allow fewer workers with --min-workers.")
    run.notes.append(f"The cluster lost capacity ({slots} task slots left): continuing on {fits} of {run.workers} workers "
                     "from the last backup.")
    run.workers = fits
    return fits


@atexit.register
def _cancel_all() -> None:
    """Kernel shutdown: the jobs this kernel started stop with it (their workers with them)."""
    for run in list(_running.values()):
        try:
            run.cancel()
        except Exception:  # noqa: BLE001 - the JVM may already be gone, which cancels everything too
            pass


def _slots(sc, profile=None) -> int:
    jsc = sc._jsc.sc()
    java_profile = profile._java_resource_profile if profile is not None else jsc.resourceProfileManager().defaultResourceProfile()
    return int(jsc.maxNumConcurrentTasks(java_profile))


def gpu_profile(sc, gpus_per_worker: int):
    """A Spark stage-level resource profile giving each worker task `gpus_per_worker` GPUs (None for 0)."""
    if not gpus_per_worker:
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    profile = ResourceProfileBuilder().require(TaskResourceRequests().cpus(1).resource("gpu", gpus_per_worker)).build
    try:
        sc._jsc.sc().resourceProfileManager().addResourceProfile(profile._java_resource_profile)
    except Exception as exc:  # noqa: BLE001 - Spark's refusal, as one line
        raise NbscaleError(f"--gpus-per-worker {gpus_per_worker}: Spark cannot give tasks GPUs here ({first_useful_line(str(exc))}); "
                           "give the executors GPUs (spark.executor.resource.gpu.amount and "
                           "spark.executor.resource.gpu.discoveryScript in Nbscale.spark_conf), or train on CPUs.") from None
    return profile


def check_capacity(sc, tasks: int, what: str, wait_s: float = SLOT_WAIT_S, profile=None) -> int:
    """Barrier mode needs all tasks running at once: fail in one line when the cluster can never fit them."""
    started = time.monotonic()
    slots = _slots(sc, profile)
    # No executor yet (a session just started on a cluster): wait for them to register; some but too few: a short grace.
    while slots < tasks and time.monotonic() - started < (wait_s if slots == 0 else 3):
        time.sleep(0.5)
        slots = _slots(sc, profile)
    if slots < tasks:
        raise NbscaleError(f"{what} needs {tasks} task slots at once (barrier mode starts every worker together) but the cluster "
                           f"({sc.master}) has {slots}: use fewer --workers, or give the cluster more cores "
                           "(%nbscale cluster up --workers N --cores C).")
    return slots


def _active_tasks(sc, group: str | None = None) -> int:
    """Running tasks of every active stage, or of the stages of job group `group`."""
    tracker = sc.statusTracker()
    if group is None:
        stage_ids = tracker.getActiveStageIds()
    else:
        jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(group)]
        stage_ids = [s for job in jobs if job for s in job.stageIds]
    stages = [tracker.getStageInfo(s) for s in stage_ids]
    return sum(stage.numActiveTasks for stage in stages if stage)


def _check_options(strategy: str, workers: int, epochs: int, parameter_servers: int, min_workers: int | None,
                   batch_size: int) -> tuple[int, int]:
    """(barrier tasks, min workers) for valid options; one line naming the bad one otherwise."""
    if strategy not in STRATEGIES:
        raise NbscaleError(f"--strategy {strategy!r} is not one nbscale runs: use multiworker (all-reduce) or parameter-server.")
    if workers < 1 or epochs < 1 or parameter_servers < 1 or batch_size < 1:
        raise NbscaleError(f"--workers {workers}, --epochs {epochs}, --ps {parameter_servers}, --batch-size {batch_size} must each be 1 or more.")
    min_workers = workers if min_workers is None else min_workers
    if not 1 <= min_workers <= workers:
        raise NbscaleError(f"--min-workers {min_workers} must be between 1 and --workers {workers}.")
    if batch_size < workers:
        raise NbscaleError(f"--batch-size {batch_size} is the global batch, split over {workers} workers: make it at least {workers}.")
    return (workers if strategy == "multiworker" else workers + parameter_servers + 1), min_workers


def _splits(version, spec, model, validation: float, seed: int, workers: int, strategy: str):
    """The seeded split, written with a file per worker at least; every all-reduce worker must get rows."""
    from .. import feed
    from ..train import _check_labels, _check_shapes, _check_split

    _check_labels(model, spec, version)
    train_split, val_split = feed.split(version, spec, validation, row_groups=max(4, workers))
    _check_split(spec, version, validation, train_split.rows)
    if strategy == "multiworker":
        for rank in range(workers):
            for part, name in ((train_split, "training"), (val_split, "validation")):
                if part is not None and feed.shard(part, rank, workers).rows == 0:
                    raise NbscaleError(f"{version.ref} has too few rows for {workers} workers: worker {rank} would get no {name} rows. "
                                       "Use fewer --workers or a larger dataset.")
    _check_shapes(model, spec, train_split.rows)
    return train_split, val_split


def train_distributed(code: str | None = None, *, data: str, workers: int, strategy: str = "multiworker", parameter_servers: int = 1,
                      label: str | None = None, epochs: int = 5, batch_size: int = 128, validation: float = 0.2, seed: int = 42,
                      scale: float = 1.0, experiment: str = "nbscale", resume: bool = False, pool: str | None = None,
                      gpus_per_worker: int = 0, min_workers: int | None = None, precision: str = "auto", namespace: dict | None = None,
                      on_epoch: Callable | None = None, stop: threading.Event | None = None, on_start: Callable[[DistributedRun], None] | None = None):
    """Train the cell's model on `workers` workers of the session's Spark cluster; one MLflow parent run.
    `precision` auto is mixed float16 when the workers get GPUs (--gpus-per-worker), else float32."""
    from .. import feed
    from ..datahost import classic_only, require_writable
    from ..ingest import dataset as find_dataset
    from ..session import mlflow, spark
    from ..train import (TrainProgress, TrainResult, _backup_dir, _build_model, _log_model, _log_params, open_run, precision_policy,
                         quiet_loggers)
    from . import launcher, shipping
    from .card import render_job

    # The barrier stage itself runs over Spark Connect; the live card reads the job folder, and following and
    # cancelling the job use the classic SparkContext (job groups, slot counts).
    classic_only("%%train --workers", "its live card reads the job's folder in the data dir, which this machine does not see")
    tasks, min_workers = _check_options(strategy, workers, epochs, parameter_servers, min_workers, batch_size)
    epochs = cap("epochs", epochs)
    if pool:
        check_pool(pool)
    version = find_dataset(data)
    require_writable(f"Distributed training on {version.ref}")  # the job folder the workers share, the runs
    spec = feed.spec_for(version, label, batch_size, scale, seed)
    policy = precision_policy(precision, tensor_cores=gpus_per_worker > 0)  # the workers' GPUs, not the driver's
    built = _build_model(code, namespace, None, seed, policy)  # the cell's errors show here, before any worker starts
    shipped = shipping.capture(code, namespace)
    train_split, val_split = _splits(version, spec, built, validation, seed, workers, strategy)
    session = spark()
    sc = session.sparkContext
    profile = gpu_profile(sc, gpus_per_worker)
    check_capacity(sc, tasks, f"--workers {workers} --strategy {strategy}" + (f" (+{parameter_servers} ps + 1 chief)" if tasks > workers else "")
                   + (f" with {gpus_per_worker} GPU(s) each" if gpus_per_worker else ""), profile=profile)

    job = JobDir(Path(settings().data_dir) / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    job.root.mkdir(parents=True)
    backups = _backup_dir(experiment, version.ref, f"{strategy}|{code}")
    if not resume:
        shutil.rmtree(backups, ignore_errors=True)
    steps_per_epoch = feed.steps(train_split.rows, batch_size)
    import cloudpickle

    job.spec.write_bytes(cloudpickle.dumps({
        "code": code, "namespace": shipped, "feed": spec, "train": train_split, "validation": val_split, "epochs": epochs,
        "strategy": strategy, "seed": seed, "precision": policy, "batch_size": batch_size, "backup_dir": str(backups), "steps_per_epoch": steps_per_epoch,
        "validation_steps": feed.steps(val_split.rows, batch_size) if val_split else 0}))

    mlf = mlflow()
    client = mlf.MlflowClient()
    parent, _, logged = open_run(mlf, experiment, f"{version.ref} ×{workers} {time.strftime('%H:%M:%S')}", backups, resume)
    uri = settings().tracking_uri
    run_url = f"{uri.rstrip('/')}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}" if uri.startswith("http") else None
    run = DistributedRun(f"%%train {version.ref} --workers {workers}", job, workers, strategy, epochs, parent.info.run_id, run_url)
    if sc.master.startswith("local"):
        run.notes.append(f"Spark {sc.master} never retries a failed task: connect to a cluster for fault tolerance.")
    run.spark_context = sc
    run.logged_epochs = logged  # a resumed run logged these epochs already
    previous = parent.data.tags.get("nbscale.job_dir")
    if logged and previous and Path(previous).is_dir():
        # Epochs the last launch finished while it was being stopped: in its job dir, not yet in MLflow.
        _log_epochs(client, run, JobDir(previous))
    _running[run.id] = run
    if on_start:
        on_start(run)
    watching = threading.Event()
    shown: dict[str, str] = {}

    def publish():
        _log_epochs(client, run, job)
        if on_epoch:
            view = run.view()
            card = render_job(run.title, view)
            if card != shown.get("card"):  # redraw only what changed
                shown["card"] = card
                history = view["history"]
                on_epoch(TrainProgress(card, len(history.get("loss", [])), epochs, {k: v[-1] for k, v in history.items()}))

    def watch():
        short_since = None
        while not watching.wait(0.5):
            try:
                if (stop is not None and stop.is_set()) or job.fatal():
                    sc.cancelJobGroup(run.group)  # cancelled, or an error a rerun would repeat
                # Spark resubmits a failed barrier stage even when the cluster no longer has the slots, and
                # then waits forever: past a grace period for a replacement executor, stop it here.
                if _slots(sc, profile) < tasks:
                    short_since = short_since or time.monotonic()
                    if time.monotonic() - short_since > CAPACITY_GRACE_S and not run.capacity_lost:
                        run.capacity_lost = True
                        sc.cancelJobGroup(run.group)
                else:
                    short_since = None
                attempts = job.attempts()
                states = job.states(attempts[-1]) if attempts else {}
                if not states and _slots(sc) == 0 and not sc.master.startswith("local"):
                    run.state = (f"waiting for executors: the cluster ({sc.master}) gives this application none — its workers "
                                 "are gone or busy (see the master's web UI)")
                elif not states and _active_tasks(sc) + tasks > _slots(sc):
                    run.state = f"waiting for {tasks} free task slots (gang scheduling: all workers start together)"
                elif states:
                    run.state = "training" + (f" (attempt {attempts[-1]})" if attempts[-1] else "")
                publish()
            except Exception:  # noqa: BLE001 - a failed refresh must not stop the training
                continue

    watcher = threading.Thread(target=watch, name=f"nbscale-watch-{run.id}", daemon=True)
    status = "FAILED"
    try:
        if not logged:  # a reopened run has its parameters already
            _log_params(mlf, built, version, spec, epochs, validation, train_split, val_split)
            mlf.log_params({"workers": workers, "min_workers": min_workers, "strategy": strategy, "gpus_per_worker": gpus_per_worker,
                            "parameter_servers": parameter_servers if tasks > workers else 0, "spark_master": sc.master})
        mlf.set_tag("nbscale.job_dir", str(job.root))  # the latest launch's worker logs and state
        watcher.start()
        sc.setJobGroup(run.group, run.title, interruptOnCancel=True)
        sc.setLocalProperty("spark.scheduler.pool", pool)
        try:
            while True:
                try:
                    launcher.launch(session, str(job.root), tasks, strategy, parameter_servers,
                                    {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}, profile)
                    break
                except Exception:
                    fewer = _elastic_retry(run, sc, profile, tasks, tasks - workers, min_workers, stop)
                    if fewer is None:
                        raise
                    workers, tasks = fewer, fewer + (tasks - workers)
        finally:
            for name in ("spark.scheduler.pool", "spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
                sc.setLocalProperty(name, None)  # later cells in this thread are not part of this job
        watching.set()
        watcher.join(5)
        run.state = "finished"
        publish()
        _refuse_non_finite(run, version.ref)
        with quiet_loggers("absl"):  # the chief's file has no optimizer slots for the driver's unbuilt optimizer: expected
            built.load_weights(str(job.weights))
            model_uri = _log_model(mlf, built, train_split, spec)
        status = "FINISHED"
    except BaseException as exc:
        if caused_by_interrupt(exc):
            cancel_group(sc, run.group)
            status = "KILLED"
            raise KeyboardInterrupt from None
        if stop is not None and stop.is_set():
            status = "KILLED"
            from ..train import TrainingCancelled

            raise TrainingCancelled(f"Distributed training on {version.ref} was cancelled; its MLflow run is marked KILLED and "
                                    "the workers are stopped. Run the cell again with --resume to continue.") from None
        if isinstance(exc, NbscaleError):
            raise
        why = run.failure() or executor_failure(str(exc)) or first_useful_line(str(exc))
        raise NbscaleError(f"Distributed training on {version.ref} failed after {len(job.attempts())} attempt(s): {why}") from None
    finally:
        watching.set()
        run.state = {"FINISHED": "finished", "KILLED": "cancelled"}.get(status, "failed")
        _running.pop(run.id, None)
        if status != "FINISHED":
            _wait_for_tasks_to_end(sc, run.group)  # a resume must not meet workers of this launch still writing backups
        try:  # epochs the chief finished after the watcher's last look: logged before the run closes
            publish()
        except Exception:  # noqa: BLE001 - bookkeeping must never hide the training's own outcome
            pass
        _child_runs(client, mlf, run, parent.info.experiment_id, status)
        mlf.end_run(status)
    shutil.rmtree(backups, ignore_errors=True)
    metrics = run.view()
    result = TrainResult(run.title, run.run_id, run_url, experiment, version.ref, epochs, metrics["history"], metrics["samples_per_s"] or 0.0,
                         f"{workers} workers · {strategy}", built, model_uri)
    result.workers, result.strategy, result.attempts, result.job_dir = workers, strategy, len(job.attempts()), str(job.root)
    result.digests = {r: (job.result_file(r).read_text() if job.result_file(r).exists() else None) for r in range(tasks)}
    result.card_html = render_job(run.title, metrics)
    return result


def _refuse_non_finite(run: DistributedRun, ref: str) -> None:
    """A NaN or infinite loss fails the run (FAILED, no model logged). The workers are not stopped early: under
    all-reduce one worker leaving its collective would leave the others waiting."""
    import math

    from ..train import NonFiniteLoss, non_finite_message

    history = run.view()["history"]
    for metric in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(metric, []), start=1):
            if not math.isfinite(value):
                raise NonFiniteLoss(non_finite_message(ref, epoch, metric, value))


def _wait_for_tasks_to_end(sc, group: str, timeout: float = 30) -> None:
    """Spark reports a killed task once its Python worker is gone, and each training process dies with
    that worker: no active task in the group means no worker process left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not _active_tasks(sc, group):
                return
        except Exception:  # noqa: BLE001 - a JVM going away ends the tasks too
            return
        time.sleep(0.2)


def _log_epochs(client, run: DistributedRun, job: JobDir) -> None:
    """The chief's epoch metrics into the parent run, once per epoch across attempts and launches."""
    for record in job.epoch_metrics():
        if record["epoch"] not in run.logged_epochs:
            run.logged_epochs.add(record["epoch"])
            client.log_batch(run.run_id, metrics=[_metric(k, v, record["epoch"]) for k, v in
                                                  {**record["logs"], "samples_per_s": record["samples_per_s"]}.items()])


def _metric(key: str, value: float, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


def _child_runs(client, mlf, run: DistributedRun, experiment: str, status: str) -> None:
    """One child run per worker: its role, attempts and logs (the parent holds the metrics)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    try:
        ranks = sorted({rank for number in run.job.attempts() for rank in run.job.states(number)})
        for rank in ranks:
            states = [run.job.states(n).get(rank) for n in run.job.attempts()]
            last = [s for s in states if s][-1]
            child = client.create_run(experiment, run_name=f"worker {rank} ({last['role']})",
                                      tags={MLFLOW_PARENT_RUN_ID: run.run_id, "nbscale.rank": str(rank), "nbscale.role": last["role"]})
            client.log_batch(child.info.run_id, metrics=[_metric("attempts", len([s for s in states if s]), 0),
                                                         _metric("epochs_done", last.get("epochs_done", 0), 0),
                                                         _metric("peak_rss_mb", max(s.get("peak_rss_mb", 0) for s in states if s), 0),
                                                         _metric("cpu_seconds", sum(s.get("cpu_s", 0) for s in states if s), 0)])
            for number in run.job.attempts():
                log = run.job.log_file(number, rank)
                if log.exists():
                    client.log_artifact(child.info.run_id, str(log), artifact_path=f"logs/attempt-{number}")
            client.set_terminated(child.info.run_id, status)
    except Exception:  # noqa: BLE001 - worker bookkeeping must never hide the training's own outcome
        pass
