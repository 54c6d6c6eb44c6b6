"""MLflow: the embedded SQLite store under the data dir, and a real tracking server over HTTP."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import free_port

import nbscale
from nbscale.session import experiment_id, mlflow

pytestmark = pytest.mark.slow


def test_embedded_store_keeps_runs_and_artifacts_under_the_data_dir(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the notebook's working directory
    data = tmp_path / "data"
    nbscale.connect(data_dir=str(data))
    mlf = mlflow()
    with mlf.start_run(experiment_id=experiment_id("quick")) as run:
        mlf.log_metric("accuracy", 0.9)
        mlf.log_text("hello", "note.txt")
    assert (data / "mlflow.db").is_file()
    artifact = Path(urlparse(run.info.artifact_uri).path) / "note.txt"
    assert artifact.read_text() == "hello" and data in artifact.parents
    assert mlf.get_run(run.info.run_id).data.metrics["accuracy"] == 0.9
    assert experiment_id("quick") == run.info.experiment_id  # found, not created twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("MLflow server did not become healthy in 120 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_connect_to_a_tracking_server_logs_runs_there(settings, tracking_server):
    card = nbscale.connect(tracking_uri=tracking_server)
    assert card.tracking_uri == tracking_server
    mlf = mlflow()
    with mlf.start_run(experiment_id=experiment_id("remote")) as run:
        mlf.log_param("workers", 2)
    # Ask the server itself, over its REST API.
    query = f"{tracking_server}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"
    with urllib.request.urlopen(query, timeout=10) as response:
        params = json.load(response)["run"]["data"]["params"]
    assert {"key": "workers", "value": "2"} in params
