"""`%nbscale ui`: MLflow's own UI on the local store, on 127.0.0.1 only, gone with the kernel that started it."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

STARTS_A_UI = """
import sys, time
import nbscale
from nbscale.session import experiment_id, mlflow
from nbscale.mlflowui import mlflow_ui

mlf = mlflow()
with mlf.start_run(experiment_id=experiment_id("ui-check"), run_name="seen-in-the-ui"):
    mlf.log_metric("accuracy", 0.9)
ui = mlflow_ui()
assert mlflow_ui() is ui  # a second call finds the running one
print(ui.url, ui.process.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_the_ui_shows_the_local_store_on_loopback_and_dies_with_its_kernel(tmp_path):
    env = dict(os.environ, NBSCALE_DATA_DIR=str(tmp_path))
    for inherited in ("MLFLOW_TRACKING_URI", "NBSCALE_TRACKING_URI"):  # an earlier test's store (mlflow.set_tracking_uri sets it)
        env.pop(inherited, None)
    kernel = subprocess.Popen([sys.executable, "-c", STARTS_A_UI], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url, pid = kernel.stdout.readline().split()
        assert url.startswith("http://127.0.0.1:"), url  # no authentication, run deletion: never on another address
        search = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": ["1"]}).encode(),
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search, timeout=30) as answer:  # noqa: S310 - the test's own loopback UI
            assert [run["info"]["run_name"] for run in json.load(answer)["runs"]] == ["seen-in-the-ui"]
        with urllib.request.urlopen(url, timeout=30) as page:  # noqa: S310
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        kernel.kill()  # as a crashed kernel dies: no clean-up code runs
        kernel.wait(10)
    deadline = time.monotonic() + 10
    while alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(int(pid)), "the MLflow UI outlived the kernel that started it"


def test_a_tracking_server_is_shown_not_started(settings, ip):
    settings.tracking_uri = "http://127.0.0.1:5999"  # nothing is contacted: its UI is the server's own page
    ui = ip.run_line_magic("nbscale", "ui")
    assert ui.url == "http://127.0.0.1:5999" and ui.process is None and "tracking server's own" in repr(ui)
