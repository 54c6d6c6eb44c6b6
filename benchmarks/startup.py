"""What a user waits for before the first result: %load_ext, the status card, the first Spark job.

Prints times measured in this run and the ratios that matter:
  load_ext / 0.3 s budget   (must stay < 1: the extension loads in any kernel without a pause)
  load_ext / Spark start    (what laziness saves a user who only looks at the status card)

    .venv/bin/python benchmarks/startup.py
"""
import json
import statistics
import subprocess
import sys
import time

from measure import scratch_data_dir  # benchmarks/ is on sys.path when a script runs

LOAD_BUDGET_S = 0.3
PROBE = """
import json, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter(); shell.run_line_magic("load_ext", "nbscale"); t1 = time.perf_counter()
shell.run_line_magic("nbscale", ""); t2 = time.perf_counter()
print(json.dumps({"load_ext": t1 - t0, "status": t2 - t1}))
"""


def fresh_process_times(repeats: int) -> dict[str, float]:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    shell_times = fresh_process_times(repeats=5)

    import nbscale

    t0 = time.perf_counter()
    nbscale.spark()
    t1 = time.perf_counter()
    rows = nbscale.datasets.digits().groupBy("label").count().collect()
    t2 = time.perf_counter()
    nbscale.session.stop_spark()
    assert sum(r["count"] for r in rows) == 1797

    print(f"%load_ext nbscale (median of 5 new shells)  {shell_times['load_ext'] * 1000:8.1f} ms")
    print(f"%nbscale status card                          {shell_times['status'] * 1000:8.1f} ms")
    print(f"first nbscale.spark() (JVM start)             {(t1 - t0) * 1000:8.1f} ms")
    print(f"first Spark job (digits, groupBy)             {(t2 - t1) * 1000:8.1f} ms")
    print(f"ratio load_ext / {LOAD_BUDGET_S} s budget                 {shell_times['load_ext'] / LOAD_BUDGET_S:8.3f}")
    print(f"ratio load_ext / Spark start                  {shell_times['load_ext'] / (t1 - t0):8.4f}")


if __name__ == "__main__":
    with scratch_data_dir("startup"):
        main()
