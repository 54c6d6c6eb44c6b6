"""Workers as one Spark barrier stage: gang-scheduled (all start together or none), each learning its
peers from the barrier context, each running `nbscale.distributed.worker` in a fresh process.

`mapInPandas(..., barrier=True)` also works over Spark Connect. The `.repartition(1)` after the
barrier stage matters: Spark never retries a barrier stage that ends a job, but it does resubmit one
whose output feeds a shuffle — that is what brings a failed run back (up to
`spark.stage.maxConsecutiveAttempts`, default 4), resuming from the epoch backups."""
from __future__ import annotations

import threading
import time

RESULT_SCHEMA = "rank long, role string, attempt long"


def roles(tasks: int, strategy: str, parameter_servers: int) -> list[tuple[str, int]]:
    """(role, index) of each barrier task, by partition id."""
    if strategy == "multiworker":
        return [("worker", i) for i in range(tasks)]
    ps = [("ps", i) for i in range(parameter_servers)]
    return [("chief", 0), *ps, *[("worker", i) for i in range(tasks - 1 - parameter_servers)]]


def barrier_task(jobdir: str, strategy: str, parameter_servers: int, env: dict):
    """The function each barrier task runs (pickled by value into the Spark job)."""

    def task(frames):
        import json
        import os
        import socket
        import subprocess
        import sys
        import time

        import pandas as pd
        from pyspark import BarrierTaskContext

        from nbscale.distributed.jobdir import JobDir
        from nbscale.distributed.launcher import ForkedWorker, roles
        from nbscale.distributed.preload import PRELOADED

        for _ in frames:  # the input rows only give the stage its partitions
            pass
        ctx = BarrierTaskContext.get()
        rank, job = ctx.partitionId(), JobDir(jobdir)
        tasks = len(ctx.getTaskInfos())
        host = ctx.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        with socket.socket() as s:  # a port for this worker's TF gRPC server
            s.bind((host, 0))
            port = s.getsockname()[1]
        attempt = job.next_attempt() if rank == 0 else -1
        peers = sorted((json.loads(m) for m in ctx.allGather(json.dumps({"rank": rank, "address": f"{host}:{port}", "attempt": attempt}))),
                       key=lambda p: p["rank"])
        attempt = peers[0]["attempt"]
        layout = roles(tasks, strategy, parameter_servers)
        cluster: dict[str, list[str]] = {}
        for (role, _), peer in zip(layout, peers):
            cluster.setdefault(role, []).append(peer["address"])
        role, index = layout[rank]
        child_env = dict(os.environ, **env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": role, "index": index}}))
        # Each worker's compute pools get its share of this host's cores: TensorFlow and OpenMP would each size theirs
        # to all of them (two workers on two cores ran a step 2.5-3x slower). The inter-op pool is left as it is:
        # with one inter-op thread a parameter-server chief deadlocks at its first step. A spark.executorEnv setting wins.
        if "TF_NUM_INTRAOP_THREADS" not in child_env:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            here = sum(1 for info in ctx.getTaskInfos() if info.address.rsplit(":", 1)[0] == host)
            threads = max(1, cores // max(here, 1))
            child_env.update(TF_NUM_INTRAOP_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        gpus = ctx.resources().get("gpu")
        if gpus is not None:  # the GPUs Spark gave this task, and only those
            child_env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        serving = strategy == "parameter-server" and role != "chief"  # runs until the chief is done
        with open(job.log_file(attempt, rank), "ab") as log:
            if os.environ.get(PRELOADED) == "1":  # this Python worker came from nbscale.distributed.preload's daemon
                child = ForkedWorker.start(log.fileno(), child_env, [jobdir, str(attempt), str(rank)])
            else:
                child = subprocess.Popen([sys.executable, "-m", "nbscale.distributed.worker", jobdir, str(attempt), str(rank)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env)
        ended_by_us = killed_on_request = False
        try:
            while child.poll() is None:
                if job.kill_file(attempt, rank).exists():  # "kill a worker" from the notebook
                    child.kill()
                    killed_on_request = True
                elif serving and job.done_file(attempt).exists():
                    child.terminate()
                    ended_by_us = True
                time.sleep(0.2)
        finally:
            if child.poll() is None:  # the task itself is being killed (cancel): take the worker along
                child.kill()
        if child.returncode != 0 and not ended_by_us:
            error = job.error_file(attempt, rank)
            if not error.exists():  # the process died without a word: say how, for the card
                how = "killed from the notebook (%jobs kill)" if killed_on_request else f"its process died (exit code {child.returncode})"
                error.write_text(f"died: {how}\n")
            raise RuntimeError(f"nbscale worker {rank} ({role} {index}) failed in attempt {attempt}: {error.read_text().strip()}")
        if role == "chief" or (role == "worker" and index == 0 and "chief" not in cluster):
            job.done_file(attempt).touch()
        ctx.barrier()
        yield pd.DataFrame({"rank": [rank], "role": [role], "attempt": [attempt]})

    return task


class ForkedWorker:
    """A distributed worker forked from its barrier task, where the task's Python worker has TensorFlow imported
    already (nbscale.distributed.preload): the child shares that import instead of building its own. It is
    waited on and killed as a `subprocess.Popen` is; it never returns into PySpark's worker code."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    @classmethod
    def start(cls, log_fd: int, env: dict, argv: list[str]) -> "ForkedWorker":
        import os
        import signal
        import sys

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # waited on here, not reaped behind our back (the daemon ignores it)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return cls(pid)
        code = 1
        try:  # the child: a fresh worker's stdio and environment, then the worker's own main
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.environ.clear()
            os.environ.update(env)
            from nbscale.distributed.worker import main

            code = main(argv)
        except BaseException:  # noqa: BLE001 - a child of a Spark task must end here, whatever happened
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        import os

        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _signal(self, sig: int) -> None:
        import contextlib
        import os

        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        import signal

        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        import signal

        self._signal(signal.SIGTERM)


def launch(session, jobdir: str, tasks: int, strategy: str, parameter_servers: int, env: dict, profile=None) -> list:
    """Run the barrier stage to completion (Spark retries it on failure); rows of (rank, role, attempt).
    `profile`: a stage-level resource profile (GPUs per task), or None."""
    task = barrier_task(jobdir, strategy, parameter_servers, env)
    stage = session.range(0, tasks, 1, tasks).mapInPandas(task, RESULT_SCHEMA, barrier=True, profile=profile)
    return stage.repartition(1).collect()


class BackgroundStage:
    """`launch` run from a thread, so that the notebook finishes its own part (the model built and checked, the MLflow
    run opened) while Spark schedules the tasks and the workers import TensorFlow. Its Spark work carries the job
    group (over Connect: the tag) `group`, and the cell thread's other local properties, as if the cell ran it."""

    def __init__(self, session, control, group: str, title: str, pool: str | None, launch_args: tuple):
        self.session, self.control, self.group, self.title, self.pool = session, control, group, title, pool
        self.launch_args = launch_args
        self._outcome: dict = {}
        self._thread = None
        # Its end, as an event: a KeyboardInterrupt inside Thread.join marks a thread that still runs as stopped
        # (CPython 3.11's _wait_for_tstate_lock), after which is_alive() lies and the stage would never be cancelled.
        self._ended = threading.Event()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        from pyspark.util import InheritableThread

        def run():
            try:
                with self.control.labelled(self.group, self.title, self.pool):
                    self._outcome["rows"] = launch(self.session, *self.launch_args)
            except BaseException as exc:  # noqa: BLE001 - handed to the cell's thread by result()
                self._outcome["error"] = exc
            finally:
                self._ended.set()

        self._thread = InheritableThread(run, name=f"nbscale-stage-{self.group}", daemon=True, session=self.session)
        self._thread.start()

    def result(self) -> list:
        """The stage's rows once it ends (started here if it was not); its error raised in the caller's thread."""
        if self._thread is None:
            self.start()
        while not self._ended.wait(0.5):  # short waits: a kernel interrupt reaches the cell at once
            pass
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["rows"]

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the stage and wait (bounded) for its thread. Cancelled again each second: a stage the thread
        submits just after a cancel is cancelled by the next one."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while not self._ended.is_set() and time.monotonic() < deadline:
            try:
                self.control.cancel(self.group)
            except Exception:  # noqa: BLE001 - a JVM or server going away ends the stage too
                pass
            self._ended.wait(1.0)
