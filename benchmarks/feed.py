"""The training input pipeline, measured in one run on the same model and data:

  Petastorm-fed fit samples/s  ÷  in-memory-fed fit samples/s (from_tensor_slices().cache().prefetch)
  Petastorm read samples/s     ÷  pyarrow raw read samples/s (read_table -> numpy)

    .venv/bin/python benchmarks/feed.py [ROWS]
"""
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    os.environ.setdefault("NBSCALE_DATA_DIR", tempfile.mkdtemp(prefix="nbscale-bench-feed-"))
    import numpy as np
    import pyarrow.parquet as pq
    import tensorflow as tf
    from pyspark.sql import functions as F

    import nbscale
    from nbscale import feed
    from nbscale.ingest import ingest
    from nbscale.train import keras

    spark = nbscale.spark()
    # Fashion-MNIST-shaped, learnable: label = id % 10; pixel i is bright when i % 10 == label.
    source = os.path.join(os.environ["NBSCALE_DATA_DIR"], "synthetic.parquet")
    (spark.range(rows, numPartitions=4).withColumn("label", (F.col("id") % 10).cast("int"))
     .withColumn("image", F.expr("transform(sequence(0, 783), i -> CAST(CASE WHEN i % 10 = label THEN 200 ELSE pmod(hash(id, i), 50) END AS FLOAT))"))
     .select("image", "label").write.mode("overwrite").parquet(source))
    data = ingest("synthetic", source, label="label").dataset
    spec = feed.spec_for(data, "label", 128, 255.0, 0)
    train_split, _ = feed.split(data, 0.0, 0)
    tfk = keras()

    def model():
        m = tfk.Sequential([tfk.Input(shape=(784,)), tfk.layers.Dense(128, activation="relu"),
                            tfk.layers.Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    def fit_rate(dataset, epochs=3) -> float:
        times = []

        class Timer(tfk.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t0)

        model().fit(dataset, epochs=epochs, verbose=0, callbacks=[Timer()])
        return train_split.rows / min(times[1:])  # steady state: best epoch after the first

    # Raw reads: Petastorm through nbscale's checked feed vs pyarrow straight to numpy.
    t0 = time.perf_counter()
    petastorm_rows = sum(len(y) for _, y in feed.batches(train_split, spec, shuffle=False))
    petastorm_read = petastorm_rows / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    table = pq.read_table(train_split.path.removeprefix("file://"))
    images = np.stack(table.column("image").to_numpy(zero_copy_only=False)).astype(np.float32) / 255.0
    labels = table.column("label").to_numpy()
    arrow_read = len(labels) / (time.perf_counter() - t0)

    in_memory = tf.data.Dataset.from_tensor_slices((images, labels)).batch(128).cache().prefetch(tf.data.AUTOTUNE)
    memory_fit = fit_rate(in_memory)
    petastorm_fit = fit_rate(feed.tf_dataset(train_split, spec, shuffle=True))
    nbscale.session.stop_spark()

    print(f"rows: {train_split.rows}, batch 128, cores: {os.cpu_count()}, reader pool: {feed.READER_POOL}")
    print(f"fit, in-memory fed      {memory_fit:10,.0f} samples/s")
    print(f"fit, Petastorm fed      {petastorm_fit:10,.0f} samples/s")
    print(f"read, pyarrow raw       {arrow_read:10,.0f} samples/s")
    print(f"read, Petastorm (feed)  {petastorm_read:10,.0f} samples/s")
    print(f"ratio fit  Petastorm / in-memory   {petastorm_fit / memory_fit:5.2f}   (goal >= 0.95)")
    print(f"ratio read Petastorm / pyarrow     {petastorm_read / arrow_read:5.2f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()
