"""Serving throughput of the same model URI both ways, measured side by side in one run:

  nbscale %serve (its front + 1 or 2 replicas of MLflow's scoring app) predictions/s
    ÷ plain `mlflow models serve -m models:/NAME/1 --workers 1` (and `--workers 2`),
  at batch 1 and batch 64, 4 concurrent clients with keep-alive connections, the same request body
  (raw columns by name, `dataframe_split`) to both; 3 runs each, min / median / max;
  and nbscale recording every request for %drift ÷ the same service recording none (traffic_sample 0);
  and the front's own cost: its requests/s before a stand-in replica that answers at once, ÷ that
  stand-in's own rate, with the milliseconds the hop adds to each request (1 client).

    .venv/bin/python benchmarks/serve.py [REQUESTS_PER_CLIENT] [RUNS]
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from measure import scratch_data_dir, spread  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
CLIENTS = 4


def rate(port: int, body: bytes, rows: int, requests_per_client: int, clients: int = CLIENTS) -> float:
    """Predictions/s over `clients` threads, each with its own keep-alive connection, posting `body` (`rows` rows)."""
    failures = []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(requests_per_client):
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(answer.status)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[:5]}")
    return clients * requests_per_client * rows / elapsed


def wait_for(port: int, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the plain MLflow server on port {port} did not start (see plain-mlflow-serve-*.log in the data dir)")


def plain_server(uri: str, workers: int, tracking_uri: str):
    """`mlflow models serve` of `uri` with `workers` uvicorn workers, on a free loopback port."""
    from nbscale.processes import free_port

    port = free_port()
    # `mlflow models serve` runs `uvicorn` from PATH: the one beside this Python.
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    log = open(os.path.join(os.environ["NBSCALE_DATA_DIR"], f"plain-mlflow-serve-{workers}.log"), "wb")
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "--workers", str(workers),
                                "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(port, process)
    return port, process


def instant_replica(port: int) -> None:
    """A stand-in replica that answers every request at once: what is left is the front's own cost."""
    from aiohttp import web

    async def invocations(request):
        await request.read()
        return web.Response(body=b'{"predictions": [{"prediction": 1}]}', content_type="application/json")

    async def ping(request):
        return web.Response(text="\n")

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ping)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def front_cost(body: bytes, requests_per_client: int, runs: int) -> dict:
    """{clients: ([front ÷ stand-in per run], ms added per request)} with nbscale's front before an instant replica."""
    import nbscale.serving.front
    from nbscale.processes import free_port

    replica_port, front_port = free_port(), free_port()
    folder = tempfile.mkdtemp(prefix="nbscale-bench-front-")
    config = os.path.join(folder, "front.json")
    with open(config, "w") as f:
        json.dump({"name": "stand-in", "secret": "s", "sides": [{"label": "stand-in v1", "weight": 100,
                                                                   "replicas": [f"http://127.0.0.1:{replica_port}"]}]}, f)
    replica = subprocess.Popen([sys.executable, __file__, "--instant-replica", str(replica_port)])
    lib = os.path.dirname(os.path.dirname(os.path.dirname(nbscale.serving.front.__file__)))
    front = subprocess.Popen([sys.executable, "-m", "nbscale.serving.front", "127.0.0.1", str(front_port), config],
                             env=dict(os.environ, PYTHONPATH=lib))
    try:
        wait_for(replica_port, replica)
        wait_for(front_port, front)
        out = {}
        for clients in (1, 4):
            rate(replica_port, body, 1, 50, clients), rate(front_port, body, 1, 50, clients)
            direct = [rate(replica_port, body, 1, requests_per_client * 8, clients) for _ in range(runs)]
            fronted = [rate(front_port, body, 1, requests_per_client * 8, clients) for _ in range(runs)]
            added_ms = (clients / statistics.median(fronted) - clients / statistics.median(direct)) * 1000
            out[clients] = ([a / b for a, b in zip(fronted, direct)], added_ms, statistics.median(fronted))
        return out
    finally:
        for process in (front, replica):
            process.terminate()
            process.wait()


def main() -> None:
    requests_per_client = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    import nbscale
    from nbscale import serving
    from nbscale.ingest import dataset, ingest
    from nbscale.registry import register
    from nbscale.train import train

    ingest("digits", "nbscale:digits", label="label")
    result = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="bench-serve")
    register("bench-digits", run_id=result.run_id, alias="champion")
    raw = dataset("digits").to_pandas(64).drop(columns=["label"])
    nbscale.session.stop_spark()
    uri = "models:/bench-digits/1"
    bodies = {batch: json.dumps({"dataframe_split": {"columns": list(raw.columns), "data": raw[:batch].to_numpy().tolist()}}).encode()
              for batch in (1, 64)}

    def measure(port: int) -> dict:
        """{batch: [predictions/s per run]} for the server on `port`, warmed first."""
        out = {}
        for batch, body in bodies.items():
            rate(port, body, batch, 5)
            count = requests_per_client if batch == 1 else max(requests_per_client // 2, 5)
            out[batch] = [rate(port, body, batch, count) for _ in range(runs)]
        return out

    figures = {}
    for workers in (1, 2):
        port, process = plain_server(uri, workers, nbscale.settings().tracking_uri)
        try:
            figures[f"plain {workers}"] = measure(port)
        finally:
            os.killpg(process.pid, 15)
            process.wait()
    try:
        for replicas in (1, 2):
            figures[f"nbscale {replicas}"] = measure(serving.serve(f"{uri.split('/')[1]}@champion", replicas=replicas).port)
            serving.stop()
        nbscale.settings().traffic_sample = 0.0
        figures["unrecorded 1"] = measure(serving.serve("bench-digits@champion").port)
    finally:
        if serving.services():
            serving.stop()

    hop = front_cost(bodies[1], requests_per_client, runs)
    print(f"model: Dense 64-64-10 on the digits, served as {uri}; {CLIENTS} clients, keep-alive; cores: {os.cpu_count()}; "
          f"{runs} runs each")
    for key, by_batch in figures.items():
        print(f"{key:>13}: " + " | ".join(f"batch {b:>2} {statistics.median(v):8,.0f} predictions/s" for b, v in by_batch.items()))
    print("ratio (min / median / max)                                       batch 1               batch 64")
    for ours, theirs, what in (("nbscale 1", "plain 1", "nbscale 1 replica / mlflow models serve --workers 1 (goal >= 0.9)"),
                               ("nbscale 2", "plain 2", "nbscale 2 replicas / mlflow models serve --workers 2"),
                               ("nbscale 2", "nbscale 1", "nbscale 2 replicas / nbscale 1 replica (scaling)"),
                               ("nbscale 1", "unrecorded 1", "recording every request for %drift / recording none")):
        cells = [spread([a / b for a, b in zip(figures[ours][batch], figures[theirs][batch])]) for batch in (1, 64)]
        print(f"{what:<66} {cells[0]}   {cells[1]}")
    for clients, (ratios, added_ms, front_rate) in hop.items():
        what = f"front / an instant stand-in replica, batch 1, {clients} client{'s' if clients > 1 else ''}"
        print(f"{what:<66} {spread(ratios)}   (the front's ceiling {front_rate:,.0f} requests/s; it adds {added_ms:.2f} ms a request)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--instant-replica"]:
        instant_replica(int(sys.argv[2]))
    else:
        with scratch_data_dir("serve"):
            main()
