"""CSV -> Parquet on the same 1 M-row file, measured in one run:

  Spark CSV->Parquet rows/s   ÷  pyarrow CSV->Parquet rows/s     (goal >= 0.5 at 1 M rows)
  nbscale %%ingest rows/s     ÷  pyarrow CSV->Parquet rows/s     (the price of validation:
                                 quarantine column, independent record count, profile, manifest)
  nbscale %%ingest rows/s     ÷  Spark CSV->Parquet rows/s       (goal >= 0.5 at 1 M rows)

Each side's time is the best of two runs in this process.

    .venv/bin/python benchmarks/ingest.py [ROWS]
"""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

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


def timed(fn, repeats: int = 2) -> float:
    """Best of `repeats` runs: the first Spark run also pays for JIT warm-up of the CSV parser."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
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

    arrow_s, spark_s, nbscale_s = timed(with_pyarrow), timed(with_spark), timed(with_nbscale)
    assert pq.read_metadata(work / "arrow.parquet").num_rows == rows
    assert spark.read.parquet(str(work / "spark.parquet")).count() == rows
    print(f"rows: {rows}, cores: {os.cpu_count()}")
    print(f"pyarrow CSV->Parquet   {arrow_s:7.2f} s  {rows / arrow_s:12,.0f} rows/s")
    print(f"Spark   CSV->Parquet   {spark_s:7.2f} s  {rows / spark_s:12,.0f} rows/s")
    print(f"nbscale %%ingest        {nbscale_s:7.2f} s  {rows / nbscale_s:12,.0f} rows/s (validated, versioned)")
    print(f"ratio Spark / pyarrow     {arrow_s / spark_s:6.2f}")
    print(f"ratio nbscale / pyarrow   {arrow_s / nbscale_s:6.2f}")
    print(f"ratio nbscale / Spark     {spark_s / nbscale_s:6.2f}   (goal >= 0.5 at 1 M rows)")
    nbscale.session.stop_spark()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
