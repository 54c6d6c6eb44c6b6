"""Test-run environment shared by tests/ and the nbval notebooks (their kernels inherit it)."""
import os
import tempfile
from pathlib import Path

import pytest

# Every test run gets its own data dir: datasets, MLflow's SQLite store, logs; never ~/nbscale-data.
os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix="nbscale-test-")
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Every JVM the tests start (Spark drivers, executors, the clusters' daemons, the Connect server; they inherit this)
# compiles with C1 only: a test's JVM lives seconds to minutes, and C2's compiles were about a quarter of a JVM's CPU
# on an ingest workload (57.8 -> 44.6 s), on a machine whose two cores the suite keeps busy. What runs is the same.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
# The whole suite (xdist) starts dozens of JVMs: pytest_configure below adds a class-data archive of Spark's classes.
for name in ("NBSCALE_MASTER", "NBSCALE_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBSCALE_KERNEL", "NBSCALE_CLUSTER_MASTER"):
    os.environ.pop(name, None)  # a developer's own settings must not leak into the tests
# What the notebooks' kernels start from: the tests before them in the same worker change this process's environment
# (mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI, e.g. a tracking server a test has stopped since).
_CLEAN_ENVIRONMENT = dict(os.environ)

ROOT = Path(__file__).resolve().parent

# The multi-host tutorials need a real cluster: tests/test_multihost.py (10) and tests/test_connect.py (11, over
# Spark Connect) run them under nbval against the network-namespace cluster they build.
collect_ignore = ["notebooks/10-multi-host.ipynb", "notebooks/11-laptop-connect.ipynb"]


# `make test` runs the tests and the notebooks in one run on three xdist workers (--dist loadfile: a module's tests,
# which share its fixtures, or a notebook's cells stay on one worker). The longest modules go first, the notebooks
# last, so neither worker idles at the end.
# xdist hands the modules out in this order only with --no-loadscope-reorder (else it sorts them by their number of tests,
# which put a 2-minute single-test module last). The order is by their measured run time.
LONG_FIRST = ["test_distributed.py", "test_multihost.py", "test_connect.py", "test_serving.py", "test_workflow.py", "test_production.py",
              "test_train.py", "test_ingest.py", "test_binder.py", "test_panel.py", "test_make.py", "test_registry.py", "test_server.py"]


# The notebooks by their run time here, longest first (the rest after them).
LONG_NOTEBOOKS = ["03-distributed.ipynb", "09-end-to-end.ipynb", "07-tuning.ipynb", "08-operations.ipynb", "12-production.ipynb",
                  "04-serve.ipynb", "06-workflows.ipynb", "05-serve-patterns.ipynb", "02-train.ipynb"]


def _order(item) -> int:
    """Long modules first, then the others, then the notebooks (the long ones first): a worker handed a notebook takes
    no test module after it (a notebook points NBSCALE_DATA_DIR at its own fresh folder for the rest of that worker's life)."""
    if item.path.suffix == ".ipynb":
        name = item.path.name
        return len(LONG_FIRST) + 1 + (LONG_NOTEBOOKS.index(name) if name in LONG_NOTEBOOKS else len(LONG_NOTEBOOKS))
    return LONG_FIRST.index(item.path.name) if item.path.name in LONG_FIRST else len(LONG_FIRST)


def _spark_class_archive() -> Path:
    """A dynamic class-data-sharing archive of the classes a Spark driver loads, for this Java, PySpark and venv.

    A JVM that maps it skips loading, verifying and linking those classes: a local session's start and first query took
    5.3-5.9 s of CPU instead of 10.6-13.3 s here. The archive is built beside the first tests (a JVM started before it
    is complete finds no file and starts as before); JVMs on another class path (another venv) cannot use it and start
    as before too. -Xlog:cds=off keeps both from saying so on every start."""
    import hashlib
    import subprocess
    import sys

    import pyspark

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    key = hashlib.sha1(f"{java}|{pyspark.__version__}|{pyspark.__file__}".encode()).hexdigest()[:12]
    archive = ROOT / "build" / "jvm-cds" / f"spark-{key}.jsa"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    # The classes of what the suite does most: a local session, Parquet and CSV I/O, a shuffle, an Arrow exchange. The
    # JVM writes the archive as it exits: it is awaited, then the archive is renamed whole (a torn one is never mapped).
    workload = f"""
import os, sys, tempfile
os.environ['PYSPARK_PYTHON'] = sys.executable
from pyspark.sql import SparkSession
spark = SparkSession.builder.master('local[2]').config('spark.ui.showConsoleProgress', 'false').getOrCreate()
folder = tempfile.mkdtemp()
df = spark.range(1000).selectExpr('id', 'id % 7 AS key', 'CAST(id AS STRING) AS text')
df.write.parquet(folder + '/p'); df.write.option('header', True).csv(folder + '/c')
spark.read.parquet(folder + '/p').groupBy('key').count().collect()
spark.read.csv(folder + '/c', header=True, schema='id LONG, key LONG, text STRING').where('key > 2').count()
spark.read.parquet(folder + '/p').mapInArrow(lambda batches: batches, 'id LONG, key LONG, text STRING').count()
jvm = spark.sparkContext._gateway.proc
spark.stop()
jvm.stdin.close()
if jvm.wait(timeout=120) == 0 and os.path.getsize({str(partial)!r}) > 0:
    os.rename({str(partial)!r}, {str(archive)!r})
"""
    env = dict(os.environ, JAVA_TOOL_OPTIONS=f"{os.environ['JAVA_TOOL_OPTIONS']} -XX:ArchiveClassesAtExit={partial}")
    global _ARCHIVE_BUILDER
    _ARCHIVE_BUILDER = subprocess.Popen([sys.executable, "-c", workload], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
    return archive


_ARCHIVE_BUILDER = None


def pytest_configure(config):
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):  # the xdist controller
        archive = _spark_class_archive()  # the workers, their kernels and every JVM they start inherit this
        os.environ["JAVA_TOOL_OPTIONS"] += f" -XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
        global _CLEAN_ENVIRONMENT
        _CLEAN_ENVIRONMENT = dict(os.environ)


def pytest_unconfigure(config):
    if _ARCHIVE_BUILDER is not None and _ARCHIVE_BUILDER.poll() is None:
        _ARCHIVE_BUILDER.kill()


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike, so all collect the same order
        items.sort(key=_order)


_notebooks_started: set = set()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Each tutorial on its own fresh data dir, as a reader's first run: no notebook sees another's datasets or
    runs, so they run on several workers. nbval starts a notebook's kernel with its first cell; the kernel inherits this."""
    if item.path.suffix == ".ipynb" and item.path not in _notebooks_started:
        _notebooks_started.add(item.path)
        os.environ.clear()
        os.environ.update(_CLEAN_ENVIRONMENT)
        os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix=f"nbscale-{item.path.stem}-")
