"""Test-run environment shared by tests/ and the nbval notebooks (their kernels inherit it)."""
import os
import tempfile

# Every test run gets its own data dir: datasets, MLflow's SQLite store, logs; never ~/nbscale-data.
os.environ["NBSCALE_DATA_DIR"] = tempfile.mkdtemp(prefix="nbscale-test-")
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"
for name in ("NBSCALE_MASTER", "NBSCALE_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBSCALE_KERNEL", "NBSCALE_CLUSTER_MASTER"):
    os.environ.pop(name, None)  # a developer's own settings must not leak into the tests

# The multi-host tutorial needs a real cluster: tests/test_multihost.py runs it under nbval against the
# network-namespace cluster it builds (with NBSCALE_CLUSTER_MASTER and NBSCALE_SHARED_DIR set).
collect_ignore = ["notebooks/10-multi-host.ipynb"]


# `make test` runs the tests on two xdist workers (--dist loadgroup; groups set here, as xdist's own xdist_group
# marks would), then the notebooks. A module's tests share its fixtures, so each module is one group; the two modules
# that run Spark clusters with distributed training are one group, so they never compete for the cores their timing
# checks (cancel within 10 s) assume. The longest groups go first so neither worker idles at the end.
SERIAL_GROUPS = {"test_distributed.py": "clusters", "test_multihost.py": "clusters"}
LONG_FIRST = ["clusters", "test_binder.py", "test_serving.py", "test_workflow.py"]


def _group(item) -> str:
    return SERIAL_GROUPS.get(item.path.name, item.path.name)


def pytest_collection_modifyitems(config, items):
    if not getattr(config.option, "loadgroup", False):  # only an xdist worker of --dist loadgroup
        return
    items.sort(key=lambda item: LONG_FIRST.index(_group(item)) if _group(item) in LONG_FIRST else len(LONG_FIRST))
    for item in items:  # the scheduler groups by the id's "@GROUP"
        if "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._nodeid = f"{item.nodeid}@{_group(item)}"
