"""The server extension's REST routes on a real Jupyter Server that refuses unauthenticated access.
This test process plays the kernel: it ingests, logs runs and starts a background job, publishing
its state under the data dir the server reads."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import ROOT, free_port, restored_settings, wait_until_answers

pytestmark = pytest.mark.slow
TOKEN = "nbscale-server-test"
ROUTES = [("GET", "status"), ("GET", "datasets"), ("GET", "datasets/x"), ("GET", "runs"), ("GET", "models"), ("GET", "jobs"),
          ("POST", "jobs/1/1/cancel"), ("GET", "servers"), ("POST", "servers/1/x/stop"), ("GET", "logs?path=x")]


@pytest.fixture(scope="module")
def server_home(tmp_path_factory):
    """The server's home folder: where kernels on a Spark Connect master publish (~/.nbscale/connect)."""
    return tmp_path_factory.mktemp("server-home")


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_home):
    from nbscale import state  # noqa: F401 - as %load_ext does in a kernel: this process's jobs are published for the panel

    with restored_settings() as cfg:
        cfg.data_dir = str(tmp_path_factory.mktemp("server-data") / "data")  # its parent holds what lies outside it
        port = free_port()
        # The same stores as this process (an earlier test may have left MLFLOW_TRACKING_URI in the environment).
        env = dict(os.environ, NBSCALE_DATA_DIR=cfg.data_dir, NBSCALE_TRACKING_URI=cfg.tracking_uri,
                   HOME=str(server_home))
        log = open(tmp_path_factory.mktemp("server-log") / "server.log", "w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ip=127.0.0.1", "--no-browser", "--allow-root",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.allow_unauthenticated_access=False",
             '--ServerApp.jpserver_extensions={"nbscale.server": True}', f"--ServerApp.root_dir={ROOT}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_answers(f"{base}/nbscale/api/status?token={TOKEN}", process, 60, why=lambda: log.seek(0) or log.read())
            yield base
        finally:
            process.terminate()
            process.wait(30)


def call(method: str, url: str, token: str | None = None):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode(errors="replace")
    except OSError as error:
        return None, str(error)


def api(server, method, route, token=TOKEN):
    return call(method, f"{server}/nbscale/api/{route}", token)


def test_every_route_refuses_a_request_without_the_token(server):
    from nbscale.server.handlers import ROUTES as SERVED

    assert len(ROUTES) == len(SERVED)  # a new route is added here too, so it cannot escape this check
    for method, route in ROUTES:
        assert api(server, method, route, token=None)[0] == 403, f"{method} {route} answered without authentication"
        assert api(server, method, route, token="wrong")[0] == 403, f"{method} {route} took a wrong token"


def test_datasets_runs_and_models_as_the_kernel_left_them(server, tmp_path):
    import mlflow.pyfunc

    from nbscale.ingest import ingest
    from nbscale.registry import _client
    from nbscale.session import experiment_id, mlflow as current_mlflow

    source = tmp_path / "tiny.csv"
    source.write_text("a,label\n1,0\n2,1\n3,0\n")
    ingest("tiny", str(source), label="label")
    status, listed = api(server, "GET", "datasets")
    assert status == 200 and [(d["dataset"], d["rows"]) for d in listed["result"]] == [("tiny@v1", 3)]
    status, detail = api(server, "GET", "datasets/tiny")
    version = detail["result"]["versions"][0]
    assert version["schema"] == [["a", "int"], ["label", "int"]] and version["magic"].startswith("%%train --data tiny@v1")

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlf = current_mlflow()
    with mlf.start_run(experiment_id=experiment_id("panel"), run_name="tiny-run") as run:
        mlf.log_params({"data": "tiny@v1"})
        mlf.log_metric("val_accuracy", 0.75)
        info = mlf.pyfunc.log_model(name="model", python_model=Constant())
    registered = mlf.register_model(info.model_uri, "tiny-model")
    _client().set_registered_model_alias("tiny-model", "champion", registered.version)

    status, runs = api(server, "GET", "runs?limit=5")
    assert status == 200 and "panel" in [e["name"] for e in runs["result"]["experiments"]]
    (shown,) = [r for r in runs["result"]["runs"] if r["id"] == run.info.run_id]
    assert shown["data"] == "tiny@v1" and shown["metrics"] == {"val_accuracy": 0.75} and shown["status"] == "FINISHED"
    assert shown["url"] is None  # a SQLite store has no UI of its own; status says how to start one
    assert api(server, "GET", "status")[1]["result"]["mlflow_ui_command"].startswith("mlflow ui --backend-store-uri sqlite:///")
    status, models = api(server, "GET", "models")
    assert [(m["name"], m["version"], m["aliases"], m["run"]) for m in models["result"]] == [("tiny-model", 1, ["champion"], run.info.run_id)]


def test_a_job_in_the_kernel_is_listed_and_cancelled_from_the_panel(server):
    from nbscale.jobs import background

    job = background.start("test", "a long wait", lambda job: job.stop.wait(120))
    kernel = os.getpid()
    deadline = time.monotonic() + 20
    while not [j for j in api(server, "GET", "jobs")[1]["result"] if j["kernel"] == kernel and j["id"] == job.id]:
        assert time.monotonic() < deadline, "the job never reached the server"
        time.sleep(0.2)
    status, answer = api(server, "POST", f"jobs/{kernel}/{job.id}/cancel")
    assert status == 200 and answer["result"]["requested"] == {"action": "cancel", "job": job.id}
    job.wait(20)
    assert job.state == "cancelled"
    deadline = time.monotonic() + 20
    while [j["state"] for j in api(server, "GET", "jobs")[1]["result"] if j["id"] == job.id] != ["cancelled"]:
        assert time.monotonic() < deadline, "the panel never saw the job cancelled"
        time.sleep(0.2)


def test_a_dead_kernels_state_is_not_listed(server):
    from pathlib import Path

    from nbscale.config import settings
    from nbscale.files import write_json

    ghost = Path(settings().data_dir) / "kernels" / "999999"  # a kernel SIGKILLed: its files stay, its heartbeat stops
    write_json(ghost / "jobs.json", [{"id": 1, "title": "ghost", "state": "running"}])
    (ghost / "heartbeat").touch()
    os.utime(ghost / "heartbeat", (time.time() - 60, time.time() - 60))
    assert [j for j in api(server, "GET", "jobs")[1]["result"] if j["kernel"] == 999999] == []
    assert api(server, "POST", "jobs/999999/1/cancel")[0] == 404


def test_a_spark_connect_kernels_work_is_listed_and_a_cancel_reaches_it(server, server_home):
    """A kernel on a Spark Connect master publishes under ~/.nbscale/connect (its data dir is the cluster's): listed too."""
    from nbscale.files import write_json

    folder = server_home / ".nbscale" / "connect" / "kernels" / "424242"
    write_json(folder / "jobs.json", [{"id": 3, "title": "%%train --workers 2 over Connect", "state": "running"}])
    (folder / "heartbeat").touch()
    assert [j["title"] for j in api(server, "GET", "jobs")[1]["result"] if j["kernel"] == 424242] == ["%%train --workers 2 over Connect"]
    status, answer = api(server, "POST", "jobs/424242/3/cancel")
    assert status == 200 and answer["result"]["requested"] == {"action": "cancel", "job": 3}
    (request,) = (folder / "requests").glob("*.json")  # what the kernel's publisher carries out
    assert json.loads(request.read_text()) == {"action": "cancel", "job": 3}
    os.utime(folder / "heartbeat", (time.time() - 60, time.time() - 60))  # that kernel ended
    assert api(server, "POST", "jobs/424242/3/cancel")[0] == 404


@pytest.mark.parametrize("method, route, code, message", [
    ("GET", "datasets/nothing", 404, "No dataset named 'nothing'."),
    ("GET", "datasets/..%2F..%2Fetc", 400, "is not a name"),
    ("GET", "runs?limit=0", 400, "ask for 1 to 200 runs"),
    ("POST", "jobs/{pid}/999/cancel", 404, "has no job 999"),  # {pid}: this process, filled in by the test (ids stay the same per run)
    ("POST", "jobs/..%2F..%2Ftmp/1/cancel", 400, "is not a process id"),
    ("POST", "servers/1/not-served/stop", 404, "serves no model 'not-served'"),
    ("GET", "logs?path=..%2F..%2Fetc%2Fpasswd", 400, "'..' is not allowed"),
    ("GET", "logs?path=%2Fetc%2Fpasswd", 400, "give a path relative to the data dir"),
    ("GET", "logs?path=no%2Fsuch.log", 404, "No log"),
    pytest.param("GET", "logs?path=" + "a" * 300, 400, "the path is too long", id="over-long-path"),
    pytest.param("GET", "datasets/" + "a" * 300, 400, "is not a name", id="over-long-name"),
    ("GET", "datasets/caf%C3%A9", 400, "is not a name"),
    pytest.param("POST", "jobs/" + "9" * 300 + "/1/cancel", 400, "is not a process id", id="over-long-kernel-id"),
    ("POST", "jobs/%D9%A1/1/cancel", 400, "is not a process id"),  # '١' (Arabic-Indic one) is not job 1
    ("POST", "jobs/{pid}/%D9%A1/cancel", 400, "is not a job number"),
])
def test_bad_input_is_one_line_and_never_leaves_the_data_dir(server, method, route, code, message):
    status, body = api(server, method, route.replace("{pid}", str(os.getpid())))
    assert status == code and message in body["message"], (status, body)


def test_a_log_is_read_inside_the_data_dir_and_a_link_out_of_it_is_refused(server):
    from pathlib import Path

    from nbscale.config import settings

    data = Path(settings().data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "logs" / "worker.log").write_text("epoch 1 done\n")
    status, body = api(server, "GET", "logs?path=logs%2Fworker.log")
    assert status == 200 and body["result"]["text"] == "epoch 1 done\n"
    page = urllib.request.Request(f"{server}/nbscale/api/logs?format=text&path=logs%2Fworker.log", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(page, timeout=10) as answer:  # the panel's log link
        assert answer.headers["Content-Type"].startswith("text/plain") and answer.read() == b"epoch 1 done\n"
    assert api(server, "GET", "logs?format=text&path=..%2Fx")[0] == 400
    secret = data.parent / f"{data.name}-sibling" / "secret.log"  # a sibling whose name starts like the data dir
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("not yours")
    (data / "logs" / "escape.log").symlink_to(secret)
    status, body = api(server, "GET", "logs?path=logs%2Fescape.log")
    assert status == 400 and "leads outside the data dir" in body["message"]



def test_listings_never_follow_a_symlink_out_of_the_data_dir_and_skip_a_damaged_manifest(server, tmp_path):
    from pathlib import Path

    from nbscale.config import settings
    from nbscale.ingest import ingest

    data = Path(settings().data_dir)
    source = tmp_path / "pairs.csv"
    source.write_text("a,b\n1,2\n3,4\n")
    ingest("pairs_ok", str(source))
    ingest("pairs_ok", str(source))
    # A dataset folder and a kernel folder that are symlinks to places outside the data dir.
    outside = tmp_path / "elsewhere"
    (outside / "v1").mkdir(parents=True)
    (outside / "v1" / "manifest.json").write_text('{"counts": {"loaded": 1, "quarantined": 0}, "schema": []}')
    (data / "datasets" / "leaked").symlink_to(outside, target_is_directory=True)
    (data / "kernels").mkdir(exist_ok=True)
    (data / "kernels" / "4242").symlink_to(outside, target_is_directory=True)
    # One damaged version beside a good one.
    (data / "datasets" / "pairs_ok" / "v2" / "manifest.json").write_text('{"counts": {"lo')
    status, body = api(server, "GET", "datasets")
    assert status == 200
    listed = {row["dataset"]: row for row in body["result"]}
    assert not any(name.startswith("leaked") for name in listed)
    assert listed["pairs_ok@v1"]["rows"] == 2 and "damaged" in listed["pairs_ok@v2"]["broken"]
    status, body = api(server, "GET", "jobs")
    assert status == 200 and not any(job["kernel"] == 4242 for job in body["result"])
    status, body = api(server, "GET", "datasets/pairs_ok")
    assert status == 200 and "damaged" in body["result"]["versions"][1]["broken"]
    # The next ingest still works: compared with the last readable version, and says so.
    third = ingest("pairs_ok", str(source))
    assert third.dataset.ref == "pairs_ok@v3" and any("pairs_ok@v2 cannot be read" in n for n in third.manifest["notes"])
