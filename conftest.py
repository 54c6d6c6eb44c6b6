"""Test-run environment shared by tests/ and the nbval notebooks (their kernels inherit it)."""
import os
import tempfile

import pytest

# Every test run gets its own data dir: datasets, MLflow's SQLite store, logs; never ~/nbscale-data.
os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix="nbscale-test-")
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Every JVM the tests start (Spark drivers, executors, the clusters' daemons, the Connect server; they inherit this)
# compiles with C1 only: a test's JVM lives seconds to minutes, and C2's compiles were about a quarter of a JVM's CPU
# on an ingest workload (57.8 -> 44.6 s), on a machine whose two cores the suite keeps busy. What runs is the same.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
for name in ("NBSCALE_MASTER", "NBSCALE_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBSCALE_KERNEL", "NBSCALE_CLUSTER_MASTER"):
    os.environ.pop(name, None)  # a developer's own settings must not leak into the tests
# What the notebooks' kernels start from: the tests before them in the same worker change this process's environment
# (mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI, e.g. a tracking server a test has stopped since).
_CLEAN_ENVIRONMENT = dict(os.environ)

# The multi-host tutorials need a real cluster: tests/test_multihost.py (10) and tests/test_connect.py (11, over
# Spark Connect) run them under nbval against the network-namespace cluster they build.
collect_ignore = ["notebooks/10-multi-host.ipynb", "notebooks/11-laptop-connect.ipynb"]


# `make test` runs the tests and the notebooks in one run on two xdist workers (--dist loadfile: a module's tests,
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


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike, so all collect the same order
        items.sort(key=_order)


_notebooks_started: set = set()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Each tutorial on its own fresh data dir, as a reader's first run: no notebook sees another's datasets or
    runs, so they run on two workers. nbval starts a notebook's kernel with its first cell; the kernel inherits this."""
    if item.path.suffix == ".ipynb" and item.path not in _notebooks_started:
        _notebooks_started.add(item.path)
        os.environ.clear()
        os.environ.update(_CLEAN_ENVIRONMENT)
        os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix=f"nbscale-{item.path.stem}-")
