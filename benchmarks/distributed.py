"""Distributed training on a real Spark standalone cluster (1 Spark worker, 4 task slots, 127.0.0.1),
measured in one run on the same data, model and global batch:

  2-worker epoch time  ÷  1-worker epoch time   (median of the epochs after the first, all-reduce)
  launch overhead: train_distributed() called -> first training step on every worker

    .venv/bin/python benchmarks/distributed.py [ROWS] [EPOCHS]
"""
import os
import socket
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

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

    result = train_distributed(MODEL, data="synthetic", workers=workers, epochs=epochs, batch_size=256, scale=255.0, validation=0.0,
                               experiment="bench-distributed", on_start=runs.append)
    run = runs[-1]
    records = run.job.epoch_metrics()
    first_steps = [s["first_step_at"] for s in run.job.states(0).values()]
    return {"epoch_s": statistics.median(r["seconds"] for r in records[1:]), "launch_s": max(first_steps) - run.started_at,
            "accuracy": result.metrics["accuracy"]}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    os.environ.setdefault("NBSCALE_DATA_DIR", tempfile.mkdtemp(prefix="nbscale-bench-dist-"))
    from pyspark.sql import functions as F

    import nbscale
    from nbscale import cluster
    from nbscale.config import settings
    from nbscale.ingest import ingest

    status = cluster.up(workers=1, cores=4, memory="4g", port=free_port())
    try:
        settings().master = status.master_url
        spark = nbscale.spark()
        source = os.path.join(settings().data_dir, "synthetic.parquet")
        (spark.range(rows, numPartitions=8).withColumn("label", (F.col("id") % 10).cast("int"))
         .withColumn("image", F.expr("transform(sequence(0, 783), i -> CAST(CASE WHEN i % 10 = label THEN 200 ELSE pmod(hash(id, i), 50) END AS FLOAT))"))
         .select("image", "label").write.mode("overwrite").parquet(source))
        ingest("synthetic", source, label="label")
        runs: list = []
        one = measure(1, epochs, runs)
        two = measure(2, epochs, runs)
    finally:
        nbscale.session.stop_spark()
        cluster.down()
    print(f"data: {rows} rows x 784 features, global batch 256, {epochs} epochs, Spark standalone on {os.cpu_count()} CPU cores")
    print(f"1 worker : epoch {one['epoch_s']:.2f} s, launch -> first step {one['launch_s']:.1f} s, accuracy {one['accuracy']:.3f}")
    print(f"2 workers: epoch {two['epoch_s']:.2f} s, launch -> first step {two['launch_s']:.1f} s, accuracy {two['accuracy']:.3f}")
    print(f"2-worker epoch time / 1-worker epoch time: {two['epoch_s'] / one['epoch_s']:.2f}")
    print(f"launch overhead (call -> first step on every worker): {one['launch_s']:.1f} s (1 worker), {two['launch_s']:.1f} s (2 workers)")


if __name__ == "__main__":
    main()
