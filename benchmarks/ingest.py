"""CSV -> Parquet on the same 1 M-row file, measured in one run:

  Spark CSV->Parquet rows/s   ÷  pyarrow CSV->Parquet rows/s     (goal >= 0.5 at 1 M rows)
  nbscale %%ingest rows/s     ÷  pyarrow CSV->Parquet rows/s     (the price of validation:
                                 quarantine column, independent record count, profile, manifest)
  nbscale %%ingest rows/s     ÷  Spark CSV->Parquet rows/s       (goal >= 0.5 at 1 M rows)

Three rounds (after a warm-up round), each timing the three in turn; min / median / max of each.

    .venv/bin/python benchmarks/ingest.py [ROWS] [RUNS]
"""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import spread  # benchmarks/ is on sys.path when a script runs

SCHEMA = "id BIGINT, age INT, income DOUBLE, city STRING, churned INT"


def make_csv(path: Path, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    cities = np.array(["Berlin", "Lyon", "Osaka", "Lima", "Pune"])
    with open(path, "w") as f:
        f.write("id,age,income,city,churned\n")
        for start in range(0, rows, 200_000):
            n = min(200_000, rows - start)
            ids = np.arange(start, start + n)
            age, income = rng.integers(18, 90, n), rng.normal(50_000, 15_000, n).round(2)
            city, churned = cities[rng.integers(0, 5, n)], rng.integers(0, 2, n)
            f.write("".join(f"{a},{b},{c},{d},{e}\n" for a, b, c, d, e in zip(ids, age, income, city, churned)))


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(tempfile.mkdtemp(prefix="nbscale-bench-ingest-"))
    os.environ.setdefault("NBSCALE_DATA_DIR", str(work / "data"))
    csv = work / "churn.csv"
    make_csv(csv, rows)

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    import nbscale
    from nbscale.ingest import ingest

    spark = nbscale.spark()
    spark.range(10).write.mode("overwrite").parquet(str(work / "warmup"))  # JVM and Parquet writer warm

    def with_pyarrow():
        pq.write_table(pacsv.read_csv(csv), work / "arrow.parquet")

    def with_spark():
        spark.read.csv(str(csv), header=True, schema=SCHEMA).write.mode("overwrite").parquet(str(work / "spark.parquet"))

    def with_nbscale():
        ingest("churn", str(csv), schema=SCHEMA, label="churned", allow_schema_change=True)

    # Side by side: each round times the three once, in turn (a first untimed round warms the JIT of Spark's CSV parser).
    rounds = []
    for number in range(runs + 1):
        times = []
        for fn in (with_pyarrow, with_spark, with_nbscale):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        if number:
            rounds.append(times)
    assert pq.read_metadata(work / "arrow.parquet").num_rows == rows
    assert spark.read.parquet(str(work / "spark.parquet")).count() == rows
    arrow_s, spark_s, nbscale_s = ([r[i] for r in rounds] for i in range(3))
    print(f"rows: {rows}, cores: {os.cpu_count()}, {runs} runs: min / median / max")
    print(f"pyarrow CSV->Parquet   {spread(arrow_s)} s")
    print(f"Spark   CSV->Parquet   {spread(spark_s)} s")
    print(f"nbscale %%ingest        {spread(nbscale_s)} s (validated, versioned)")
    print(f"ratio Spark / pyarrow     {spread([a / s for a, s, _ in rounds])}")
    print(f"ratio nbscale / pyarrow   {spread([a / n for a, _, n in rounds])}")
    print(f"ratio nbscale / Spark     {spread([s / n for _, s, n in rounds])}   (goal >= 0.5 at 1 M rows)")
    nbscale.session.stop_spark()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
