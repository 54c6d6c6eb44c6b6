"""`train_distributed(...)`: the `%%train` cell on N workers of a Spark cluster.

Workers are one Spark barrier stage (`launcher`), each a fresh TensorFlow process (`worker`) with
tf-keras under `MultiWorkerMirroredStrategy` (all-reduce) or `ParameterServerStrategy`. A failed
worker fails the stage, Spark reruns it, and `BackupAndRestore` resumes at the failed epoch. The
driver follows the job through its directory: it draws the card, logs the chief's epoch metrics to
one MLflow parent run (one child run per worker) and, at the end, loads the chief's weights."""
from __future__ import annotations

import atexit
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import over_connect, settings
from ..datahost import on_data_host
from ..errors import NbscaleError, caused_by_interrupt, executor_failure, first_useful_line
from ..limits import cap
from ..tfenv import TENSORFLOW_ENV
from ..scheduling import check_pool
from ..train.options import ClusterOptions, TrainOptions, split_settings
from .control import ConnectControl, check_capacity, control_for
from .jobdir import JobDir, JobView, snapshot, touch

if TYPE_CHECKING:  # imported where used
    from ..train.result import DistributedTrainResult

STRATEGIES = ("multiworker", "parameter-server")
CAPACITY_GRACE_S = 15  # how long a running job waits for lost task slots to come back
CONNECT_PROBE_EVERY_S = 10  # over Connect, the cluster's size is a Spark stage: asked only when the workers fall quiet
_running: dict[str, "DistributedRun"] = {}  # job id -> run, for kill_worker and kernel shutdown


class DistributedRun:
    """The driver's side of one distributed training: its job dir, Spark job group (or Connect tag) and MLflow runs.
    What it shows comes from `seen`, the job folder as last read (`refresh`)."""

    def __init__(self, title: str, root: str, workers: int, strategy: str, epochs: int, run_id: str, run_url: str | None, control):
        self.title, self.root, self.workers, self.strategy, self.epochs = title, root, workers, strategy, epochs
        self.run_id, self.run_url, self.control = run_id, run_url, control
        self.job = JobDir(root)  # the layout; its files are read through `refresh`, where the data dir is
        self.group = self.group_of(self.id)
        self.state = "waiting for workers"
        self.seen = JobView()
        self.logged_epochs: set[int] = set()
        self.notes: list[str] = []
        self.started_at = time.time()
        self.capacity_lost = False  # set by the watcher when the cluster shrank under a running job

    @property
    def id(self) -> str:
        return Path(self.root).name

    @staticmethod
    def group_of(job_id: str) -> str:
        """The Spark job group (Connect: tag) of the job's stage."""
        return f"nbscale-{job_id}"

    def refresh(self) -> JobView:
        self.seen = on_data_host(snapshot, self.root)
        return self.seen

    def cancel(self) -> None:
        """Cancel the Spark job group (Connect tag): Spark kills the barrier tasks, and each worker process dies with its task."""
        self.control.cancel(self.group)

    def workers_line(self) -> str:
        return "; ".join(f"{s['role']} {s['index']}: " + (f"epoch {s['epoch']} step {s['step']}/{s['steps']}" if s["state"] == "training" else s["state"])
                         for _, s in sorted(self.seen.current_states().items()))

    def view(self) -> dict:
        seen = self.seen
        history: dict[str, list[float]] = {}
        speed = None
        epochs = set()
        for record in seen.metrics:
            if record["epoch"] in epochs:  # an epoch redone after a failure counts once
                continue
            epochs.add(record["epoch"])
            for key, value in record["logs"].items():
                history.setdefault(key, []).append(value)
            speed = record["samples_per_s"]
        lines = [self._attempt_line(number, number == seen.current) for number in seen.attempts]
        return {"history": history, "epochs": self.epochs, "samples_per_s": speed, "run_id": self.run_id, "run_url": self.run_url,
                "state": self.state, "workers": self.workers, "strategy": self.strategy, "workers_state": seen.current_states(),
                "logs": seen.tails, "attempt_lines": lines, "notes": self.notes}

    def _attempt_line(self, number: int, current: bool) -> str:
        states, errors = self.seen.states.get(number, {}), self.seen.errors.get(number, {})
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
        """The first worker error of the last attempt that had one, as one line."""
        for number in reversed(self.seen.attempts):
            errors = self.seen.errors.get(number)
            if errors:
                rank, why = _cause(errors)
                return f"worker {rank}: {why}"
        return None

    def wait_until_stopped(self, timeout: float = 30) -> None:
        """After a cancel or failure: a resume must not meet workers of this launch still writing backups. Spark reports
        a killed task once its Python worker is gone, and each training process dies with it; over Connect, where
        task status is not visible, the workers are taken as gone once none has written its state for 3 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if isinstance(self.control, ConnectControl):
                    seen = self.refresh()
                    if not seen.current_states() or (seen.quiet_s or 0) > 3:
                        return
                elif not self.control.active_tasks(self.group):
                    return
            except Exception:  # noqa: BLE001 - a JVM or server going away ends the tasks too
                return
            time.sleep(0.5)


def _cause(errors: dict[int, str]) -> tuple[int, str]:
    """The error that explains an attempt: a worker's death, before its peers' errors saying it went away."""
    return sorted(errors.items(), key=lambda item: (not item[1].startswith("died: "), item[0]))[0]


def kill_worker(job_id: str, rank: int) -> str:
    """Kill worker `rank`'s process in the current attempt (to watch the retry and resume)."""
    run = _running.get(job_id)
    if run is None:
        raise NbscaleError(f"No distributed job {job_id} is running in this kernel: see %jobs.")
    seen = run.refresh()
    if seen.current is None or rank not in seen.current_states():
        raise NbscaleError(f"Worker {rank} of job {job_id} has not started yet: wait until the card shows it, then kill it.")
    on_data_host(touch, str(run.job.kill_file(seen.current, rank)))
    return f"Worker {rank} of attempt {seen.current} is being killed; Spark will rerun the stage and training resumes from its backups."


def _elastic_retry(run: DistributedRun, profile, tasks: int, helpers: int, min_workers: int, stop) -> int | None:
    """After the stage failed: the number of workers to go on with when the cluster lost capacity but
    still fits --min-workers (training resumes from the backups); None when it is not that kind of failure."""
    if (stop is not None and stop.is_set()) or run.refresh().fatal:
        return None
    slots = run.control.slots(profile)
    if slots is None or (slots >= tasks and not run.capacity_lost):
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


def _splits(version, spec, validation: float, workers: int, strategy: str):
    """The seeded split, written with a file per worker at least; every all-reduce worker must get rows.
    It stays where the data dir is (over Connect: on the cluster, which the workers read)."""
    from .. import feed
    from ..train.checks import check_split

    train_split, val_split = feed.split(version, spec, validation, row_groups=max(4, workers), pull=False)
    check_split(spec, version, validation, train_split.rows)
    if strategy == "multiworker":
        for part, name in ((train_split, "training"), (val_split, "validation")):
            if part is None:
                continue
            for rank, rows in enumerate(on_data_host(feed.shard_rows, part, workers)):
                if rows == 0:
                    raise NbscaleError(f"{version.ref} has too few rows for {workers} workers: worker {rank} would get no {name} rows. "
                                       "Use fewer --workers or a larger dataset.")
    return train_split, val_split


def train_distributed(code: str | None = None, *, options: TrainOptions | None = None, cluster: ClusterOptions | None = None,
                      namespace: dict | None = None, on_epoch: Callable | None = None, stop: threading.Event | None = None,
                      on_start: Callable[[DistributedRun], None] | None = None, **given) -> DistributedTrainResult:
    """Train the cell's model on `workers` workers of the session's Spark cluster; one MLflow parent run.
    `options` (what to train, as `train` takes it) and `cluster` (workers, strategy, parameter servers, GPUs per
    worker, min workers, pool) may also be given as their fields' keywords. `precision` auto is mixed float16
    when the workers get GPUs (`gpus_per_worker`), else float32.

    Over Spark Connect the same barrier stage runs on the cluster; the job folder (in the cluster's data dir)
    is read through one small Spark task per refresh, so the workers still need neither the notebook nor the
    tracking server, and the laptop needs nothing but the Connect endpoint."""
    import os

    import cloudpickle

    from .. import feed
    from ..datahost import classic_only, download, put_bytes, remove_tree, require_writable
    from ..ingest import dataset as find_dataset
    from ..scheduling import POOLS_NEED_A_SPARKCONTEXT
    from ..session import mlflow, spark
    from ..quiet import quiet_loggers
    from ..train import DistributedTrainResult, TrainProgress, TrainingCancelled, precision_policy
    from ..train.tracking import backup_dir, log_model, log_params, open_run, run_url
    from ..train.cell import build, default_model_code, describe, is_blank
    from ..train.checks import check_labels, check_shapes
    from . import launcher, shipping
    from .card import render_job

    train_given, cluster_given = split_settings("train_distributed", given, TrainOptions, ClusterOptions)
    opts, where = replace(options or TrainOptions(), **train_given), replace(cluster or ClusterOptions(), **cluster_given)
    if not opts.data:
        raise NbscaleError("Say which dataset version to train on: --data NAME (see %datasets).")
    data, label, epochs, batch_size, validation = opts.data, opts.label, opts.epochs, opts.batch_size, opts.validation
    seed, scale, experiment, resume, precision = opts.seed, opts.scale, opts.experiment, opts.resume, opts.precision
    workers, strategy, parameter_servers = where.workers, where.strategy, where.parameter_servers
    pool, gpus_per_worker, min_workers = where.pool, where.gpus_per_worker, where.min_workers
    tasks, min_workers = _check_options(strategy, workers, epochs, parameter_servers, min_workers, batch_size)
    epochs = cap("epochs", epochs)
    if pool:
        classic_only(f"--pool {pool}", POOLS_NEED_A_SPARKCONTEXT)
        check_pool(pool)
    version = find_dataset(data)
    require_writable(f"Distributed training on {version.ref}")  # the job folder the workers share, the runs
    spec = feed.spec_for(version, label, batch_size, scale, seed)
    policy = precision_policy(precision, tensor_cores=gpus_per_worker > 0)  # the workers' GPUs, not the driver's
    default_code = None
    if is_blank(code):  # the workers run nbscale's default model, as code (shown on the card)
        code = default_code = default_model_code(spec, version)
    shipped = shipping.capture(code, namespace)
    session = spark()
    control = control_for(session)
    connect = isinstance(control, ConnectControl)
    profile = control.gpu_profile(gpus_per_worker)
    train_split, val_split = _splits(version, spec, validation, workers, strategy)
    check_capacity(control, tasks, f"--workers {workers} --strategy {strategy}" + (f" (+{parameter_servers} ps + 1 chief)" if tasks > workers else "")
                   + (f" with {gpus_per_worker} GPU(s) each" if gpus_per_worker else ""), profile=profile)

    job = JobDir(Path(settings().data_dir) / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    backups = backup_dir(experiment, version.ref, f"{strategy}|{code}", root=Path(settings().data_dir))
    backups_exist = resume and on_data_host(os.path.isdir, str(backups))
    if not resume:
        on_data_host(remove_tree, str(backups))
    steps_per_epoch = feed.steps(train_split.rows, batch_size)
    # The stage starts before the notebook builds the model and opens the MLflow run, so the workers' start (Spark
    # scheduling them, their TensorFlow import) overlaps the notebook's; their first epoch ends only once the notebook
    # writes `go` (a gated spec). Over Connect each write to the job folder is a Spark task, which a barrier stage holding
    # the cluster's slots could starve: there the stage starts after, as one step.
    gated = not connect
    put_bytes(str(job.spec), cloudpickle.dumps({  # creates the job folder
        "code": code, "namespace": shipped, "feed": spec, "train": train_split, "validation": val_split, "epochs": epochs,
        "strategy": strategy, "seed": seed, "precision": policy, "batch_size": batch_size, "backup_dir": str(backups), "steps_per_epoch": steps_per_epoch,
        "validation_steps": feed.steps(val_split.rows, batch_size) if val_split else 0, "gated": gated}))
    title, group = f"%%train {version.ref} --workers {workers}", DistributedRun.group_of(job.root.name)
    worker_env = dict(TENSORFLOW_ENV)

    def stage_of(tasks: int) -> launcher.BackgroundStage:
        return launcher.BackgroundStage(session, control, group, title, pool, (str(job.root), tasks, strategy, parameter_servers, worker_env, profile))

    def abandon() -> None:
        """The notebook's side failed: stop the stage. Never raises, so the failure's own error is the one shown."""
        try:
            if gated:  # workers of an early start may be waiting for `go`
                on_data_host(touch, str(job.abandoned))
        except OSError:
            pass  # the cancel below stops them all the same
        stage.stop()

    stage = stage_of(tasks)
    if gated:
        stage.start()
    try:
        cell = build(code, namespace, seed, policy)  # the cell's errors show here, before any epoch ends
        built = cell.model
        check_labels(built, spec, version)
        check_shapes(built, spec, train_split.rows)
        mlf = mlflow()
        client = mlf.MlflowClient()
        parent, _, logged = open_run(mlf, experiment, f"{version.ref} ×{workers} {time.strftime('%H:%M:%S')}", backups, resume,
                                     backups_exist=backups_exist)
    except BaseException:
        abandon()
        raise
    page = run_url(parent)
    run = DistributedRun(title, str(job.root), workers, strategy, epochs, parent.info.run_id, page, control)
    if control.master.startswith("local"):
        # A worker that dies is rerun here too (the barrier stage is resubmitted, as on a cluster); only the machine is one.
        run.notes.append(f"Spark {control.master} runs every worker on this machine: connect to a cluster to survive losing one.")
    run.logged_epochs = logged  # a resumed run logged these epochs already
    previous = parent.data.tags.get("nbscale.job_dir")
    if logged and previous:
        # Epochs the last launch finished while it was being stopped: in its job dir, not yet in MLflow.
        _log_epochs(client, run, on_data_host(snapshot, previous).metrics)
    _running[run.id] = run
    if on_start:
        on_start(run)
    watching = threading.Event()
    shown: dict[str, str] = {}

    def publish():
        _log_epochs(client, run, run.seen.metrics)
        if on_epoch:
            view = run.view()
            card = render_job(run.title, view)
            if card != shown.get("card"):  # redraw only what changed
                shown["card"] = card
                history = view["history"]
                on_epoch(TrainProgress(card, len(history.get("loss", [])), epochs, {k: v[-1] for k, v in history.items()}))

    def watch():
        short_since = None
        probed = 0.0
        while not watching.wait(1.0 if connect else 0.5):  # over Connect each look is a Spark task
            try:
                seen = run.refresh()
                if (stop is not None and stop.is_set()) or seen.fatal:
                    control.cancel(run.group)  # cancelled, or an error a rerun would repeat
                # Spark resubmits a failed barrier stage even when the cluster no longer has the slots, and
                # then waits forever: past a grace period for a replacement executor, stop it here.
                slots = None
                if not connect:
                    slots = control.slots(profile)
                elif seen.attempts and (seen.quiet_s or 0) > CAPACITY_GRACE_S and time.monotonic() - probed > CONNECT_PROBE_EVERY_S:
                    probed, slots = time.monotonic(), control.slots(profile)
                if slots is not None and slots < tasks:
                    short_since = short_since or time.monotonic() - (CAPACITY_GRACE_S if connect else 0)  # Connect: quiet that long already
                    if time.monotonic() - short_since > CAPACITY_GRACE_S and not run.capacity_lost:
                        run.capacity_lost = True
                        control.cancel(run.group)
                elif slots is not None:
                    short_since = None
                states = seen.current_states()
                if states:
                    run.state = "training" + (f" (attempt {seen.current})" if seen.current else "")
                elif connect:
                    run.state = f"waiting for {tasks} free task slots (gang scheduling: all workers start together)"
                elif control.slots() == 0 and not control.master.startswith("local"):
                    run.state = (f"waiting for executors: the cluster ({control.master}) gives this application none — its workers "
                                 "are gone or busy (see the master's web UI)")
                elif control.active_tasks() + tasks > control.slots():
                    run.state = f"waiting for {tasks} free task slots (gang scheduling: all workers start together)"
                publish()
            except Exception:  # noqa: BLE001 - a failed refresh must not stop the training
                continue

    watcher = threading.Thread(target=watch, name=f"nbscale-watch-{run.id}", daemon=True)
    status = "FAILED"
    try:
        if not logged:  # a reopened run has its parameters already
            log_params(mlf, built, version, spec, epochs, validation, train_split, val_split)
            mlf.log_params({"workers": workers, "min_workers": min_workers, "strategy": strategy, "gpus_per_worker": gpus_per_worker,
                            "parameter_servers": parameter_servers if tasks > workers else 0, "spark_master": control.master,
                            **describe(cell), **({"model": "nbscale default"} if default_code else {})})
        mlf.set_tag("nbscale.job_dir", str(job.root))  # the latest launch's worker logs and state
        if gated:
            on_data_host(touch, str(job.go))
        watcher.start()
        while True:
            try:
                stage.result()
                break
            except Exception:
                fewer = _elastic_retry(run, profile, tasks, tasks - workers, min_workers, stop)
                if fewer is None:
                    raise
                workers, tasks = fewer, fewer + (tasks - workers)
                stage = stage_of(tasks)
        watching.set()
        watcher.join(5)
        run.state = "finished"
        run.refresh()
        publish()
        _refuse_non_finite(run, version.ref)
        with tempfile.TemporaryDirectory(prefix="nbscale-weights-") as here, quiet_loggers("absl"):
            # The chief's file has no optimizer slots for the driver's unbuilt optimizer: expected, hence quiet.
            weights = download(str(job.weights), Path(here) / job.weights.name) if connect else job.weights
            built.load_weights(str(weights))
            model_uri = log_model(mlf, built, version, spec)
        status = "FINISHED"
    except BaseException as exc:
        abandon()  # a stage still running when the notebook's side failed
        if caused_by_interrupt(exc):
            status = "KILLED"
            raise KeyboardInterrupt from None
        if stop is not None and stop.is_set():
            status = "KILLED"
            raise TrainingCancelled(f"Distributed training on {version.ref} was cancelled; its MLflow run is marked KILLED and "
                                    "the workers are stopped. Run the cell again with --resume to continue.") from None
        if isinstance(exc, NbscaleError):
            raise
        run.refresh()
        why = run.failure() or executor_failure(str(exc)) or first_useful_line(str(exc))
        raise NbscaleError(f"Distributed training on {version.ref} failed after {len(run.seen.attempts)} attempt(s): {why}") from None
    finally:
        watching.set()
        run.state = {"FINISHED": "finished", "KILLED": "cancelled"}.get(status, "failed")
        _running.pop(run.id, None)
        if status != "FINISHED":
            run.wait_until_stopped()
        try:  # epochs the chief finished after the watcher's last look: logged before the run closes
            run.refresh()
            publish()
        except Exception:  # noqa: BLE001 - bookkeeping must never hide the training's own outcome
            pass
        _child_runs(client, run, parent.info.experiment_id, status)
        mlf.end_run(status)
    on_data_host(remove_tree, str(backups))
    metrics = run.view()
    return DistributedTrainResult(run.title, run.run_id, page, experiment, version.ref, epochs, metrics["history"],
                                  metrics["samples_per_s"] or 0.0, f"{workers} workers · {strategy}", built, model_uri,
                                  workers=workers, strategy=strategy, attempts=len(run.seen.attempts), job_dir=str(job.root),
                                  digests={r: run.seen.results.get(r) for r in range(tasks)}, card_html=render_job(run.title, metrics))


def _refuse_non_finite(run: DistributedRun, ref: str) -> None:
    """A NaN or infinite loss fails the run (FAILED, no model logged). The workers are not stopped early: under
    all-reduce one worker leaving its collective would leave the others waiting."""
    import math

    from ..train.callbacks import NonFiniteLoss, non_finite_message

    history = run.view()["history"]
    for metric in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(metric, []), start=1):
            if not math.isfinite(value):
                raise NonFiniteLoss(non_finite_message(ref, epoch, metric, value))


def _log_epochs(client, run: DistributedRun, records: list[dict]) -> None:
    """The chief's epoch metrics into the parent run, once per epoch across attempts and launches."""
    for record in records:
        if record["epoch"] not in run.logged_epochs:
            run.logged_epochs.add(record["epoch"])
            client.log_batch(run.run_id, metrics=[_metric(k, v, record["epoch"]) for k, v in
                                                  {**record["logs"], "samples_per_s": record["samples_per_s"]}.items()])


def _metric(key: str, value: float, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


def _child_runs(client, run: DistributedRun, experiment: str, status: str) -> None:
    """One child run per worker: its role, attempts and logs (the parent holds the metrics)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from ..datahost import download

    try:
        seen = run.seen
        ranks = sorted({rank for number in seen.attempts for rank in seen.states.get(number, {})})
        with tempfile.TemporaryDirectory(prefix="nbscale-logs-") as here:
            for rank in ranks:
                states = [seen.states.get(n, {}).get(rank) for n in seen.attempts]
                last = [s for s in states if s][-1]
                child = client.create_run(experiment, run_name=f"worker {rank} ({last['role']})",
                                          tags={MLFLOW_PARENT_RUN_ID: run.run_id, "nbscale.rank": str(rank), "nbscale.role": last["role"]})
                client.log_batch(child.info.run_id, metrics=[_metric("attempts", len([s for s in states if s]), 0),
                                                             _metric("epochs_done", last.get("epochs_done", 0), 0),
                                                             _metric("peak_rss_mb", max(s.get("peak_rss_mb", 0) for s in states if s), 0),
                                                             _metric("cpu_seconds", sum(s.get("cpu_s", 0) for s in states if s), 0)])
                for number, state in zip(seen.attempts, states):
                    if state is None:
                        continue
                    log = run.job.log_file(number, rank)  # a worker that wrote its state has its log
                    try:
                        copy = download(str(log), Path(here) / str(number) / log.name) if over_connect() else log
                        client.log_artifact(child.info.run_id, str(copy), artifact_path=f"logs/attempt-{number}")
                    except FileNotFoundError:  # removed meanwhile: the other workers' logs still go in
                        continue
                client.set_terminated(child.info.run_id, status)
    except Exception:  # noqa: BLE001 - worker bookkeeping must never hide the training's own outcome
        pass
