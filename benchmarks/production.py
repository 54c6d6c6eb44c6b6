"""What the production loop costs, measured side by side in one run on the digits (3 runs each, min/median/max):

  %register with its evaluation (the candidate and the champion on the held-out rows) ÷ %register --no-evaluate;
  %drift over 1,000 and 10,000 served rows recorded by a real front (reading the records, the 20,000-row reference
  sample, 64 features, the MLflow run), in seconds.

    .venv/bin/python benchmarks/production.py
"""
import json
import os
import statistics
import time
import urllib.request

from measure import scratch_data_dir, spread  # benchmarks/ is on sys.path when a script runs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


def timed(call, runs: int = 3) -> list[float]:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


def main() -> None:
    from nbscale import serving
    from nbscale.drift import drift
    from nbscale.ingest import dataset, ingest
    from nbscale.registry import register
    from nbscale.train import train

    ingest("digits", "nbscale:digits", label="label")
    champion = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="bench-production")
    candidate = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16.0, experiment="bench-production", seed=7)
    register("bench-prod", run_id=champion.run_id, alias="champion", evaluate=False)
    evaluated = timed(lambda: register("bench-prod", run_id=candidate.run_id, evaluate=True))
    plain = timed(lambda: register("bench-prod", run_id=candidate.run_id, evaluate=False))

    frame = dataset("digits").to_pandas(None).drop(columns=["label"])
    service = serving.serve("bench-prod@champion")
    drifts = {}
    try:
        sent = 0
        for target in (1_000, 10_000):
            while sent < target:
                chunk = frame.sample(100, random_state=sent)
                body = json.dumps({"dataframe_split": {"columns": list(chunk.columns), "data": chunk.to_numpy().tolist()}}).encode()
                request = urllib.request.Request(f"{service.url}/invocations", data=body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as answer:
                    answer.read()
                sent += 100
            time.sleep(2)  # the front flushes its records once a second
            drifts[target] = timed(lambda: drift("bench-prod@champion", window="1h"))
    finally:
        serving.stop()

    print(f"digits, 64 features; cores: {os.cpu_count()}; 3 runs each (seconds)")
    print(f"%register with evaluation     {spread(evaluated)}")
    print(f"%register --no-evaluate       {spread(plain)}")
    print(f"ratio  evaluated / not        {statistics.median(evaluated) / statistics.median(plain):6.2f}")
    for rows, took in drifts.items():
        print(f"%drift over {rows:>6,} served rows {spread(took)}")
    print(f"ratio  %drift 10,000 / 1,000 rows  {statistics.median(drifts[10_000]) / statistics.median(drifts[1_000]):6.2f}")


if __name__ == "__main__":
    with scratch_data_dir("production"):
        main()
