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


def start_tracking_server(root: Path):
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
                return url, proc
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    pytest.fail("MLflow server did not become healthy in 120 s")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    url, proc = start_tracking_server(tmp_path_factory.mktemp("mlflow-server"))
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


DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


def test_train_register_and_serve_through_a_tracking_server(settings, tracking_server, tmp_path):
    import numpy as np

    from nbscale import serving
    from nbscale import state  # noqa: F401 - as %load_ext does in a kernel: the panel's publisher follows this process's work
    from nbscale.ingest import dataset, ingest
    from nbscale.registry import register
    from nbscale.train import train

    nbscale.connect(tracking_uri=tracking_server, data_dir=str(tmp_path / "data"))
    ingest("digits", "nbscale:digits", label="label")
    result = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="remote-train")
    register("remote-digits", run_id=result.run_id, alias="champion")
    raw = dataset("digits").to_pandas(4).drop(columns=["label"])
    nbscale.session.stop_spark()
    serving.serve("remote-digits@champion")  # the replica loads the model from the server's artifact store
    try:
        expected = result.model.predict(raw.to_numpy(np.float32) / 16, verbose=0)
        assert np.allclose(np.asarray(serving.predict("remote-digits", raw)), expected, atol=1e-5)
        # The panel's views over the same remote store: runs link into its UI; the service is listed and stopped.
        from nbscale.server import views

        (shown,) = [r for r in views.runs(50)["runs"] if r["id"] == result.run_id]
        assert shown["url"] == f"{tracking_server}/#/experiments/{experiment_id('remote-train')}/runs/{result.run_id}"
        assert ("remote-digits", 1, ["champion"]) in [(m["name"], m["version"], m["aliases"]) for m in views.models()]
        deadline = time.monotonic() + 15
        while not [s for s in views.servers() if s["name"] == "remote-digits" and s["healthy"]]:
            assert time.monotonic() < deadline, "the kernel never published its service"
            time.sleep(0.2)
        views.stop_server(str(os.getpid()), "remote-digits")
        while serving.services():
            assert time.monotonic() < deadline + 15, "the stop request was not carried out"
            time.sleep(0.2)
    finally:
        if serving.services():
            serving.stop("remote-digits")
    with urllib.request.urlopen(f"{tracking_server}/api/2.0/mlflow/registered-models/get?name=remote-digits", timeout=10) as response:
        assert json.load(response)["registered_model"]["aliases"][0]["alias"] == "champion"


@pytest.mark.timeout(300)
def test_a_server_lost_before_the_model_is_logged_keeps_the_model(settings, tmp_path):
    import numpy as np

    from nbscale.errors import NbscaleError
    from nbscale.ingest import dataset, ingest
    from nbscale.train import keras, train

    url, server = start_tracking_server(tmp_path)
    nbscale.connect(tracking_uri=url, data_dir=str(tmp_path / "data"))
    ingest("digits", "nbscale:digits", label="label")

    def lose_the_server(progress):
        if progress.epoch == 2:  # the last epoch is logged; the model is not yet
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    try:
        with pytest.raises(NbscaleError, match=rf"^MLflow at {url} stopped answering .*: the trained model is kept at ") as raised:
            train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="lost", on_epoch=lose_the_server)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        nbscale.session.stop_spark()
    message = str(raised.value)
    assert "\n" not in message
    kept = Path(message.split("kept at ", 1)[1].split(" (", 1)[0])
    assert kept.is_file() and (tmp_path / "data") in kept.parents
    raw = dataset("digits").to_pandas(4).drop(columns=["label"])
    assert keras().models.load_model(str(kept)).predict(raw.to_numpy(np.float32) / 16, verbose=0).shape == (4, 10)
