"""The training input pipeline, measured in one run on the same model and data:

  Petastorm-fed fit samples/s  ÷  in-memory-fed fit samples/s (from_tensor_slices().cache().prefetch)
  Petastorm read samples/s     ÷  pyarrow raw read samples/s (read_table -> numpy)

plus the fit with no input pipeline at all (one batch already on the device: the upper bound, on a
GPU when TensorFlow sees one) and the Petastorm fit without tf.data's cache (a split too large to cache
is re-read through Petastorm every epoch).

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
    train_split, _ = feed.split(data, spec, 0.0)
    tfk = keras()

    def model():
        m = tfk.Sequential([tfk.Input(shape=(784,)), tfk.layers.Dense(128, activation="relu"),
                            tfk.layers.Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    def fit_rate(dataset, epochs=5) -> float:
        times = []

        class Timer(tfk.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t0)

        model().fit(dataset, epochs=epochs, verbose=0, callbacks=[Timer()])
        return train_split.rows / min(times[1:])  # steady state: best epoch after the first

    def best_read(read) -> float:
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            rates.append(read() / (time.perf_counter() - t0))
        return max(rates)

    def arrow_matrix(path):  # pyarrow at its fastest: the list column's flat child buffer, reshaped
        table = pq.read_table(path)
        images = table.column("image").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        return images.astype(np.float32) / np.float32(255.0), table.column("label").to_numpy()

    # Raw reads, each the best of three passes: Petastorm through nbscale's checked feed (its split
    # layout) against pyarrow reading the dataset version the user ingested straight into numpy.
    petastorm_read = best_read(lambda: sum(len(y) for _, y in feed.batches(train_split, spec, shuffle=False)))
    arrow_read = best_read(lambda: len(arrow_matrix(data.path)[1]))
    split_files = train_split.path.removeprefix("file://")
    arrow_split_read = best_read(lambda: len(np.frombuffer(b"".join(pq.read_table(split_files).column(feed.FEATURES).to_pylist()),
                                                           train_split.encoding).reshape(-1, *spec.feature_shape).astype(np.float32)))

    images, labels = arrow_matrix(data.path)
    in_memory = lambda: tf.data.Dataset.from_tensor_slices((images, labels)).batch(128).cache().prefetch(tf.data.AUTOTUNE)
    petastorm = lambda: feed.tf_dataset(train_split, spec, shuffle=True, counter=tf.Variable(0, dtype=tf.int64))
    # Interleaved, best of two each: on 2 shared cores one run's figure moves by 20 %.
    memory_fit = max(fit_rate(in_memory()), fit_rate(in_memory()))
    petastorm_fit = max(fit_rate(petastorm()), fit_rate(petastorm()))
    memory_fit = max(memory_fit, fit_rate(in_memory()))
    feed.CACHE_BYTES, cache_bytes = 0, feed.CACHE_BYTES
    streamed_fit = fit_rate(petastorm())
    feed.CACHE_BYTES = cache_bytes
    # The upper bound: one batch already on the device, fed again and again (no input pipeline at all).
    on_device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    with tf.device(on_device):
        x, y = tf.identity(images[:128]), tf.identity(labels[:128])
    bound = tf.data.Dataset.from_tensors((x, y)).repeat(feed.steps(train_split.rows, 128))
    bound_fit = fit_rate(bound)
    nbscale.session.stop_spark()

    print(f"rows: {train_split.rows}, batch 128, cores: {os.cpu_count()}, device: {on_device}, reader pool: {feed.READER_POOL}, "
          f"split layout: {train_split.encoding}")
    print(f"fit, one cached batch   {bound_fit:10,.0f} samples/s   (upper bound)")
    print(f"fit, in-memory fed      {memory_fit:10,.0f} samples/s")
    print(f"fit, Petastorm fed      {petastorm_fit:10,.0f} samples/s   (read and checked once, then tf.data's cache)")
    print(f"fit, Petastorm streamed {streamed_fit:10,.0f} samples/s   (re-read through Petastorm every epoch)")
    print(f"read, pyarrow raw       {arrow_read:10,.0f} samples/s   (the ingested version, list<float> -> float32 matrix)")
    print(f"read, pyarrow of split  {arrow_split_read:10,.0f} samples/s   (the same files Petastorm reads, decoded)")
    print(f"read, Petastorm (feed)  {petastorm_read:10,.0f} samples/s")
    print(f"ratio fit  Petastorm / in-memory   {petastorm_fit / memory_fit:5.2f}   (goal >= 0.95)")
    print(f"ratio fit  Petastorm streamed / in-memory {streamed_fit / memory_fit:5.2f}")
    print(f"ratio fit  Petastorm / upper bound {petastorm_fit / bound_fit:5.2f}")
    print(f"ratio read Petastorm / pyarrow     {petastorm_read / arrow_read:5.2f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()
