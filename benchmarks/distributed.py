"""Distributed training on real Spark standalone clusters, measured in one run on the same data,
model and global batch:

- one host: 1 Spark worker with 4 task slots on 127.0.0.1;
- two hosts (`--hosts`, needs root): the multi-host test bed of tests/cluster/hosts.py, two network
  namespaces with one task slot each, so a 2-worker run has one worker per host and all-reduces over
  the bridge; the data dir on the shared folder; the driver at the address that routes to the master.

  2-worker epoch time  ÷  1-worker epoch time   (median of the epochs after the first, all-reduce)
  launch overhead: the call (the cell) -> first training step on every worker, for a dataset whose
  split exists (written before the clock starts), in the session's first job and in a later one, as a
  timeline from the call (the stage starts first, and the notebook's part overlaps the workers' start):
  worker processes running, TensorFlow + strategy + model ready in them, the notebook's model checked and
  MLflow run open (`go`), the first step done on every worker

    .venv/bin/python benchmarks/distributed.py [ROWS] [EPOCHS] [--hosts]
"""
import os
import socket
import statistics
import sys
import time

from measure import scratch_data_dir  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

SEED = 42
MODEL = """
model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(workers: int, epochs: int, runs: list) -> dict:
    from nbscale.distributed import train_distributed

    called = time.time()
    result = train_distributed(MODEL, data="synthetic", workers=workers, epochs=epochs, batch_size=256, scale=255.0, validation=0.0,
                               seed=SEED, experiment="bench-distributed", on_start=runs.append)
    run = runs[-1]
    records = run.job.epoch_metrics()
    states = list(run.job.states(0).values())
    started, ready, first = (max(s[key] for s in states) for key in ("started_at", "ready_at", "first_step_at"))
    return {"epoch_s": statistics.median(r["seconds"] for r in records[1:]), "cell_s": first - called, "accuracy": result.metrics["accuracy"], "hosts": len({s.get("host") for s in states}),
            "phases": {"worker processes running": started - called, "their TF + strategy + model ready": ready - called,
                       "notebook's model checked and MLflow run open": run.started_at - called, "first step done": first - called}}


def write_split(workers: int) -> None:
    """The split measure() trains on, written before any clock starts (the launch is measured for an existing split)."""
    from nbscale import feed
    from nbscale.ingest import dataset

    version = dataset("synthetic")
    feed.split(version, feed.spec_for(version, None, 256, 255.0, SEED), 0.0, row_groups=max(4, workers), pull=False)


def write_synthetic(rows: int) -> None:
    from pyspark.sql import functions as F

    import nbscale
    from nbscale.config import settings
    from nbscale.ingest import ingest

    spark = nbscale.spark()
    source = os.path.join(settings().data_dir, "synthetic.parquet")
    (spark.range(rows, numPartitions=8).withColumn("label", (F.col("id") % 10).cast("int"))
     .withColumn("image", F.expr("transform(sequence(0, 783), i -> CAST(CASE WHEN i % 10 = label THEN 200 ELSE pmod(hash(id, i), 50) END AS FLOAT))"))
     .select("image", "label").write.mode("overwrite").parquet(source))
    ingest("synthetic", source, label="label")
    write_split(2)


def one_host(rows: int, epochs: int) -> tuple[dict, dict]:
    import nbscale
    from nbscale import cluster
    from nbscale.config import settings

    status = cluster.up(workers=1, cores=4, memory="4g", port=free_port())
    try:
        settings().master = status.master_url
        write_synthetic(rows)
        runs: list = []
        return measure(1, epochs, runs), measure(2, epochs, runs)
    finally:
        nbscale.session.stop_spark()
        cluster.down()


def two_hosts(rows: int, epochs: int) -> tuple[dict, dict]:
    import nbscale
    from nbscale.config import settings

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from cluster.hosts import Hosts

    cfg = settings()
    saved = cfg.master, cfg.data_dir
    with Hosts(2, cores=1, memory="4g") as hosts:
        try:
            nbscale.connect(master=hosts.master_url, data_dir=str(hosts.shared / "data"))
            write_synthetic(rows)
            runs: list = []
            return measure(1, epochs, runs), measure(2, epochs, runs)
        finally:
            nbscale.session.stop_spark()
            cfg.master, cfg.data_dir = saved


def report(where: str, one: dict, two: dict) -> None:
    print(f"{where}:")
    for name, m in (("1 worker ", one), ("2 workers", two)):
        print(f"  {name}: epoch {m['epoch_s']:.2f} s on {m['hosts']} host(s), cell -> first step {m['cell_s']:.1f} s, "
              f"accuracy {m['accuracy']:.3f}")
        print("    launch timeline from the call: " + ", ".join(f"{phase} +{seconds:.1f} s" for phase, seconds in m["phases"].items()))
    print(f"  2-worker epoch time / 1-worker epoch time: {two['epoch_s'] / one['epoch_s']:.2f}")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = int(args[0]) if args else 40_000
    epochs = int(args[1]) if len(args) > 1 else 4
    local = one_host(rows, epochs)
    hosts = two_hosts(rows, epochs) if "--hosts" in sys.argv else None
    print(f"data: {rows} rows x 784 features, global batch 256, {epochs} epochs, all on one machine of {os.cpu_count()} CPU cores")
    print("the split exists before each call: the 1-worker call is the session's first distributed job, the 2-worker call the second")
    report("one host (1 Spark worker, 4 slots, 127.0.0.1)", *local)
    if hosts:
        report("two hosts (network namespaces, 1 slot each: one worker per host)", *hosts)
        print(f"2 hosts / 1 host, 2-worker epoch time: {hosts[1]['epoch_s'] / local[1]['epoch_s']:.2f}; "
              f"cell -> first step: {hosts[1]['cell_s'] / local[1]['cell_s']:.2f}")


if __name__ == "__main__":
    with scratch_data_dir("distributed"):
        main()
