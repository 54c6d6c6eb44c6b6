"""Serving throughput, measured in one run on the same trained model:

  nbscale %serve (front + 1 replica, the model logged as nbscale's compiled pyfunc) predictions/s
    ÷ plain `mlflow models serve` of the same Keras model logged with MLflow's Keras flavour,
  at batch 1 and batch 64, 4 concurrent clients with keep-alive connections; and
  served ÷ the in-process direct call `model(x)` (one client, no HTTP); and
  nbscale recording every request for %drift ÷ the same service recording none (Nbscale.traffic_sample 0).

    .venv/bin/python benchmarks/serve.py [REQUESTS_PER_CLIENT]
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
CLIENTS = 4


def rate(port: int, body: bytes, rows: int, requests_per_client: int) -> float:
    """Predictions/s over CLIENTS threads, each with its own keep-alive connection, posting `body` (`rows` rows)."""
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

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[:5]}")
    return CLIENTS * requests_per_client * rows / elapsed


def wait_for(port: int, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the plain MLflow server on port {port} did not start (see plain-mlflow-serve.log in the data dir)")


def main() -> None:
    requests_per_client = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    os.environ.setdefault("NBSCALE_DATA_DIR", tempfile.mkdtemp(prefix="nbscale-bench-serve-"))
    import mlflow
    import mlflow.tensorflow
    import numpy as np

    import nbscale
    from nbscale import serving
    from nbscale.ingest import dataset, ingest
    from nbscale.processes import free_port
    from nbscale.registry import register
    from nbscale.train import train

    ingest("digits", "nbscale:digits", label="label")
    result = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="bench-serve")
    register("bench-digits", run_id=result.run_id, alias="champion")
    raw = dataset("digits").to_pandas(64).drop(columns=["label"])  # nbscale's model takes these, by name, and scales them itself
    rows = raw.to_numpy(np.float32) / 16  # MLflow's Keras flavour takes the network's input
    nbscale.session.stop_spark()
    # The same trained model, logged the way MLflow logs a Keras model by default.
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("bench-serve").experiment_id):
        plain_uri = mlflow.tensorflow.log_model(result.model, name="plain", input_example=rows[:2]).model_uri

    port = free_port()
    # `mlflow models serve` runs `uvicorn` from PATH: the one beside this Python.
    env = dict(os.environ, MLFLOW_TRACKING_URI=nbscale.settings().tracking_uri,
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    log = open(os.path.join(os.environ["NBSCALE_DATA_DIR"], "plain-mlflow-serve.log"), "wb")
    plain = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", plain_uri, "--env-manager", "local",
                              "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(port, plain)
        figures = {1: {}, 64: {}}
        # The same service twice: recording every request for %drift (the default), then recording none.
        for sample, key in ((1.0, "nbscale"), (0.0, "unrecorded")):
            nbscale.settings().traffic_sample = sample
            front_port = serving.serve("bench-digits@champion").port
            for batch in (1, 64):
                plain_body = json.dumps({"inputs": rows[:batch].tolist()}).encode()
                ours = json.dumps({"dataframe_split": {"columns": list(raw.columns), "data": raw[:batch].to_numpy().tolist()}}).encode()
                rate(port, plain_body, batch, 5), rate(front_port, ours, batch, 5)  # warm both
                count = requests_per_client if batch == 1 else max(requests_per_client // 2, 5)
                if key == "nbscale":
                    figures[batch]["plain"] = rate(port, plain_body, batch, count)
                figures[batch][key] = rate(front_port, ours, batch, count)
            serving.stop()
    finally:
        if plain.poll() is None:
            os.killpg(plain.pid, 15)
            plain.wait()
        if serving.services():
            serving.stop()

    model = result.model
    direct = {}
    for batch in (1, 64):
        x = rows[:batch]
        model(x, training=False)
        calls = 200
        started = time.perf_counter()
        for _ in range(calls):
            model(x, training=False)
        direct[batch] = calls * batch / (time.perf_counter() - started)

    print(f"model: Dense 64-64-10 on the digits; {CLIENTS} clients, keep-alive; cores: {os.cpu_count()}")
    for batch in (1, 64):
        f = figures[batch]
        print(f"batch {batch:>2}: plain mlflow models serve {f['plain']:9,.0f} predictions/s | nbscale %serve {f['nbscale']:9,.0f} | "
              f"in-process model(x) {direct[batch]:9,.0f}")
    for batch in (1, 64):
        f = figures[batch]
        print(f"ratio batch {batch:>2}  nbscale / plain MLflow server  {f['nbscale'] / f['plain']:6.2f}   (goal >= 5 at batch 1)")
        print(f"ratio batch {batch:>2}  nbscale / in-process direct     {f['nbscale'] / direct[batch]:6.2f}   (goal >= 0.5)")
        print(f"ratio batch {batch:>2}  recording traffic / not          {f['nbscale'] / f['unrecorded']:6.2f}   (the cost of %drift's record)")


if __name__ == "__main__":
    main()
