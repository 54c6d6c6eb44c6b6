"""The training input pipeline on the same bytes, measured side by side in one run, for a uint8 split
(pixels) and a float32 split (fractional features), each `RUNS` times (min / median / max):

  fit samples/s   nbscale (steady: read and checked once, then tf.data's cache)  ÷  in-memory
  fit samples/s   nbscale streamed (re-read through Petastorm every epoch)        ÷  in-memory
  fit samples/s   nbscale streamed  ÷  a hand-written pyarrow -> tf.data pipeline over the same split files
  feed samples/s  nbscale streamed, iterated with no model beside it  ÷  in-memory fit: above 1, the feed outruns
                  the trainer, so a trainer on its own device (a GPU) would not wait for it; on a CPU-only machine
                  both share the cores, which is what the streamed fit ratio measures
  read samples/s  nbscale's checked Petastorm pass  ÷  pyarrow reading and decoding the same split files

with the peak resident memory each fit added (sampled every 20 ms): a streamed feed holds a bounded number
of row groups, not the split; a cached one holds the split as stored (uint8 pixels: a quarter of float32).
And the split's writing (train/validation 0.8/0.2, packed, dealt into files), against the floor: plain
Spark reading the same version and writing it back as Parquet:

  time  plain Spark Parquet rewrite  ÷  nbscale's split write

    .venv/bin/python benchmarks/feed.py [ROWS] [RUNS] [ENCODINGS]

ENCODINGS: uint8,float32 (the default), or one of them (1 M float32 rows are 3 GB: an hour with both on 2 cores).
"""
import dataclasses
import os
import shutil
import statistics
import sys
import threading
import time

from measure import scratch_data_dir, spread  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class PeakMemory:
    """The most resident memory the process held above its level at the start of the block."""

    def __enter__(self):
        import psutil

        self.process, self.stop = psutil.Process(), threading.Event()
        self.start = self.peak = self.process.memory_info().rss

        def sample():
            while not self.stop.wait(0.02):
                self.peak = max(self.peak, self.process.memory_info().rss)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def pyarrow_groups(np, files: list[str], encoding: str, width: int, scale: float):
    """What a user would write by hand: each row group of the same split files read with pyarrow, the packed
    features viewed in place (fixed-width rows: the binary column's data buffer is the matrix)."""
    import pyarrow.parquet as pq

    from nbscale import feed

    for path in files:
        parquet = pq.ParquetFile(path)
        for index in range(parquet.num_row_groups):
            table = parquet.read_row_group(index, columns=[feed.FEATURES, feed.LABEL])
            packed = table.column(feed.FEATURES).combine_chunks()
            offsets = np.frombuffer(packed.buffers()[1], np.int32, len(packed) + 1, packed.offset * 4)
            data = np.frombuffer(packed.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
            x = data.view(encoding).reshape(len(packed), width).astype(np.float32)
            yield x / np.float32(scale), table.column(feed.LABEL).to_numpy()


def pyarrow_stream(tf, np, files: list[str], encoding: str, width: int, scale: float, batch: int):
    """pyarrow_groups fed to tf.data, re-read every epoch."""
    signature = (tf.TensorSpec((None, width), tf.float32), tf.TensorSpec((None,), tf.int64))
    return tf.data.Dataset.from_generator(lambda: pyarrow_groups(np, files, encoding, width, scale), output_signature=signature
                                          ).rebatch(batch).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    import numpy as np
    import pyarrow.parquet as pq
    import tensorflow as tf
    from pyspark.sql import functions as F

    import nbscale
    from nbscale import feed
    from nbscale.ingest import ingest
    from nbscale.train import keras

    spark = nbscale.spark()
    tfk = keras()

    def model():
        m = tfk.Sequential([tfk.Input(shape=(784,)), tfk.layers.Dense(128, activation="relu"), tfk.layers.Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    def fit_rate(dataset, samples: int, epochs: int = 3) -> float:
        times = []

        class Timer(tfk.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t0)

        model().fit(dataset, epochs=epochs, verbose=0, callbacks=[Timer()])
        return samples / min(times[1:])  # steady state: best epoch after the first

    def feed_rate(dataset, samples: int, passes: int = 3) -> float:
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            for _ in dataset:
                pass
            times.append(time.perf_counter() - t0)
        return samples / min(times[1:])

    def read_rate(read) -> float:
        t0 = time.perf_counter()
        return read() / (time.perf_counter() - t0)

    def measure(encoding: str, fraction: str):
        # Fashion-MNIST-shaped, learnable: label = id % 10; pixel i is bright when i % 10 == label.
        source = os.path.join(os.environ["NBSCALE_DATA_DIR"], f"synthetic-{encoding}.parquet")
        (spark.range(rows, numPartitions=4).withColumn("label", (F.col("id") % 10).cast("int"))
         .withColumn("image", F.expr(f"transform(sequence(0, 783), i -> CAST(CASE WHEN i % 10 = label THEN 200 ELSE pmod(hash(id, i), 50) END "
                                     f"+ {fraction} AS FLOAT))"))
         .select("image", "label").write.mode("overwrite").parquet(source))
        data = ingest(f"synthetic_{encoding}", source, label="label").dataset
        spec = feed.spec_for(data, "label", 128, 255.0, 0)
        writes = []
        for _ in range(runs):  # versions are immutable, so a split is written once: drop it to time the write again
            shutil.rmtree(os.path.join(os.environ["NBSCALE_DATA_DIR"], "cache", "splits", data.name), ignore_errors=True)
            t0 = time.perf_counter()
            feed.split(data, spec, 0.2)
            t1 = time.perf_counter()
            spark.read.parquet(str(data.path)).write.mode("overwrite").parquet(source + ".rewrite")
            writes.append((time.perf_counter() - t1) / (t1 - t0))
        split, _ = feed.split(data, spec, 0.0)
        assert split.encoding == encoding, split.encoding
        files = sorted(str(p) for p in pq.ParquetDataset(split.path.removeprefix("file://")).files)
        groups = list(pyarrow_groups(np, files, encoding, 784, 255.0))  # the in-memory side's arrays, decoded once
        images, labels = np.concatenate([x for x, _ in groups]), np.concatenate([y for _, y in groups]).astype(np.int64)
        del groups

        def in_memory():
            return tf.data.Dataset.from_tensor_slices((images, labels)).batch(128).cache().prefetch(tf.data.AUTOTUNE)

        def ours():
            return feed.tf_dataset(split, spec, shuffle=True, counter=tf.Variable(0, dtype=tf.int64))

        chunks = dataclasses.replace(spec, batch_size=spec.batch_size * feed.CHUNK_BATCHES)  # as tf_dataset reads
        figures = {key: [] for key in ("steady", "streamed", "feed_alone", "vs_pyarrow", "read", "memory_mb", "pyarrow_memory_mb", "steady_memory_mb")}
        figures["write"] = writes
        for _ in range(runs):
            memory = fit_rate(in_memory(), split.rows)
            with PeakMemory() as peak:
                figures["steady"].append(fit_rate(ours(), split.rows) / memory)
            figures["steady_memory_mb"].append(peak.added_mb)
            feed.CACHE_BYTES, cache_bytes = 0, feed.CACHE_BYTES
            with PeakMemory() as peak:
                streamed = fit_rate(ours(), split.rows)
            figures["feed_alone"].append(feed_rate(ours(), split.rows) / memory)
            feed.CACHE_BYTES = cache_bytes
            figures["memory_mb"].append(peak.added_mb)
            with PeakMemory() as peak:
                by_hand = fit_rate(pyarrow_stream(tf, np, files, encoding, 784, 255.0, 128), split.rows)
            figures["pyarrow_memory_mb"].append(peak.added_mb)
            figures["streamed"].append(streamed / memory)
            figures["vs_pyarrow"].append(streamed / by_hand)
            arrow = read_rate(lambda: sum(len(y) for _, y in pyarrow_groups(np, files, encoding, 784, 255.0)))
            ours_read = read_rate(lambda: sum(len(y) for _, y in feed.batches(split, chunks, shuffle=False)))
            figures["read"].append(ours_read / arrow)
        return split, figures

    encodings = sys.argv[3].split(",") if len(sys.argv) > 3 else ["uint8", "float32"]
    fractions = {"uint8": "0", "float32": "0.5"}  # a fractional part makes the packer store float32
    results = {encoding: measure(encoding, fractions[encoding]) for encoding in encodings}
    nbscale.session.stop_spark()

    print(f"rows: {rows}, 784 features, batch 128, cores: {os.cpu_count()}, reader pool: {feed.READER_POOL}, read-ahead: "
          f"{getattr(feed, 'READ_AHEAD', 0)} row groups; {runs} runs (min / median / max)")
    for encoding, (split, f) in results.items():
        size = sum(os.path.getsize(p) for p in pq.ParquetDataset(split.path.removeprefix("file://")).files) / 2**20
        print(f"{encoding} split ({size:,.0f} MiB on disk, {split.rows * 784 * 4 / 2**20:,.0f} MiB as float32):")
        print(f"  ratio fit  nbscale steady / in-memory             {spread(f['steady'])}   (goal >= 0.95)")
        print(f"  ratio fit  nbscale streamed / in-memory           {spread(f['streamed'])}   (goal >= 0.9)")
        print(f"  ratio fit  nbscale streamed / pyarrow -> tf.data  {spread(f['vs_pyarrow'])}")
        print(f"  ratio feed nbscale streamed alone / in-memory fit {spread(f['feed_alone'])}   (above 1: a trainer on its own device is fed)")
        print(f"  ratio read nbscale / pyarrow, same files          {spread(f['read'])}   (goal >= 0.8)")
        print(f"  ratio time plain Spark rewrite / nbscale split     {spread(f['write'])}   (one pass: near 1)")
        print(f"  peak memory added by a cached (steady) fit: nbscale {statistics.median(f['steady_memory_mb']):,.0f} MiB (median)")
        print(f"  peak memory added by a streamed fit: nbscale {statistics.median(f['memory_mb']):,.0f} MiB, "
              f"pyarrow -> tf.data {statistics.median(f['pyarrow_memory_mb']):,.0f} MiB (medians)")


if __name__ == "__main__":
    with scratch_data_dir("feed"):
        main()
