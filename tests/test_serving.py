"""%serve / %predict with real MLflow scoring servers (one process per replica) behind nbscale's front,
on 127.0.0.1, for models trained and registered here on the real digits."""
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import module_data_dir

import nbscale
from nbscale import serving
from nbscale.errors import NbscaleError
from nbscale.ingest import dataset, ingest
from nbscale.registry import register
from nbscale.serving.launch import wait_healthy
from nbscale.train import train

pytestmark = pytest.mark.slow

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


def serving_processes() -> list[int]:
    """Live serving processes of this test run's worker: those whose environment carries this process's data dir
    (set per process by conftest.py, or this module's, given to the kernels it starts), so the notebooks served by
    the other xdist worker are not counted."""
    from nbscale.config import settings

    ours = {f"NBSCALE_DATA_DIR={d}".encode() for d in (os.environ["NBSCALE_DATA_DIR"], settings().data_dir)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"nbscale.serving." in cmdline and int(pid) != os.getpid() and ours & set(environ) and state != "Z":
            found.append(int(pid))
    return found


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    with module_data_dir(tmp_path_factory, "serve-data"):
        try:
            ingest("digits", "nbscale:digits", label="label")
            first = train(DENSE, data="digits", epochs=3, batch_size=64, scale=16.0, experiment="serve")
            second = train(DENSE, data="digits", epochs=1, batch_size=64, scale=16.0, seed=7, experiment="serve")
            register("digits-dense", run_id=first.run_id, alias="champion", evaluate=False)
            register("digits-dense", run_id=second.run_id, alias="challenger", evaluate=False)
            raw = dataset("digits").to_pandas(50).drop(columns=["label"])  # rows as a client has them: raw pixels 0..16, by name
            yield {"x": raw.to_numpy(), "raw": raw, "scaled": raw.to_numpy(np.float32) / 16, "champion": first.model,
                   "run_ids": [first.run_id, second.run_id]}
        finally:
            serving.stop() if serving.services() else None
            nbscale.session.stop_spark()
    assert serving_processes() == []  # nothing served outlives the tests


def dataset_names() -> set[str]:
    from nbscale.ingest import store

    return set(store.names())


def rows_body(models, n: int) -> bytes:
    """A REST request of `n` raw rows, columns named (the model's input contract)."""
    frame = models["raw"][:n]
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}).encode()


def post(url: str, body: bytes):
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_one_replica_serves_what_the_model_predicts(models):
    loading = []
    service = serving.serve("digits-dense@champion", on_progress=loading.append)
    assert loading[0].startswith("digits-dense v1: 0 of 1 replicas ready, replica 1 is loading the model"), loading
    assert loading[-1].startswith("digits-dense v1: 1 of 1 replicas ready"), loading
    try:
        answer = serving.predict("digits-dense", models["x"][:8])
        expected = models["champion"].predict(models["scaled"][:8], verbose=0)
        assert np.allclose(np.asarray(answer), expected, atol=1e-5)
        assert answer.served_by == "digits-dense v1" and "from digits-dense v1" in repr(answer)
        card = service._repr_html_()
        assert f"{service.url}/invocations" in card and "digits-dense v1" in card and "curl -s" in card
        assert service.stats()["sides"][0]["requests"] == 1
    finally:
        serving.stop("digits-dense")
    assert all(r.process.poll() is not None for r in service.sides[0].replicas) and service.front.poll() is not None


def test_a_service_started_by_a_thread_outlives_the_thread(models):
    started = {}  # a workflow step or a background job serves from a thread that then ends
    thread = threading.Thread(target=lambda: started.update(service=serving.serve("digits-dense@champion")))
    thread.start()
    thread.join()
    try:
        time.sleep(1)  # a parent-death signal would have arrived by now
        service = started["service"]
        assert service.front.poll() is None and all(r.process.poll() is None for r in service.sides[0].replicas)
        assert np.asarray(serving.predict("digits-dense", models["x"][:2])).shape == (2, 10)
    finally:
        serving.stop("digits-dense")


def test_bad_requests_get_one_line_and_the_server_stays_up(models):
    service = serving.serve("digits-dense@champion")
    try:
        status, body = post(service.url, b"{not json")
        assert status == 400 and body.get("message")
        with pytest.raises(NbscaleError, match=r"^The rows have 60 values where this model takes 64 columns \(pixel_0, ") as raised:
            serving.predict("digits-dense", models["x"][:4, :60])  # 60 features where the model takes 64
        assert "\n" not in str(raised.value)
        with pytest.raises(NbscaleError, match=r"^The rows have no column pixel_63: this model takes pixel_0, ") as raised:
            serving.predict("digits-dense", models["raw"][:4].drop(columns=["pixel_63"]))
        status, body = post(service.url, json.dumps({"dataframe_split": {"columns": list(models["raw"].columns[:63]),
                                                                          "data": models["x"][:2, :63].tolist()}}).encode())
        assert status == 400 and "missing inputs ['pixel_63']" in body["message"]
        with urllib.request.urlopen(f"{service.url}/ping", timeout=5) as ping:
            assert ping.status == 200
        assert np.asarray(serving.predict("digits-dense", models["x"][:2])).shape == (2, 10)
    finally:
        serving.stop("digits-dense")


@pytest.mark.parametrize("ref, message", [
    ("nothing@champion", "There is no registered model 'nothing'"),
    ("digits-dense@staging", "digits-dense has no alias @staging (aliases: @challenger, @champion)"),
    ("digits-dense/9", "digits-dense has no version 9 (versions: 1, 2)"),
])
def test_unknown_models_and_aliases_are_one_line(ref, message):
    with pytest.raises(NbscaleError) as raised:
        serving.serve(ref)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert serving_processes() == []


def test_a_port_in_use_is_refused_before_anything_starts():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NbscaleError, match=rf"^Port {port} on 127.0.0.1 is in use: pick another with --port"):
            serving.serve("digits-dense@champion", port=port)
    assert serving_processes() == []


def test_two_replicas_keep_answering_when_one_is_killed(models):
    service = serving.serve("digits-dense@champion", replicas=2)
    try:
        for _ in range(10):
            serving.predict("digits-dense", models["x"][:1])
        os.kill(service.sides[0].replicas[0].process.pid, signal.SIGKILL)
        statuses = [post(service.url, rows_body(models, 1))[0] for _ in range(30)]
        assert statuses == [200] * 30
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and service.stats()["sides"][0]["replicas"][0]["healthy"]:
            time.sleep(0.2)
        assert [r["healthy"] for r in service.stats()["sides"][0]["replicas"]] == [False, True]
        assert "data-healthy='false'" in service._repr_html_() and "🔴" not in service._repr_html_()
        for replica in service.sides[0].replicas:  # now every replica is dead, and stays dead (the watchdog restarts no more)
            replica.restarts = serving.RESTARTS
            if replica.process.poll() is None:  # replica 0 may be back already, restarted by the watchdog
                os.kill(replica.process.pid, signal.SIGKILL)
                replica.process.wait(10)
        status, body = post(service.url, rows_body(models, 1))
        assert status == 503 and body["message"].startswith("No healthy replica of digits-dense is left")
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{service.url}/ping", timeout=5)
    finally:
        serving.stop("digits-dense")


def test_a_canary_takes_its_share_of_400_requests(models):
    service = serving.serve("digits-dense@challenger", canary="digits-dense@champion", weight=10)
    try:
        served_by = [post(service.url, rows_body(models, 1))[0] for _ in range(400)]
        assert served_by == [200] * 400
        sides = {s["label"]: s["requests"] for s in service.stats()["sides"]}
        assert abs(sides["digits-dense v2"] / 400 * 100 - 10) <= 5 and sum(sides.values()) == 400
        assert [s.weight for s in service.sides] == [90, 10]
    finally:
        serving.stop("digits-dense")


def test_a_bounded_load_is_answered_200_or_503_and_ping_stays_healthy(models):
    service = serving.serve("digits-dense@champion", replicas=2)
    statuses: list[int] = []
    body = rows_body(models, 16)

    def client():
        for _ in range(50):
            statuses.append(post(service.url, body)[0])

    try:
        threads = [threading.Thread(target=client) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert time.monotonic() - started < 120 and len(statuses) == 200
        assert set(statuses) <= {200, 503} and statuses.count(200) > 0
        with urllib.request.urlopen(f"{service.url}/ping", timeout=5) as ping:
            assert ping.status == 200
    finally:
        serving.stop("digits-dense")


def test_serve_and_predict_magics(ip, models):
    ip.user_ns["rows"] = models["x"]
    try:
        service = ip.run_line_magic("serve", "digits-dense@champion")
        # The same %serve again (a re-run cell) keeps the running service: same processes, no restart.
        assert ip.run_line_magic("serve", "digits-dense@champion") is service and service.front.poll() is None
        answer = ip.run_line_magic("predict", "digits-dense@champion rows[:3]")
        assert np.asarray(answer).shape == (3, 10)
        assert ip.run_line_magic("serve", "") == [service]
        # Lineage: the served version leads back to its run and dataset version, and on to this service.
        chain = ip.run_line_magic("lineage", "digits-dense@champion")
        assert [(n.kind, n.label) for n in chain.nodes()] == [
            ("dataset", "digits@v1"), ("run", models["run_ids"][0][:8]), ("model", "digits-dense v1"),
            ("service", f"{service.url}/invocations")]
        assert "@champion" in chain.nodes("model")[0].detail and "1 replica · 100% of digits-dense's traffic" in repr(chain)
        # From the dataset: both runs trained on it, each with the model version registered from it.
        downstream = ip.run_line_magic("lineage", "digits@v1")
        assert {n.label for n in downstream.nodes("run")} == {r[:8] for r in models["run_ids"]}
        assert {n.label for n in downstream.nodes("model")} == {"digits-dense v1", "digits-dense v2"}
        assert "1797 rows · from " in repr(downstream)
    finally:
        ip.run_line_magic("serve", "--stop digits-dense")
    assert serving.services() == []
    with pytest.raises(NbscaleError, match="^digits-dense is not being served: %serve digits-dense@ALIAS first"):
        ip.run_line_magic("predict", "digits-dense rows[:1]")


def test_score_writes_one_prediction_per_row_as_a_new_version(ip, models):
    result = ip.run_line_magic("score", "digits-dense@champion --data digits -o scored")
    scored = ip.user_ns["scored"]
    assert result is None and scored.ref == "digits_scored@v1"
    assert scored.manifest["counts"]["loaded"] == dataset("digits").manifest["counts"]["loaded"]
    frame = scored.to_pandas(None)
    assert {"prediction", "probabilities", "label"} <= set(frame.columns)
    pixels = np.asarray(frame.drop(columns=["label", "prediction", "probabilities"]), dtype=np.float32) / 16
    expected = models["champion"].predict(pixels, verbose=0)
    assert np.allclose(np.stack(frame["probabilities"]), expected, atol=1e-4)
    assert (frame["prediction"].to_numpy() == expected.argmax(axis=1)).all()
    assert (frame["prediction"] == frame["label"]).mean() > 0.8
    threes = ip.run_cell_magic("score", "digits-dense@champion --data digits --to threes", "label = 3\n")
    assert threes.ref == "threes@v1" and threes.manifest["counts"]["loaded"] == int((frame["label"] == 3).sum())
    with pytest.raises(NbscaleError, match=r"^Selecting rows of digits@v1 with 'colour = 3' failed: .*colour.*Write a Spark SQL condition"):
        ip.run_cell_magic("score", "digits-dense@champion --data digits --to nothing", "colour = 3")
    assert dataset_names() == {"digits", "digits_scored", "threes"}  # nothing half-written
    with pytest.raises(NbscaleError, match="^digits-dense has no alias @nope"):
        ip.run_line_magic("score", "digits-dense@nope --data digits")


def test_score_reports_spark_progress_while_it_runs(models):
    from nbscale.serving.score import score

    seen = []
    ones = score("digits-dense@champion", data="digits", to="ones", where="label = 1", progress=seen.append)
    running = [state for state in seen if not state.finished]
    assert running and running[0].tasks_total >= 1 and seen[-1].finished, seen  # live while Spark ran, then closed
    assert ones.manifest["counts"]["loaded"] == dataset("digits").manifest["label_balance"]["1"]


def test_moving_the_alias_moves_serving_and_back_is_a_rollback(models):
    from nbscale.registry import set_alias

    service = serving.serve("digits-dense@champion")
    try:
        first = service.sides[0].replicas[0].process
        card = set_alias("digits-dense", "champion", 2)
        assert "the service of digits-dense now answers @champion with digits-dense v2" in repr(card)
        assert serving.predict("digits-dense", models["x"][:1]).served_by == "digits-dense v2"
        assert first.poll() is not None  # the old version's replica stopped once the new one answered
        set_alias("digits-dense", "champion", 1)  # rollback
        answer = serving.predict("digits-dense", models["x"][:4])
        assert answer.served_by == "digits-dense v1"
        assert np.allclose(np.asarray(answer), models["champion"].predict(models["scaled"][:4], verbose=0), atol=1e-5)
    finally:
        serving.stop("digits-dense")
        set_alias("digits-dense", "champion", 1)


def test_a_stream_scores_every_file_once_across_a_restart(ip, models, tmp_path):
    from nbscale.serving.stream import wait_for_rows

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    frame = dataset("digits").to_pandas(None)
    assert not frame.duplicated().any()

    def drop(k: int) -> None:  # written beside the inbox, then moved in whole
        part = tmp_path / f"events-{k}.json"
        frame.iloc[20 * k:20 * (k + 1)].to_json(part, orient="records", lines=True)
        part.rename(inbox / part.name)

    drop(0), drop(1)  # before the stream starts
    scoring = ip.run_line_magic("serve", f"digits-dense@champion --stream {inbox} --to {out}")
    try:
        assert wait_for_rows(scoring, 40) == 40
        drop(2)  # while it runs
        assert wait_for_rows(scoring, 60) == 60
        ip.run_line_magic("serve", "--stop digits-dense")
        drop(3), drop(4)  # while it is stopped
        scoring = ip.run_line_magic("serve", f"digits-dense@champion --stream {inbox} --to {out}")
        assert wait_for_rows(scoring, 100) == 100
        drop(5)  # after the restart
        assert wait_for_rows(scoring, 120) == 120
        assert "rows out (total) 120" in scoring._repr_html_()
    finally:
        ip.run_line_magic("serve", "--stop digits-dense")
    result = nbscale.spark().read.parquet(str(out)).toPandas()
    assert len(result) == 120 and result["source_file"].value_counts().tolist() == [20] * 6  # each file exactly once
    pixels = np.stack(result.drop(columns=["label", "prediction", "probabilities", "source_file"]).to_numpy(np.float32)) / 16
    assert np.allclose(np.stack(result["probabilities"]), models["champion"].predict(pixels, verbose=0), atol=1e-4)
    with pytest.raises(NbscaleError, match="^--stream and --to must be separate folders"):
        serving.stream.stream("digits-dense@champion", str(inbox), str(inbox / "out"))


def test_a_sharded_service_sends_each_key_to_the_same_shard(models):
    from nbscale.serving.front import shard_of

    service = serving.serve("digits-dense@champion", replicas=2, shard_by="customer")
    columns = ["customer"] + list(models["raw"].columns)
    try:
        seen: dict[str, set[str]] = {}
        for _ in range(3):
            for k in range(8):
                row = [f"c{k}"] + models["x"][k].tolist()
                request = urllib.request.Request(f"{service.url}/invocations", method="POST", headers={"content-type": "application/json"},
                                                 data=json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode())
                with urllib.request.urlopen(request, timeout=30) as answer:
                    seen.setdefault(f"c{k}", set()).add(answer.headers["x-nbscale-shards"])
                    answered = json.load(answer)["predictions"][0]["probabilities"]
                    assert np.allclose(answered, models["champion"].predict(models["scaled"][k:k + 1], verbose=0)[0], atol=1e-5)
        assert all(len(shards) == 1 for shards in seen.values())  # a key never moves
        assert {next(iter(s)) for s in seen.values()} == {"0", "1"} and seen["c3"] == {str(shard_of("c3", 2))}
        # A request with many keys is split between the shards and answered in its own row order.
        rows = [[f"c{k}"] + models["x"][k].tolist() for k in range(8)]
        status, body = post(service.url, json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode())
        assert status == 200 and np.allclose([p["probabilities"] for p in body["predictions"]],
                                             models["champion"].predict(models["scaled"][:8], verbose=0), atol=1e-5)
        status, body = post(service.url, rows_body(models, 1))
        assert status == 400 and body["message"] == "The request has no column 'customer', which this service is sharded by."
        status, body = post(service.url, json.dumps({"inputs": models["x"][:1].tolist()}).encode())
        assert status == 400 and "routes by the column 'customer'" in body["message"]
        assert "sharded by customer" in service._repr_html_()
    finally:
        serving.stop("digits-dense")


def test_the_card_sends_rows_of_the_training_data_and_counts_them(models):
    from nbscale.widgets.servecard import ServeCard

    service = serving.serve("digits-dense@champion")
    try:
        card = ServeCard(service)
        card.rows.value = 5
        card.send_button.click()
        assert "5 classes (argmax) from digits-dense v1" in card.result.value
        expected = models["champion"].predict(models["scaled"][:5], verbose=0).argmax(axis=1).tolist()
        assert str(expected) in card.result.value  # the first 5 training rows, scaled as in training
        assert "<td>1</td>" in card.body.value  # the front counted the request
    finally:
        serving.stop("digits-dense")
    card.send_button.click()
    assert "is not being served" in card.result.value


@pytest.mark.parametrize("ending", ["shutdown", "killed"])
def test_servers_end_with_the_kernel(ending):
    from kernel_client import Kernel

    from nbscale.config import settings

    kernel = Kernel("nbscale-local", env=dict(os.environ, NBSCALE_DATA_DIR=settings().data_dir))
    try:
        done = kernel.run("%load_ext nbscale\nservice = %serve digits-dense@champion --replicas 2\n"
                          "print(sorted([service.front.pid] + [r.process.pid for r in service.sides[0].replicas]))")
        assert done.status == "ok", done.text()
        pids = json.loads(done.text().strip().splitlines()[-1])
        assert sorted(serving_processes()) == pids
    finally:
        if ending == "killed":  # SIGKILL: no atexit; the servers die with it (PR_SET_PDEATHSIG)
            os.kill(kernel.manager.provisioner.process.pid, signal.SIGKILL)
            kernel.client.stop_channels()
            kernel.manager.shutdown_kernel(now=True)
        else:
            kernel.close()  # a clean shutdown stops them
    deadline = time.monotonic() + 20
    while serving_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serving_processes() == []


REGRESSION = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
"""


def test_a_regression_model_predicts_values_everywhere_not_class_0(models):
    """The task (classes or values) is recorded from the loss and used by %score, %predict and streams."""
    fit = train(REGRESSION, data="digits", epochs=4, batch_size=64, scale=16.0, experiment="serve-regression")
    register("digits-value", run_id=fit.run_id, alias="champion", evaluate=False)
    from nbscale.serving.score import score

    scored = score("digits-value@champion", data="digits", to="digits_values")
    frame = scored.to_pandas(None)
    assert "probabilities" not in frame.columns and str(frame["prediction"].dtype) == "float64"
    assert frame["prediction"].nunique() > 100  # values, not an argmax over one output (always 0)
    assert np.corrcoef(frame["prediction"], frame["label"])[0, 1] > 0.5
    serving.serve("digits-value@champion")
    try:
        answer = serving.predict("digits-value", models["x"][:5])
        assert answer.task == "regression" and "5 values (regression) from digits-value v1" in repr(answer)
        assert len(set(repr(answer).split(": ", 1)[1].strip("[]").split(", "))) > 1
    finally:
        serving.stop("digits-value")


def test_every_control_route_of_the_front_needs_the_services_secret(models):
    """Any local process could otherwise re-route a model's traffic (POST /nbscale/config) or read its counters."""
    from nbscale.serving.front import Front, make_app, routes

    public = {"/invocations", "/ping", "/health"}  # the service itself, on 127.0.0.1
    control = routes(make_app(Front({"name": "x", "sides": []}))) - public
    assert control == {"/nbscale/stats", "/nbscale/config"}  # a new route must be classified here
    service = serving.serve("digits-dense@champion")
    try:
        assert oct((service.folder / "front.json").stat().st_mode & 0o777) == "0o600"
        for path in sorted(control):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": service.secret}):
                body = b'{"name": "x", "sides": []}' if path == "/nbscale/config" else None
                request = urllib.request.Request(f"{service.url}{path}", data=body, method="POST" if body else "GET",
                                                 headers={**headers, "content-type": "text/plain"})
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=5)
                assert refused.value.code == 401, (path, headers)
        # With the secret, a non-JSON body is still refused (a web page's "simple" POST), and nothing changed.
        request = urllib.request.Request(f"{service.url}/nbscale/config", data=b'{"name": "x", "sides": []}', method="POST",
                                         headers={"authorization": f"Bearer {service.secret}", "content-type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 415
        assert service.stats()["sides"] and np.asarray(serving.predict("digits-dense", models["x"][:2])).shape == (2, 10)
        # Bodies over the limit are refused before they are read whole.
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        connection.putrequest("POST", "/invocations")
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(65 << 20))  # declared, never sent: refused before any byte is read
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413 and "Nbscale.max_request_mb" in json.loads(answer.read())["message"]
        connection.close()
    finally:
        serving.stop("digits-dense")


def test_a_killed_replica_is_started_again_and_the_service_says_how_many_run(models):
    service = serving.serve("digits-dense@champion", replicas=2)
    try:
        first = service.sides[0].replicas[0]
        killed = first.process.pid
        os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
        assert "1 of 2 replicas running" in repr(service) or first.process.pid != killed  # the real count, not the wanted one
        deadline = time.monotonic() + 10
        while first.process.pid == killed and time.monotonic() < deadline:  # the watchdog looks every second
            time.sleep(0.1)
        assert first.process.pid != killed and first.process.poll() is None  # a new process, on the same port
        deadline = time.monotonic() + 120  # it loads TensorFlow and the model before it answers /ping
        while time.monotonic() < deadline and not all(r["healthy"] for r in service.stats()["sides"][0]["replicas"]):
            time.sleep(0.5)
        assert [r["healthy"] for r in service.stats()["sides"][0]["replicas"]] == [True, True]
        assert "2 of 2 replicas running, 1 restart" in repr(service)
        statuses = [post(service.url, rows_body(models, 1))[0] for _ in range(20)]
        assert statuses == [200] * 20
    finally:
        serving.stop("digits-dense")
    assert serving_processes() == []  # the restarted replica stopped with the service


def test_binder_replicas_run_a_checked_litert_export_and_never_load_tensorflow(models, settings):
    """The Binder profile logs a LiteRT export beside the Keras model, kept because it answered as TensorFlow on the
    check's rows, and its replicas run it, also when the watchdog restarts one: the same predictions as the Keras model,
    from processes that never mapped TensorFlow's library (~0.2 GiB instead of ~0.4: benchmarks/suite.py --profile binder)."""
    from nbscale.session import mlflow

    settings.profile = "binder"
    trained = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, seed=3, experiment="serve")
    register("digits-lite", run_id=trained.run_id, alias="champion", evaluate=False)
    logged = mlflow().models.get_model_info(trained.model_uri).flavors["python_function"]
    assert "litert_model" in logged["artifacts"] and logged["config"]["litert_check"]["max_abs_difference"] <= 1e-5, logged
    service = serving.serve("digits-lite@champion")
    try:
        answer = np.asarray(serving.predict("digits-lite", models["x"][:8]))
        expected = trained.model.predict(models["scaled"][:8], verbose=0)
        assert np.allclose(answer, expected, atol=1e-5) and (answer.argmax(axis=1) == expected.argmax(axis=1)).all()
        replica = service.sides[0].replicas[0]
        maps = Path(f"/proc/{replica.process.pid}/maps").read_text()
        assert "litert" in maps and "tensorflow" not in maps
        killed = replica.process.pid  # the watchdog's restart runs the same runtime
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and replica.process.pid == killed:
            time.sleep(0.5)
        # The front's health mark may still be the killed one's: ask the new replica itself, as %serve does.
        wait_healthy(f"http://127.0.0.1:{replica.port}", replica.process, replica.log, "the restarted replica", timeout_s=60)
        maps = Path(f"/proc/{replica.process.pid}/maps").read_text()
        assert replica.process.pid != killed and "litert" in maps and "tensorflow" not in maps
    finally:
        serving.stop("digits-lite")


def test_a_model_litert_cannot_take_keeps_tensorflow_and_says_why(tmp_path, capsys):
    """No export that was not converted and checked: the replicas then run TensorFlow, and the cell says why."""
    from nbscale.train import litert

    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a Keras model")
    assert litert.export(broken, tmp_path / "model.tflite") is None
    assert not (tmp_path / "model.tflite").exists()
    said = capsys.readouterr().out.strip()
    assert said.startswith("No LiteRT export of this model (") and said.endswith("): its replicas run TensorFlow.") and "\n" not in said, said
