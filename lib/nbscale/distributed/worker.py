"""One TensorFlow worker of a distributed `%%train`: `python -m nbscale.distributed.worker JOBDIR ATTEMPT RANK`.

Each Spark barrier task starts this in a fresh process (a reused Python worker cannot configure
TF's collectives twice), with `TF_CONFIG` naming its role. It dies with the task that started it,
writes its progress, log and errors into the job directory, and — on the chief — the epoch metrics
and final weights."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import traceback

from ..processes import die_with_parent
from ..contracts import WorkerResult, WorkerState
from ..errors import NbscaleError
from ..files import write_json
from .jobdir import JobDir, append_json

PROGRESS_EVERY_S = 0.5
GO_WAIT_S = 600  # the notebook builds and checks the cell and opens its run while the workers start: seconds, normally


def weights_digest(model) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


class Worker:
    def __init__(self, jobdir: str, attempt: int, rank: int, started_at: float):
        import cloudpickle

        self.job, self.attempt, self.rank = JobDir(jobdir), attempt, rank
        with open(self.job.spec, "rb") as f:
            self.spec = cloudpickle.load(f)
        config = json.loads(os.environ["TF_CONFIG"])
        self.cluster, self.role, self.index = config["cluster"], config["task"]["type"], config["task"]["index"]
        self.chief = self.role == "chief" or (self.role == "worker" and self.index == 0 and "chief" not in self.cluster)
        self.confirmed = not self.spec.get("gated")  # an ungated spec (over Connect) needs no `go`
        self.state: WorkerState = {"rank": rank, "role": self.role, "index": self.index, "pid": os.getpid(), "attempt": attempt,
                      "host": self.cluster[self.role][self.index].rsplit(":", 1)[0],
                      "epoch": 0, "epochs": self.spec["epochs"], "step": 0, "steps": self.spec["steps_per_epoch"], "state": "starting",
                      "started_at": started_at,
                      # forked from a task whose daemon imported TensorFlow (nbscale.distributed.preload), sharing it
                      "tensorflow_preloaded": "tensorflow" in sys.modules}
        self.save_state()

    def save_state(self, **changes) -> None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)  # the worker's system metrics, for its MLflow child run
        self.state.update(changes, updated=time.time(), peak_rss_mb=usage.ru_maxrss / 1024, cpu_s=usage.ru_utime + usage.ru_stime)
        write_json(self.job.state_file(self.attempt, self.rank), self.state)

    def wait_for_go(self) -> None:
        """Before the first epoch's metrics and backups: the notebook may still be checking the cell (it started the
        stage first, to overlap the workers' start with its own), and a launch it abandons must leave nothing."""
        if self.confirmed:
            return
        deadline = time.monotonic() + GO_WAIT_S
        while not self.job.go.exists():
            if self.job.abandoned.exists():
                raise NbscaleError("The notebook stopped this launch before its first epoch ended (see the cell's error).")
            if time.monotonic() > deadline:
                raise NbscaleError(f"The notebook did not confirm this launch within {GO_WAIT_S} s of the workers starting: "
                                   "run the cell again.")
            if self.state["state"] != "waiting for the notebook":
                self.save_state(state="waiting for the notebook")
            time.sleep(0.05)
        self.confirmed = True
        if self.state["state"] == "waiting for the notebook":
            self.save_state(state="training")

    # ---- roles ---------------------------------------------------------------------------
    def run(self) -> None:
        import tensorflow as tf
        import tf_keras  # before nbscale.train.keras(), which would log TF's start-up under the driver's data dir

        if self.spec["strategy"] == "parameter-server" and self.role in ("ps", "worker"):
            server = tf.distribute.Server(tf.train.ClusterSpec(self.cluster), job_name=self.role, task_index=self.index,
                                          protocol="grpc", start=True)
            self.save_state(state="serving")
            print(f"{self.role} {self.index} (rank {self.rank}, attempt {self.attempt}): serving on {self.cluster[self.role][self.index]}",
                  flush=True)
            server.join()  # until the task ends us when the chief is done
            return
        if self.spec["strategy"] == "parameter-server":
            strategy = tf.distribute.ParameterServerStrategy(tf.distribute.cluster_resolver.TFConfigClusterResolver())
            train_data, validation = self._coordinator_data(tf), None
        else:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            train_data, validation = self._worker_data(tf)
        import cloudpickle

        from ..train.cell import build

        namespace = cloudpickle.loads(self.spec["namespace"])  # after the strategy: see shipping.capture
        with strategy.scope():
            cell = build(self.spec["code"], namespace, self.spec["seed"], self.spec["precision"])
        model = cell.model
        # Progress first: an epoch's metrics are recorded before its backup, so an epoch a resume skips is never unlogged.
        # The cell's callbacks last: every worker sees the same all-reduced metrics, so an EarlyStopping stops them all at once.
        callbacks = [self._progress_callback(tf_keras), tf_keras.callbacks.BackupAndRestore(self.spec["backup_dir"]), *cell.callbacks]
        self.save_state(state="training", threads=int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")),  # its share of the host's cores
                        ready_at=time.time())
        print(f"{self.role} {self.index} (rank {self.rank}, attempt {self.attempt}): training {self.spec['epochs']} epochs of "
              f"{self.spec['steps_per_epoch']} steps" + (f" on {self.state['rows']} rows of its shard" if self.state.get("rows") else ""),
              flush=True)
        model.fit(train_data, epochs=self.spec["epochs"], steps_per_epoch=self.spec["steps_per_epoch"], verbose=0,
                  callbacks=callbacks, **validation or {}, **cell.fit_kwargs)
        digest = weights_digest(model)
        if self.chief:
            model.save_weights(str(self.job.weights))
        elif self.spec["strategy"] != "parameter-server":
            # Saving reads every variable; one kept per replica and summed on read (BatchNormalization's moving mean and
            # variance) is an all-reduce, so every worker saves — the others to a folder thrown away — or the chief waits.
            import tempfile

            with tempfile.TemporaryDirectory(prefix="nbscale-weights-") as scratch:
                model.save_weights(os.path.join(scratch, "weights.h5"))
        write_json(self.job.result_file(self.rank), WorkerResult(rank=self.rank, role=self.role, digest=digest, attempt=self.attempt,
                                                                 rows=self.state.get("rows")))
        self.save_state(state="finished")

    def _worker_data(self, tf):
        """All-reduce: each worker reads its own shard (every pass's rows checked), same steps for all."""
        from .. import feed

        spec, world = self.spec["feed"], len(self.cluster["worker"])
        local_batch = self.spec["batch_size"] // world
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # sharded by file already
        signature = (tf.TensorSpec((None, *spec.feature_shape), tf.float32), tf.TensorSpec((None,), tf.as_dtype(spec.label_dtype)))

        def pipeline(split_, shuffle):
            mine = feed.shard(split_, self.index, world)
            self.state["rows"] = (self.state.get("rows") or 0) + (mine.rows if shuffle else 0)
            ds = tf.data.Dataset.from_generator(lambda: feed.endless_batches(mine, spec, local_batch, shuffle), output_signature=signature)
            return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

        validation = None
        if self.spec["validation"] is not None:
            validation = {"validation_data": pipeline(self.spec["validation"], False), "validation_steps": self.spec["validation_steps"]}
        return pipeline(self.spec["train"], True), validation

    def _coordinator_data(self, tf):
        """Parameter server: the dataset function runs on the workers as a graph, so the chief reads the
        split once through Petastorm (rows checked) and ships it as in-graph tensors, as stored (uint8 pixels:
        a quarter of float32's bytes, held and shipped), made float32 and scaled in the graph."""
        import numpy as np

        import tf_keras

        from .. import feed

        spec = self.spec["feed"]
        parts = list(feed.batches(self.spec["train"], spec, shuffle=False, stored=True))
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        self.state["rows"] = len(y)
        batch, seed = self.spec["batch_size"], self.spec["seed"]
        decoded = x.dtype == np.float32 and spec.scale == 1

        def dataset_fn(context):
            per_replica = context.get_per_replica_batch_size(batch)
            ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(context.num_input_pipelines, context.input_pipeline_id)
            ds = ds.shuffle(len(y), seed=seed).batch(per_replica)
            if not decoded:  # the division feed.batches does in numpy when it decodes: the same float32 values
                scale = tf.constant(spec.scale, tf.float32)
                ds = ds.map(lambda features, labels: (tf.cast(features, tf.float32) / scale, labels))
            return ds.repeat().prefetch(2)

        return tf_keras.utils.experimental.DatasetCreator(dataset_fn)

    def _progress_callback(self, tf_keras):
        worker = self

        class EpochProgress(tf_keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started, self.written = time.perf_counter(), 0.0
                worker.state.setdefault("first_epoch", epoch + 1)  # > 1 when BackupAndRestore resumed
                worker.save_state(epoch=epoch + 1, step=0)

            def on_epoch_end(self, epoch, logs=None):
                seconds = time.perf_counter() - self.started
                worker.wait_for_go()
                worker.save_state(step=worker.spec["steps_per_epoch"], epochs_done=epoch + 1)
                shown = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
                print(f"epoch {epoch + 1}/{worker.spec['epochs']} done in {seconds:.1f} s" + (f": {shown}" if shown else ""), flush=True)
                if worker.chief:
                    samples = worker.spec["steps_per_epoch"] * worker.spec["batch_size"]
                    append_json(worker.job.metrics, {"attempt": worker.attempt, "epoch": epoch,
                                                     "logs": {k: float(v) for k, v in (logs or {}).items()},
                                                     "seconds": seconds, "samples_per_s": samples / seconds})

        class StepProgress(EpochProgress):
            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                if "first_step_at" not in worker.state:
                    worker.state["first_step_at"] = time.time()  # the launch overhead ends here
                    self.written = 0.0
                if now - self.written >= PROGRESS_EVERY_S:
                    self.written = now
                    worker.save_state(step=batch + 1)

        # ParameterServerStrategy refuses batch-level callbacks: its progress moves per epoch.
        return EpochProgress() if self.spec["strategy"] == "parameter-server" else StepProgress()


def _retryable(exc: BaseException) -> bool:
    """Errors of TF's runtime talking to peers (one died, a link dropped) may pass on a rerun; an
    error in the cell, the data or nbscale would only repeat."""
    try:
        import tensorflow as tf
    except ImportError:
        return False
    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                            tf.errors.DeadlineExceededError, tf.errors.InternalError))


def _one_line(exc: BaseException) -> str:
    from ..errors import NbscaleError, first_useful_line

    if isinstance(exc, NbscaleError):
        return str(exc)
    text = str(exc)
    if "ShortEpochError: " in text:
        return text.split("ShortEpochError: ", 1)[1].splitlines()[0]
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)  # TF's op/device annotations say nothing to the reader
    return f"{type(exc).__name__}: {first_useful_line(text, limit=200)}"


def main(argv: list[str]) -> int:
    started_at = time.time()
    die_with_parent()  # if the Spark task (our parent) is killed, so are we
    jobdir, attempt, rank = argv[0], int(argv[1]), int(argv[2])
    try:
        worker = Worker(jobdir, attempt, rank, started_at)
        worker.run()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the one line the notebook shows
        traceback.print_exc()
        job = JobDir(jobdir)
        job.error_file(attempt, rank).write_text(_one_line(exc) + "\n")
        if not _retryable(exc):
            job.fatal_file(attempt, rank).touch()
        return 1
    return 0


if __name__ == "__main__":
    from nbscale.tfenv import set_tensorflow_defaults

    set_tensorflow_defaults()
    sys.exit(main(sys.argv[1:]))
