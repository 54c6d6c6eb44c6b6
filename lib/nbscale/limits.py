"""The Binder profile (`NBSCALE_PROFILE=binder`, set by binder/start): the tutorials on a 2 GiB,
shared-CPU machine. It shrinks what a cell asks for — epochs, rows of the built-in datasets, an
executor's memory, shuffle partitions, trials run at once — and says so in the cell's output, so a
reader knows why the numbers differ from the committed notebook. The default profile changes nothing."""
from __future__ import annotations

from .config import settings

BINDER = {
    "epochs": 3,  # enough for a model to learn digits and for 03's "kill a worker after epoch 2"
    "rows": 6000,  # of a built-in dataset (Fashion-MNIST has 60 000)
    "executor_memory_mb": 512,  # per executor (the local cluster's, or a real one's)
    "parallel": 1,  # tuning trials at once: each is a TensorFlow process
}


def litert_replicas() -> bool:
    """Whether models are logged with a LiteRT export that model replicas serve instead of TensorFlow: in the Binder
    profile, where a replica importing TensorFlow takes ~0.4 GiB and one running LiteRT ~0.2 (benchmarks/suite.py).
    The export is only kept when it answers as TensorFlow does (nbscale.train.litert)."""
    return settings().profile == "binder"


REPLICA_RUNTIME_VARIABLE = "NBSCALE_REPLICA_RUNTIME"  # "litert": a replica's model runs its LiteRT export


def cap(what: str, asked: int) -> int:
    """`asked`, or the Binder profile's limit for `what` when that is lower (and a line saying so)."""
    limit = BINDER[what] if settings().profile == "binder" else None
    if limit is None or asked <= limit:
        return asked
    print(f"Binder profile: {what} capped at {limit} (asked {asked}); NBSCALE_PROFILE=full lifts it.")
    return limit


# A JVM's own footprint beside its heap, measured (benchmarks/suite.py): the serial collector keeps no
# per-region bookkeeping and grows the heap only as needed, from a small start (the default start is 1/64 of the
# RAM the JVM sees: on a 24 GiB host a driver's young generation alone filled ~75 MB before its first collection);
# smaller code cache and metaspace caps.
LEAN_JVM = ("-XX:+UseSerialGC -XX:InitialHeapSize=32m -XX:ReservedCodeCacheSize=64m -XX:MaxMetaspaceSize=256m"
            " -XX:CICompilerCount=2 -XX:TieredStopAtLevel=1 -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=20")


def spark_conf() -> dict[str, str]:
    """Spark settings of the profile (the user's Nbscale.spark_conf still wins)."""
    cfg = settings()
    if cfg.profile != "binder":
        return {}
    conf = {"spark.executor.memory": f"{BINDER['executor_memory_mb']}m", "spark.sql.shuffle.partitions": "8",
            "spark.driver.extraJavaOptions": LEAN_JVM, "spark.executor.extraJavaOptions": LEAN_JVM,
            # A Python worker that ran a model (scoring, a tuning trial) keeps TensorFlow loaded while it
            # waits for the next task; a fresh worker per task gives that memory back.
            "spark.python.worker.reuse": "false",
            # Batch scoring (%score) loads the model in Python workers: the LiteRT export, as replicas do.
            f"spark.executorEnv.{REPLICA_RUNTIME_VARIABLE}": "litert"}
    if not cfg.master.startswith("local"):
        # On a cluster (03's distributed runs) DataFrame tasks' Python workers start from a daemon that imported
        # TensorFlow once, and each distributed worker is forked from its task, sharing that import (03's peak
        # ~0.5 GiB lower: benchmarks/suite.py). Local sessions keep PySpark's plain daemon: their Python workers
        # (ingest, scoring) would carry TensorFlow for nothing.
        conf["spark.python.daemon.module"] = "nbscale.distributed.preload"
    return conf


def daemon_env() -> dict[str, str]:
    """Environment for the local standalone cluster's master and worker JVMs."""
    if settings().profile != "binder":
        return {}
    return {"SPARK_DAEMON_MEMORY": "128m", "SPARK_DAEMON_JAVA_OPTS": LEAN_JVM}
