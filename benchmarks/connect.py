"""The same work from inside the cluster's network (classic client mode) and from a laptop over Spark Connect,
measured in one run on the multi-host test bed (tests/cluster/hosts.py: two network-namespace hosts, a
standalone master, a Spark Connect server on host 1; needs root).

  (each side ingests a small warm-up file first, so the measured ingests find their executors' Python started)
  connect: the connect cell, checks included (classic: executors registered + environment job; Connect:
           the same check as DataFrame tasks)
  ingest:  one CSV of ROWS rows — classic: read in place from the shared mount; Connect: a laptop file
           (uploaded through Connect, first time) and the same file as a cluster path
  store:   one `store.versions()` call — classic: a directory listing here; Connect: a one-task Spark job
  train:   `%%train --workers 2` (all-reduce, 4 epochs): call -> first step on a worker, the whole call, and the
           live card's delay after the chief writes an epoch (classic: a file read here; Connect: a Spark task a second)
  read:    `dataset(...).df.count()` of the published version

    .venv/bin/python benchmarks/connect.py [ROWS]
"""
import os
import statistics
import sys
import tempfile
import time

from measure import scratch_data_dir  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def csv_file(path: str, rows: int) -> str:
    with open(path, "w") as f:
        f.write("x1,x2,x3,label\n")
        for i in range(rows):
            f.write(f"{i % 97},{(i * 7) % 101},{(i * 13) % 89 / 7:.3f},{i % 3}\n")
    return path


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_of(fn, times: int = 15) -> float:
    return statistics.median(timed(fn) for _ in range(times))


def measure(master: str, data_dir: str, sources: dict[str, str]) -> dict:
    import nbscale
    from nbscale.ingest import dataset, ingest, store

    out = {"connect": timed(lambda: nbscale.connect(master=master, data_dir=data_dir))}
    ingest("warmup", csv_file(os.path.join(tempfile.mkdtemp(), "warmup.csv"), 1000), label="label")  # executors' Python workers start
    for label, source in sources.items():
        out[f"ingest ({label})"] = timed(lambda label=label, source=source: ingest(label.split()[0], source, label="label"))
    name = next(iter(sources)).split()[0]
    out["store.versions()"] = median_of(lambda: store.versions(name))
    out["dataset().df.count()"] = median_of(lambda: dataset(name).df.count(), 5)
    out.update(distributed(name))
    return out


MODEL = """
model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


def distributed(name: str) -> dict:
    """A 2-worker all-reduce run: call -> first training step (the launch overhead), its whole time, and the live
    card's delay (the chief writing an epoch's metrics -> the card showing that epoch), median over the epochs."""
    from nbscale.datahost import on_data_host
    from nbscale.distributed import train_distributed
    from nbscale.distributed.jobdir import snapshot

    shown: dict[int, float] = {}
    started = time.time()
    result = train_distributed(MODEL, data=name, workers=2, epochs=4, batch_size=256, validation=0.1, experiment="bench-connect",
                               on_epoch=lambda p: shown.setdefault(p.epoch, time.time()))
    ended = time.time()
    seen = on_data_host(snapshot, result.job_dir)
    first_step = min(s["first_step_at"] for s in seen.states[0].values() if "first_step_at" in s)
    written = {record["epoch"] + 1: record["time"] for record in seen.metrics}
    delays = [shown[epoch] - written[epoch] for epoch in written if epoch in shown]
    return {"train --workers 2: call -> first step": first_step - started, "train --workers 2: whole call": ended - started,
            "live card delay (median)": statistics.median(delays)}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from cluster.hosts import Hosts

    import nbscale
    from nbscale.config import settings

    laptop = csv_file(os.path.join(tempfile.mkdtemp(prefix="nbscale-bench-laptop-"), "rows.csv"), rows)
    size_mb = os.path.getsize(laptop) / 1e6
    cfg = settings()
    saved = cfg.master, cfg.data_dir, cfg.tracking_uri
    with Hosts(2, cores=2, memory="3g") as hosts:
        shared = csv_file(str(hosts.shared / "rows.csv"), rows)
        try:
            classic = measure(hosts.master_url, str(hosts.shared / "classic"), {"rows shared": shared})
            nbscale.session.stop_spark()  # one application at a time: each would take every free core
            url = hosts.start_connect()
            # (A classic PySpark cannot start again in this process once Connect was used: classic goes first.)
            connect = measure(url, str(hosts.shared / "connect"), {"rows laptop, uploaded": laptop, "rows2 cluster path": shared})
        finally:
            nbscale.session.stop_spark()
            cfg.master, cfg.data_dir, cfg.tracking_uri = saved
    print(f"{rows} rows, {size_mb:.1f} MB of CSV; two network-namespace hosts x 2 cores on one machine of {os.cpu_count()} CPU cores")
    print(f"{'':32} {'classic (client mode)':>22} {'Spark Connect':>14} {'Connect / classic':>18}")
    pairs = [("connect (checked)", "connect", "connect"),
             ("ingest, file on the shared mount", "ingest (rows shared)", "ingest (rows2 cluster path)"),
             ("ingest, laptop file (uploaded)", "ingest (rows shared)", "ingest (rows laptop, uploaded)"),
             ("store.versions()", "store.versions()", "store.versions()"),
             ("dataset().df.count()", "dataset().df.count()", "dataset().df.count()"),
             *[(key, key, key) for key in ("train --workers 2: call -> first step", "train --workers 2: whole call", "live card delay (median)")]]
    for title, left, right in pairs:
        a, b = classic[left], connect[right]
        print(f"{title:32} {a * 1000:>19.1f} ms {b * 1000:>11.1f} ms {b / a:>18.2f}")


if __name__ == "__main__":
    with scratch_data_dir("connect"):
        main()
